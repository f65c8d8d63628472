//! Where synthfleet's state lives: the embedded local backends of a state directory, or an
//! AWS deployment (S3, DynamoDB, SQS) named by flags or `SYNTHFLEET_*` variables. Every
//! binary opens its backend here — the CLI, the DuckDB jobs, the Lambda functions — so the
//! rules (default state directory, local queue names, what a deployment needs) live once.

mod backend;
pub mod local;

pub use backend::{
    Backend, BackendConfig, BackendError, BackendKind, CommitFeed, submit, submit_triggered,
};
