//! The phases of the bench, each a function that `run` calls when `BENCH_PHASES` names it and
//! that leaves its figures in [`Figures`](crate::report::Figures).

mod dashboard;
mod drain;
mod flow;
mod growth;
mod intake;
mod latency;
mod light;
mod raw;
mod soak;
mod wait;

pub(crate) use dashboard::phase_dashboard;
pub(crate) use drain::{load_backlog, phase_backlog, phase_drain};
pub(crate) use flow::phase_flow;
pub(crate) use growth::phase_growth;
pub(crate) use intake::{Beside, phase_ab, phase_intake};
pub(crate) use latency::phase_run;
pub(crate) use light::phase_light;
pub(crate) use raw::phase_raw;
pub(crate) use soak::phase_soak;
pub(crate) use wait::phase_wait;
