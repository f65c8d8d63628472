//! The edge both command-line binaries share (`synthfleet` and `synthfleet-jobs`): their
//! common flags, the async entry point that prints an error chain, logging (pretty with
//! progress bars on a terminal, JSON in the fleet) and the readable view of a trajectory.

mod args;
pub mod entry;
pub mod logging;
pub mod render;

pub use args::BackendArgs;
pub use entry::LogArgs;
