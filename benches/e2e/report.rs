//! The figures the phases measure, and the report of them: the table against the targets and
//! the JSON written to `BENCH_OUT`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::Params;
use crate::load::LoadResult;

#[derive(Default)]
pub(crate) struct Figures {
    values: BTreeMap<&'static str, f64>,
    /// Per figure measured in rounds paired with a raw baseline: (median ratio, median raw).
    paired: BTreeMap<&'static str, (f64, f64)>,
    notes: BTreeMap<String, Value>,
}

impl Figures {
    pub(crate) fn set(&mut self, key: &'static str, v: f64) {
        self.values.insert(key, v);
    }
    pub(crate) fn set_paired(&mut self, key: &'static str, paired: (f64, f64)) {
        self.paired.insert(key, paired);
    }
    pub(crate) fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }
    pub(crate) fn note(&mut self, key: &str, v: Value) {
        self.notes.insert(key.to_owned(), v);
    }
}

pub(crate) fn report_load(name: &str, r: &LoadResult) {
    println!(
        "  {name}: {} accepted, {} refused in {:.2} s = {:.0} jobs/s",
        r.accepted,
        r.failed,
        r.elapsed.as_secs_f64(),
        r.per_s()
    );
    if let Some(e) = &r.first_error {
        println!("  {name}: first failure: {e}");
    }
}

/// (figure, baseline figure, target text, check of (value, ratio to the baseline))
type Row = (
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<fn(f64, Option<f64>) -> bool>,
);

fn ratio_at_least(k: f64) -> impl Fn(f64, Option<f64>) -> bool {
    move |_, ratio| ratio.is_some_and(|r| r >= k)
}

fn rows() -> Vec<Row> {
    vec![
        ("raw_publish_per_s", None, "", None),
        ("raw_consume_per_s", None, "", None),
        ("raw_e2e_per_s", None, "", None),
        (
            "intake_per_s",
            Some("raw_publish_per_s"),
            ">= 0.5 x raw",
            Some(|v, b| ratio_at_least(0.5)(v, b)),
        ),
        (
            "intake_batch_per_s",
            Some("raw_publish_per_s"),
            ">= 0.8 x raw",
            Some(|v, b| ratio_at_least(0.8)(v, b)),
        ),
        (
            "drain_per_s",
            Some("raw_consume_per_s"),
            ">= 0.6 x raw",
            Some(|v, b| ratio_at_least(0.6)(v, b)),
        ),
        (
            "e2e_per_s",
            Some("raw_e2e_per_s"),
            ">= 0.5 x raw",
            Some(|v, b| ratio_at_least(0.5)(v, b)),
        ),
        ("post_p50_ms", None, "", None),
        ("post_p99_ms", None, "<= 10 ms", Some(|v, _| v <= 10.0)),
        ("start_p50_ms", None, "", None),
        ("start_p99_ms", None, "<= 25 ms", Some(|v, _| v <= 25.0)),
        ("rss_idle_mb", None, "<= 64 MB", Some(|v, _| v <= 64.0)),
        ("rss_load_mb", None, "<= 200 MB", Some(|v, _| v <= 200.0)),
        ("rss_backlog_mb", None, "<= 200 MB", Some(|v, _| v <= 200.0)),
        ("drain_1m_per_s", None, "", None),
        (
            "rss_backlog_1m_mb",
            None,
            "<= 200 MB",
            Some(|v, _| v <= 200.0),
        ),
        ("soak_errors", None, "= 0", Some(|v, _| v == 0.0)),
        ("soak_rss_growth_pct", None, "< 10 %", Some(|v, _| v < 10.0)),
        ("soak_p99_max_ms", None, "", None),
    ]
}

pub(crate) fn report(p: &Params, f: &Figures) -> Value {
    println!();
    println!(
        "{:<20} {:>12} {:>12} {:>7} {:>14}  result",
        "figure", "value", "raw", "ratio", "target"
    );
    let mut out = serde_json::Map::new();
    let mut fails = 0;
    for (key, base_key, target, check) in rows() {
        let v = f.get(key);
        // Rounds paired with a raw baseline beside them: the median of the pairs' ratios
        // and of their raw rates; otherwise the ratio to the raw phase's median.
        let (base, ratio) = match f.paired.get(key) {
            Some(&(ratio, raw)) => (Some(raw), Some(ratio)),
            None => {
                let base = base_key.and_then(|b| f.get(b));
                (base, v.zip(base).map(|(v, b)| v / b))
            }
        };
        let result = match (v, check) {
            (None, _) => "not run",
            (Some(_), None) => "",
            (Some(_), Some(_)) if base_key.is_some() && base.is_none() => "no baseline",
            (Some(v), Some(check)) => {
                if check(v, ratio) {
                    "PASS"
                } else {
                    fails += 1;
                    "FAIL  <=="
                }
            }
        };
        let fmt = |x: Option<f64>, d: usize| x.map_or("-".to_owned(), |x| format!("{x:.d$}"));
        let digits = if key.ends_with("_per_s") { 0 } else { 2 };
        println!(
            "{key:<20} {:>12} {:>12} {:>7} {:>14}  {result}",
            fmt(v, digits),
            fmt(base, 0),
            fmt(ratio, 2),
            target
        );
        out.insert(
            key.to_owned(),
            v.map_or(Value::Null, |v| json!(round(v, 2))),
        );
        if let Some(r) = ratio {
            let name = format!("{}_ratio", key.trim_end_matches("_per_s"));
            out.insert(name, json!(round(r, 3)));
        }
        if let Some(&(_, raw)) = f.paired.get(key) {
            let stem = key.trim_end_matches("_per_s");
            out.insert(format!("{stem}_raw_beside_per_s"), json!(round(raw, 0)));
            // Shown, not judged: the ratio to the raw phase, minutes earlier.
            if let Some((v, b)) = v.zip(base_key.and_then(|b| f.get(b))) {
                println!(
                    "{:<20} {:>12} {b:>12.0} {:>7.2}  (to the raw phase: not judged)",
                    "",
                    "",
                    v / b
                );
                out.insert(format!("{stem}_ratio_to_raw_phase"), json!(round(v / b, 3)));
            }
        }
    }
    println!("{fails} target(s) missed");
    let mut notes = serde_json::Map::new();
    for (k, v) in &f.notes {
        notes.insert(k.clone(), v.clone());
    }
    out.insert("details".into(), Value::Object(notes));
    out.insert(
        "params".into(),
        json!({
            "raw_n": p.raw_n, "inflight_w": p.inflight, "raw_channels": p.raw_channels,
            "prefetch_p": p.prefetch, "clients_c": p.clients, "intake_n": p.intake_n,
            "batch_n": p.batch_n, "batch_size": p.batch_size, "batch_clients": p.batch_clients,
            "e2e_n": p.e2e_n, "lat_rate": p.lat_rate, "lat_secs": p.lat_secs,
            "soak_rate": p.soak_rate, "soak_secs": p.soak_secs, "backlog_n": p.backlog_n,
        }),
    );
    out.insert("machine".into(), machine());
    Value::Object(out)
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| round(kb / 1024.0 / 1024.0, 1));
    json!({ "cores": cores, "mem_gib": mem_gib })
}

/// The median of `v` (0 when empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
