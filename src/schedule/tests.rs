use super::*;

fn schedule(cron: &str, tz: &str, catch_up: CatchUp) -> Schedule {
    Schedule {
        name: "s".into(),
        queue: "q".into(),
        cron: cron.into(),
        parsed: parse_cron(cron).expect("a valid expression"),
        timezone: Tz::from_str(tz).expect("a timezone"),
        payload: bytes::Bytes::from_static(b"{}"),
        max_attempts: None,
        catch_up,
    }
}

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

fn utc(t: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(t)
        .expect("a time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Each tick after `from`, `n` of them, as RFC 3339 UTC.
fn ticks(s: &Schedule, from: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = ms(from);
    for _ in 0..n {
        t = s.next_after(t).expect("a next tick");
        out.push(utc(t));
    }
    out
}

#[test]
fn five_fields_start_at_the_minute_and_six_at_the_second() {
    let five = schedule("*/15 * * * *", "UTC", CatchUp::Last);
    assert_eq!(
        ticks(&five, "2026-12-01T10:07:30Z", 2),
        ["2026-12-01T10:15:00Z", "2026-12-01T10:30:00Z"]
    );
    let six = schedule("*/5 * * * * *", "UTC", CatchUp::Last);
    assert_eq!(
        ticks(&six, "2026-12-01T10:07:31Z", 3),
        [
            "2026-12-01T10:07:35Z",
            "2026-12-01T10:07:40Z",
            "2026-12-01T10:07:45Z"
        ]
    );
}

#[test]
fn bad_expressions_are_refused_with_the_reason() {
    for bad in [
        "",
        "* * * *",
        "* * * * * * *",
        "61 * * * *",
        "* * * 13 *",
        "every day",
    ] {
        assert!(parse_cron(bad).is_err(), "{bad:?} was accepted");
    }
    let e = parse_cron("* * * *").err().unwrap_or_default();
    assert!(e.contains("4 fields"), "{e}");
}

/// Europe/Berlin springs forward on 2026-03-29 (02:00 CET → 03:00 CEST): 02:30 does not
/// exist that day. croner fires a fixed-time schedule once, at the first valid time after
/// the gap: 03:00 CEST (01:00 UTC); the day after is back to 02:30 CEST (00:30 UTC).
#[test]
fn a_0230_berlin_schedule_fires_at_0300_on_the_spring_forward_day() {
    let s = schedule("30 2 * * *", "Europe/Berlin", CatchUp::Last);
    assert_eq!(
        ticks(&s, "2026-03-27T12:00:00Z", 4),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST: 02:30 was skipped by the clocks
            "2026-03-30T00:30:00Z", // 02:30 CEST
            "2026-03-31T00:30:00Z",
        ]
    );
}

/// Europe/Berlin falls back on 2026-10-25 (03:00 CEST → 02:00 CET): 02:30 happens twice.
/// croner fires a fixed-time schedule once, at the first occurrence (02:30 CEST, 00:30 UTC).
#[test]
fn a_0230_berlin_schedule_fires_once_on_the_fall_back_day() {
    let s = schedule("30 2 * * *", "Europe/Berlin", CatchUp::Last);
    assert_eq!(
        ticks(&s, "2026-10-23T12:00:00Z", 4),
        [
            "2026-10-24T00:30:00Z", // 02:30 CEST
            "2026-10-25T00:30:00Z", // the first 02:30 (CEST); not again at 01:30 UTC (CET)
            "2026-10-26T01:30:00Z", // 02:30 CET
            "2026-10-27T01:30:00Z",
        ]
    );
}

#[test]
fn ticks_on_time_fire_and_nothing_fires_twice() {
    let s = schedule("* * * * * *", "UTC", CatchUp::None);
    let last = ms("2026-12-01T10:00:00Z");
    let p = plan(&s, last, last + 2_500);
    assert_eq!(p.fire, [last + 1_000, last + 2_000]);
    assert!(!p.skipped);
    assert_eq!(p.newest, Some(last + 2_000));
    // The next pass, after the state moved: nothing new until the next second.
    let again = plan(&s, last + 2_000, last + 2_900);
    assert!(again.fire.is_empty());
    assert_eq!(again.newest, None);
}

/// After a 60 s stop of a per-second schedule: the ticks of the last 5 s (the misfire
/// threshold) are on time and fire whatever `catch_up` says; the 55 older ones get what
/// `catch_up` says.
#[test]
fn catch_up_decides_what_missed_ticks_get() {
    let last = ms("2026-12-01T10:00:00Z");
    let now = last + 60_000;
    let on_time: Vec<i64> = (55..=60).map(|s| last + s * 1_000).collect();

    let none = plan(&schedule("* * * * * *", "UTC", CatchUp::None), last, now);
    assert_eq!(none.fire, on_time);
    assert!(none.skipped);

    let latest = plan(&schedule("* * * * * *", "UTC", CatchUp::Last), last, now);
    let mut want = vec![last + 54_000];
    want.extend(&on_time);
    assert_eq!(latest.fire, want);
    assert!(latest.skipped);

    let all = plan(&schedule("* * * * * *", "UTC", CatchUp::All), last, now);
    let want: Vec<i64> = (1..=60).map(|s| last + s * 1_000).collect();
    assert_eq!(all.fire, want);
    assert!(!all.skipped);
    for p in [none, latest, all] {
        assert_eq!(p.newest, Some(now));
    }
}

#[test]
fn catch_up_all_fires_the_newest_thousand() {
    let s = schedule("* * * * * *", "UTC", CatchUp::All);
    let last = ms("2026-12-01T10:00:00Z");
    let now = last + 2 * 3_600_000;
    let p = plan(&s, last, now);
    // Ticks 5 s late to 0 s late are on time: 6 of them.
    let on_time = 6;
    assert_eq!(p.fire.len(), MAX_CATCH_UP + on_time);
    assert!(p.skipped);
    assert_eq!(p.fire.first(), Some(&(now - 1_005_000)));
    assert!(p.fire.windows(2).all(|w| w[0] < w[1]), "oldest first");
}

#[test]
fn a_daily_schedule_missed_overnight_fires_once_with_last() {
    let s = schedule("0 3 * * *", "UTC", CatchUp::Last);
    let last = ms("2026-11-28T03:00:00Z");
    let p = plan(&s, last, ms("2026-12-01T09:00:00Z"));
    assert_eq!(p.fire, [ms("2026-12-01T03:00:00Z")]);
    assert!(p.skipped, "the 29th and 30th were skipped");
}

#[test]
fn tick_keys_name_the_schedule_and_the_instant() {
    assert_eq!(
        tick_key("nightly", ms("2026-12-01T02:00:00Z")),
        "schedule:nightly:2026-12-01T02:00:00Z"
    );
    assert_ne!(tick_key("a", 1_000), tick_key("a", 2_000));
}
