//! The raw baseline phase: the bare lapin publisher and consumer, alone and both at once.

use std::time::Instant;

use lapin::Connection;
use serde_json::json;

use crate::Params;
use crate::broker::unique;
use crate::child::Cleanup;
use crate::procfs::{CpuMeter, CpuTotals, wait_quiet};
use crate::raw::{declare_like_warren, raw_consume, raw_publish, raw_publish_round};
use crate::report::{Figures, median};

pub(crate) async fn phase_raw(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    println!(
        "raw baseline: {} rounds of {} messages, W={} in flight over {} channels, P={}",
        p.repeat, p.raw_n, p.inflight, p.raw_channels, p.prefetch
    );
    let (mut publish, mut consume, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_p, mut cpu_c, mut cpu_b) = (
        CpuTotals::default(),
        CpuTotals::default(),
        CpuTotals::default(),
    );
    for round in 1..=p.repeat {
        wait_quiet().await;
        let q = unique("raw");
        declare_like_warren(conn, &q, cleanup).await;
        publish.push(raw_publish_round(conn, &q, p, p.raw_n, &mut cpu_p).await);

        let cpu = CpuMeter::start(None);
        let t = Instant::now();
        raw_consume(conn, &q, p.raw_n, p.prefetch).await;
        consume.push(p.raw_n as f64 / t.elapsed().as_secs_f64());
        cpu.stop(&mut cpu_c, p.raw_n);

        let q2 = unique("raw-both");
        declare_like_warren(conn, &q2, cleanup).await;
        let cpu = CpuMeter::start(None);
        let t = Instant::now();
        futures::join!(
            raw_consume(conn, &q2, p.raw_n, p.prefetch),
            raw_publish(conn, &q2, p.raw_n, p.inflight, p.raw_channels)
        );
        both.push(p.raw_n as f64 / t.elapsed().as_secs_f64());
        cpu.stop(&mut cpu_b, p.raw_n);
        println!(
            "  round {round}: publish {:.0} msg/s, consume {:.0} msg/s, both at once {:.0} msg/s",
            publish[round - 1],
            consume[round - 1],
            both[round - 1]
        );
    }
    for (name, cpu) in [("publish", &cpu_p), ("consume", &cpu_c), ("both", &cpu_b)] {
        println!("  {name}: {}", cpu.line());
    }
    f.note("cpu_raw_publish", cpu_p.json());
    f.note("cpu_raw_consume", cpu_c.json());
    f.note("cpu_raw_e2e", cpu_b.json());
    f.note(
        "raw_rounds",
        json!({ "publish": publish, "consume": consume, "both": both }),
    );
    f.set("raw_publish_per_s", median(publish));
    f.set("raw_consume_per_s", median(consume));
    f.set("raw_e2e_per_s", median(both));
}
