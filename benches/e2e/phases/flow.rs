//! The cost of flow control (`BENCH_PHASES=flow`, issue 19 item 5): drains of a backlog of
//! `BENCH_FLOW_N` jobs (default 20,000) by `warren run`, alternating between sides in pairs
//! so each pair sees the same machine; `BENCH_REPEAT` pairs. Sides:
//! - `plain`: this tree, a queue without limits;
//! - `limited`: this tree, the same queue with `rate_limit` far above any rate it reaches
//!   (1,000,000/s, burst 1,000,000): every start takes a token from the store's bucket;
//! - `before` (only with `BENCH_WARREN_BIN_B`, e.g. a build of the tree before flow control):
//!   that binary, a queue without limits, each side on a store of its own.
//!
//! Prints each pair's limited/plain and before/plain and their medians; targets: limited /
//! plain ≥ 0.8, and plain within 2 % of before.

use std::path::PathBuf;

use lapin::Connection;
use serde_json::json;

use super::drain::{drain_with, load_backlog_with};
use crate::Params;
use crate::child::{Cleanup, Launch, warren_bin};
use crate::report::{Figures, median, round};
use crate::store::Space;

/// A rate limit far above what one `warren run` reaches on these machines.
const FAR_ABOVE: &str = "rate_limit = { per_second = 1000000, burst = 1000000 }";

pub(crate) async fn phase_flow(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    let n = std::env::var("BENCH_FLOW_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_usize);
    let before = std::env::var_os("BENCH_WARREN_BIN_B").map(PathBuf::from);
    let mut sides: Vec<(&str, Launch<'_>)> = vec![
        ("plain", Launch::default()),
        (
            "limited",
            Launch {
                queue_extra: FAR_ABOVE,
                ..Launch::default()
            },
        ),
    ];
    if let Some(bin) = &before {
        sides.push((
            "before",
            Launch {
                bin: bin.clone(),
                ..Launch::default()
            },
        ));
    }
    println!(
        "flow: {} pairs of drains of {n} jobs; sides: {} (this tree: {})",
        p.repeat,
        sides.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", "),
        warren_bin().display()
    );
    let mut spaces = Vec::new();
    for _ in &sides {
        spaces.push(Space::new(&p.store, cleanup).await);
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    for pair in 0..p.repeat {
        let mut order: Vec<usize> = (0..sides.len()).collect();
        if pair % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (tag, how) = &sides[i];
            let bk = cleanup.work_queue(&format!("flow-{tag}"));
            let (jobs, _) = load_backlog_with(
                how,
                p,
                &spaces[i],
                &bk,
                n,
                &format!("flow-{tag}-load"),
                false,
            )
            .await;
            let d = drain_with(how, p, &spaces[i], conn, &bk, &jobs, &format!("flow-{tag}")).await;
            rates[i].push(d.rate);
        }
        let line: Vec<String> = sides
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, (tag, _))| format!("{tag}/plain {:.3}", rates[i][pair] / rates[0][pair]))
            .collect();
        println!("  pair {}: {}", pair + 1, line.join(", "));
    }
    for (i, (tag, _)) in sides.iter().enumerate() {
        println!("  {tag}: median {:.0} jobs/s", median(rates[i].clone()));
        if i > 0 {
            let ratios: Vec<f64> = rates[i]
                .iter()
                .zip(&rates[0])
                .map(|(x, plain)| x / plain)
                .collect();
            let mid = median(ratios);
            println!("  flow: median {tag}/plain {mid:.3}");
            f.note(&format!("flow_{tag}_over_plain"), json!(round(mid, 3)));
        }
    }
}
