//! Concurrency per key: at most `concurrency_per_key` jobs with the same key run at once
//! across the fleet (issue "flow control"; Hatchet's and Inngest's per-key concurrency).
//!
//! **Where the key comes from.** The intake reads it from the payload at the queue's
//! `concurrency_key` JSON pointer (RFC 6901), or from the request's `X-Concurrency-Key`
//! header, which overrides the pointer; it travels as the message header
//! [`crate::message::H_CONCURRENCY_KEY`]. A message without the header (published before the
//! queue had a key, or resent by the sweeper from the store) gets its key from the payload
//! again in the worker ([`key_of`]).
//!
//! **Who counts.** The store, in the claim itself ([`crate::store::JobStore::claim_keyed`]):
//! the claim and the count of the key's running jobs (a live lease) are one transaction,
//! serialised per key, so two workers on two hosts can never both take the last slot. A
//! worker that dies holds its slot until its lease (the queue's `timeout` plus a margin)
//! ends; then the count no longer sees it.
//!
//! **What a delivery over its key's limit does** ([`WaitingRooms`]): it waits in the worker,
//! in a small bounded waiting room per key, without holding one of the queue's
//! `concurrency` slots, and claims again as soon as a job of that key ends in this process
//! (or, for slots held by other processes, after a short poll). So a hot key keeps its N
//! slots busy back to back. A delivery that finds its key's waiting room full is parked in
//! the broker's delay levels for a short wait that grows with each park and is drawn at
//! random (1–2 s, then 1–4 s; [`park_delay`]), so a hot key's parked deliveries come back
//! as a steady trickle that keeps its waiting room filled rather than in waves: not an
//! attempt (attempts are unchanged), and it holds nothing while it waits, so the deliveries
//! of other keys behind it flow. The waiting rooms of a queue hold at most
//! `prefetch - concurrency` deliveries in all, and one key at most half of that (at least
//! its `concurrency_per_key`). Waiting deliveries hold no `concurrency` slot, so even full
//! rooms leave every slot to the keys that can run, and a second hot key still finds room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest a parked delivery waits in the delay levels before it is delivered again.
pub const MAX_PARK: Duration = Duration::from_secs(4);

/// How often a delivery in a waiting room tries its claim again when fewer than the key's
/// limit of its jobs run in this process (so a slot it waits for is held by another process,
/// whose end this process does not see). While every slot of the key is held here, waiters
/// only wake when one of those jobs ends: no claim is tried that the store would refuse.
pub const POLL: Duration = Duration::from_millis(100);

/// Checks a `concurrency_key` JSON pointer (RFC 6901 §3): empty (the whole document, which is
/// not a scalar of a job's payload) is refused, and so is anything not starting with `/` or
/// holding a `~` not followed by `0` or `1`.
///
/// # Errors
/// A sentence saying what is wrong, for a config error.
pub fn check_pointer(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(
            "must point into the payload, e.g. \"/customer_id\" (the empty pointer is the whole payload)"
                .to_owned(),
        );
    }
    if !p.starts_with('/') {
        return Err(format!(
            "`{p}` is not a JSON pointer (RFC 6901): it must start with `/`, e.g. \"/customer_id\""
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{p}` is not a JSON pointer (RFC 6901): `~` must be followed by 0 or 1"
            ));
        }
    }
    Ok(())
}

/// The key at `pointer` in the JSON `payload`: a string as is, a number or a boolean as its
/// JSON text; `None` when the pointer finds nothing, `null`, an object or an array, or the
/// payload is not JSON.
pub fn key_at(payload: &[u8], pointer: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match doc.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

/// The concurrency key of a delivered job of a queue with per-key concurrency: the message's
/// header, else the payload's scalar at the queue's pointer.
pub fn key_of(header: Option<&str>, payload: &[u8], pointer: Option<&str>) -> Option<String> {
    header
        .map(str::to_owned)
        .or_else(|| pointer.and_then(|p| key_at(payload, p)))
}

/// How long a delivery parked for the `parks`-th time (1-based) waits: whole seconds (the
/// delay levels' granularity) drawn uniformly from 1 to `min(2^parks, MAX_PARK)`.
pub fn park_delay(parks: u32, rng: &mut impl rand::Rng) -> Duration {
    let ceiling = (1_u64 << parks.clamp(1, 8)).min(MAX_PARK.as_secs());
    Duration::from_secs(rng.random_range(1..=ceiling))
}

/// One queue's waiting rooms in one worker process: per key, how many deliveries wait, and a
/// [`Notify`] rung when a job of that key ends here.
pub struct WaitingRooms {
    /// Most deliveries waiting in all of this queue's rooms.
    capacity: usize,
    /// Most deliveries waiting for one key.
    per_key: usize,
    /// The key's limit of running jobs (`concurrency_per_key`).
    limit: usize,
    state: Mutex<Rooms>,
}

#[derive(Default)]
struct Rooms {
    waiting: usize,
    keys: HashMap<String, Room>,
}

struct Room {
    waiting: usize,
    /// Jobs of this key running in this process, plus deliveries waiting: the entry is
    /// removed when both are 0.
    users: usize,
    ended: Arc<Notify>,
}

/// A place in a waiting room; leaving it (drop) frees the place.
pub struct Seat {
    rooms: Arc<WaitingRooms>,
    key: String,
    ended: Arc<Notify>,
}

/// A job of a key running in this process; its end (drop) wakes that key's waiting room.
pub struct Running {
    rooms: Arc<WaitingRooms>,
    key: String,
}

impl WaitingRooms {
    /// Rooms for a queue whose workers hold `prefetch` deliveries and run `concurrency` jobs
    /// at once, with `per_key` jobs of a key at once: all rooms together hold
    /// `prefetch - concurrency` deliveries (what the prefetch window holds beyond the running
    /// jobs), one key's room half of that, and at least `per_key` (enough to refill every
    /// slot of the key the moment it frees).
    pub fn new(prefetch: usize, concurrency: usize, per_key: u32) -> Arc<Self> {
        Arc::new(Self {
            capacity: prefetch.saturating_sub(concurrency),
            limit: usize::try_from(per_key).unwrap_or(usize::MAX),
            per_key: usize::try_from(per_key)
                .unwrap_or(usize::MAX)
                .max(prefetch.saturating_sub(concurrency) / 2)
                .max(1),
            state: Mutex::new(Rooms::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rooms> {
        // A panic while holding this lock leaves plain counters behind: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A seat in `key`'s room, or `None` when it is full (or the queue's rooms are): then the
    /// delivery is parked in the broker instead.
    pub fn enter(self: &Arc<Self>, key: &str) -> Option<Seat> {
        let mut s = self.lock();
        if s.waiting >= self.capacity {
            return None;
        }
        let room = s.keys.entry(key.to_owned()).or_insert_with(|| Room {
            waiting: 0,
            users: 0,
            ended: Arc::new(Notify::new()),
        });
        if room.waiting >= self.per_key {
            if room.users == 0 {
                s.keys.remove(key);
            }
            return None;
        }
        room.waiting += 1;
        room.users += 1;
        let ended = room.ended.clone();
        s.waiting += 1;
        Some(Seat {
            rooms: self.clone(),
            key: key.to_owned(),
            ended,
        })
    }

    /// Marks a job of `key` running here until the returned guard drops.
    pub fn running(self: &Arc<Self>, key: &str) -> Running {
        let mut s = self.lock();
        let room = s.keys.entry(key.to_owned()).or_insert_with(|| Room {
            waiting: 0,
            users: 0,
            ended: Arc::new(Notify::new()),
        });
        room.users += 1;
        Running {
            rooms: self.clone(),
            key: key.to_owned(),
        }
    }

    fn leave(&self, key: &str, waited: bool) {
        let mut s = self.lock();
        if waited {
            s.waiting = s.waiting.saturating_sub(1);
        }
        if let Some(room) = s.keys.get_mut(key) {
            if waited {
                room.waiting = room.waiting.saturating_sub(1);
            }
            room.users = room.users.saturating_sub(1);
            if !waited {
                // One slot of the key freed here: wake one waiter (a permit is kept when
                // none waits yet, so a waiter about to sleep does not miss it).
                room.ended.notify_one();
            }
            if room.users == 0 {
                s.keys.remove(key);
            }
        }
    }

    /// True when this process alone shows `key` at its limit: the limit of its jobs run here,
    /// or deliveries of it wait here already. A delivery then joins the waiting room (or is
    /// parked) without asking the store, whose answer could only be no.
    pub fn busy_here(&self, key: &str) -> bool {
        let s = self.lock();
        s.keys.get(key).is_some_and(|room| {
            let running = room.users.saturating_sub(room.waiting);
            room.waiting > 0 || running >= self.limit
        })
    }

    /// Jobs of `key` running in this process now.
    fn running_here(&self, key: &str) -> usize {
        self.lock()
            .keys
            .get(key)
            .map_or(0, |room| room.users.saturating_sub(room.waiting))
    }

    /// Deliveries waiting in this queue's rooms now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }
}

impl Seat {
    /// Waits until a job of this key ends in this process, or, when some of the key's slots
    /// are held elsewhere, [`POLL`] passes.
    pub async fn wait_turn(&self) {
        if self.rooms.running_here(&self.key) >= self.rooms.limit {
            self.ended.notified().await;
        } else {
            let _ = tokio::time::timeout(POLL, self.ended.notified()).await;
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.rooms.leave(&self.key, true);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.rooms.leave(&self.key, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_follow_rfc_6901() {
        assert!(check_pointer("/customer_id").is_ok());
        assert!(check_pointer("/a~1b/0").is_ok());
        assert!(check_pointer("").is_err());
        assert!(check_pointer("customer_id").is_err());
        assert!(check_pointer("/a~2").is_err());
        assert!(check_pointer("/a~").is_err());
    }

    #[test]
    fn keys_are_scalars_at_the_pointer() {
        let p = br#"{"customer_id": "c-1", "n": 7, "b": true, "o": {}, "z": null, "a/b": "x"}"#;
        assert_eq!(key_at(p, "/customer_id").as_deref(), Some("c-1"));
        assert_eq!(key_at(p, "/n").as_deref(), Some("7"));
        assert_eq!(key_at(p, "/b").as_deref(), Some("true"));
        assert_eq!(key_at(p, "/a~1b").as_deref(), Some("x"));
        assert_eq!(key_at(p, "/o"), None, "an object is not a key");
        assert_eq!(key_at(p, "/z"), None, "null is not a key");
        assert_eq!(key_at(p, "/missing"), None);
        assert_eq!(
            key_of(Some("h"), p, Some("/customer_id")).as_deref(),
            Some("h")
        );
        assert_eq!(
            key_of(None, p, Some("/customer_id")).as_deref(),
            Some("c-1")
        );
        assert_eq!(key_of(None, p, None), None);
    }

    #[test]
    fn parks_wait_whole_seconds_that_grow_up_to_the_cap() {
        let mut rng = rand::rng();
        for parks in 1..=9 {
            let ceiling = if parks == 1 { 2 } else { 4 };
            let waits: Vec<u64> = (0..200)
                .map(|_| park_delay(parks, &mut rng).as_secs())
                .collect();
            assert!(
                waits.iter().all(|w| (1..=ceiling).contains(w)),
                "{parks}: {waits:?}"
            );
            assert!(
                waits.contains(&1) && waits.contains(&ceiling),
                "{parks}: spread"
            );
        }
    }

    #[test]
    fn rooms_are_bounded_per_key_and_per_queue() {
        // prefetch 8, concurrency 4: 4 places in all; a key holds max(2, 4 / 2) = 2.
        let rooms = WaitingRooms::new(8, 4, 2);
        let a1 = rooms.enter("a").expect("room");
        let _a2 = rooms.enter("a").expect("room");
        assert!(rooms.enter("a").is_none(), "two per key");
        let others: Vec<Seat> = ["b", "c"]
            .iter()
            .map(|k| rooms.enter(k).expect("room"))
            .collect();
        assert_eq!(rooms.waiting(), 4);
        assert!(
            rooms.enter("h").is_none(),
            "four in all (prefetch - concurrency)"
        );
        drop(a1);
        assert_eq!(rooms.waiting(), 3);
        assert!(rooms.enter("h").is_some(), "a place freed");
        drop(others);
        assert!(
            WaitingRooms::new(4, 4, 2).enter("a").is_none(),
            "no room when prefetch = concurrency"
        );
        let wide = WaitingRooms::new(100, 20, 2);
        let seats: Vec<Seat> = (0..80).map_while(|_| wide.enter("hot")).collect();
        assert_eq!(seats.len(), 40, "half of 80 for one key");
    }

    #[tokio::test]
    async fn a_job_ending_wakes_its_keys_waiter() {
        let rooms = WaitingRooms::new(8, 4, 2);
        let run = rooms.running("a");
        let seat = rooms.enter("a").expect("room");
        let woke = tokio::spawn(async move {
            let t = std::time::Instant::now();
            seat.wait_turn().await;
            t.elapsed()
        });
        drop(run);
        let waited = woke.await.expect("task");
        assert!(waited < POLL, "woken by the end, not the poll: {waited:?}");
    }
}
