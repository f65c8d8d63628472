//! The parts of the `synthfleet` command that its companion binary `synthfleet-jobs`
//! (reports, exports, review: the DuckDB jobs) shares: choosing a backend, the local state,
//! logging, and the readable view of a trajectory.

pub mod backend;
pub mod entry;
pub mod local;
pub mod logging;
pub mod show;
