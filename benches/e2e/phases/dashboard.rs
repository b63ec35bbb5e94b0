//! The cost of an open dashboard (`BENCH_PHASES=dashboard`, issue 18 item 8): one
//! `warren serve`, single-POST rounds of `BENCH_INTAKE_N` jobs with and without a dashboard
//! tab open beside them, alternating (off on, on off, …) so the two rounds of a pair see the
//! same machine; `BENCH_REPEAT` pairs. The open tab is what a browser does on `/ui/`: load
//! the page and its two assets, then fetch `/ui/live/overview` every 5 s (the dashboard's
//! default rate, `REFRESH_MS`). Prints each pair's on/off and the median; the target is an
//! on/off of at least 0.97.

use std::time::Duration;

use lapin::Connection;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::intake::measured_round;
use crate::Params;
use crate::child::{Cleanup, Launch, Warren};
use crate::load::{single_accepted, single_bodies};
use crate::procfs::CpuTotals;
use crate::report::{Figures, median, round};
use crate::store::Space;

/// The dashboard's default refresh (`intake::ui::REFRESH_MS`).
const REFRESH: Duration = Duration::from_millis(5_000);

/// A dashboard tab on `w`'s overview until `stop`: the page, its assets, then the live
/// fragment every [`REFRESH`]. Returns how many requests it made.
async fn open_tab(w_base: String, stop: CancellationToken) -> u64 {
    let http = reqwest::Client::new();
    let mut made = 0;
    for path in ["/ui/", "/ui/assets/app.css", "/ui/assets/app.js"] {
        let resp = http.get(format!("{w_base}{path}")).send().await;
        assert!(
            resp.is_ok_and(|r| r.status() == 200),
            "GET {path} on the benched warren"
        );
        made += 1;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return made,
            () = tokio::time::sleep(REFRESH) => {}
        }
        let resp = http.get(format!("{w_base}/ui/live/overview")).send().await;
        assert!(
            resp.is_ok_and(|r| r.status() == 200),
            "GET /ui/live/overview on the benched warren"
        );
        made += 1;
    }
}

pub(crate) async fn phase_dashboard(
    p: &Params,
    conn: &Connection,
    cleanup: &Cleanup,
    f: &mut Figures,
) {
    println!(
        "dashboard: {} pairs of {} single POSTs from C={} clients, without and with a dashboard tab refreshing every {} s",
        p.repeat,
        p.intake_n,
        p.clients,
        REFRESH.as_secs()
    );
    let q = cleanup.work_queue("dash");
    let space = Space::new(&p.store, cleanup).await;
    let w = Warren::launch(
        &Launch::default(),
        &space,
        "dash",
        "serve",
        &[&q],
        p.prefetch,
    )
    .await;
    let base = format!("http://{}", w.addr);
    let path = format!("/v1/queues/{q}/jobs");
    let mut cpu = [CpuTotals::default(), CpuTotals::default()];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    let mut requests = 0;
    for pair in 0..p.repeat {
        let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let stop = CancellationToken::new();
            let tab = (side == 1).then(|| tokio::spawn(open_tab(base.clone(), stop.clone())));
            let bodies = single_bodies(p.intake_n);
            let r = measured_round(
                &w,
                &path,
                bodies,
                p.clients,
                single_accepted,
                1,
                &mut cpu[side],
            )
            .await;
            stop.cancel();
            if let Some(tab) = tab {
                requests += tab.await.expect("the dashboard tab did not panic");
            }
            rates[side].push(r.per_s());
            // Every round starts on an empty queue: a round after one that left
            // `BENCH_INTAKE_N` messages behind runs slower, which would count against
            // whichever side came second.
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch.queue_purge(q.as_str().into(), Default::default()).await;
                let _ = ch.close(200, "purged".into()).await;
            }
        }
        let (off, on) = (rates[0][pair], rates[1][pair]);
        ratios.push(on / off);
        println!(
            "  pair {}: off {off:.0}, on {on:.0} jobs/s, on/off {:.3}",
            pair + 1,
            on / off
        );
    }
    for (name, side) in [("off", 0), ("on", 1)] {
        println!(
            "  {name}: median {:.0} jobs/s; {}",
            median(rates[side].clone()),
            cpu[side].line()
        );
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let mid = median(ratios);
    println!(
        "  dashboard: median on/off {mid:.3} (pairs {lo:.3} to {hi:.3}); the tab made {requests} requests"
    );
    f.note("dashboard_on_over_off", json!(round(mid, 3)));
    w.stop().await;
    drop(space);
}
