//! Embedded local backends: what `synthfleet run` uses on one machine, with no cloud.
//!
//! * [`LocalQueue`] and [`LocalMetadata`] keep their state in one [redb] database file
//!   (`state.redb`): ACID transactions with fsync on commit, so a conditional write or a
//!   budget reservation is atomic and survives a crash or restart. redb takes an exclusive
//!   lock on the file, so two processes cannot corrupt one state directory.
//! * [`LocalObjectStore`] keeps objects as plain files (readable with `zstd -d`), each with
//!   a `.sha256` sidecar that is verified on every read; writes go through a temporary
//!   file and `rename`, so an object is complete or absent.
//! * [`commit_log`] keeps beside the database a copy of each campaign's commit order as a
//!   file of JSON lines, which [`CommitLogReader`] follows without opening the database: a
//!   `synthfleet tail` streams the commits of a run that holds it.

pub mod commit_log;
mod commits;
mod db;
mod metadata;
mod objects;
mod queue;

pub use commit_log::{CommitLogError, CommitLogReader};
pub use db::LocalState;
pub use metadata::LocalMetadata;
pub use objects::LocalObjectStore;
pub use queue::LocalQueue;
