//! synthfleet's domain core.
//!
//! Everything here is pure: types, validation and rules. Side effects live behind the
//! traits in [`ports`], implemented by adapter crates: the embedded local backends
//! (`synthfleet-local`), S3, SQS and DynamoDB (`synthfleet-aws`), the Docker sandboxes
//! (`synthfleet-sandbox`) and the LLM clients (`synthfleet-llm`). The DuckDB quality
//! pipeline (`synthfleet-quality`) reads the records defined here.
//!
//! **Architecture invariant:** this crate has no AWS, Docker, HTTP or DuckDB dependency.

pub mod budget;
pub mod campaign;
pub mod codec;
pub mod commits;
pub mod facts;
pub mod gold;
pub mod hacks;
pub mod harness;
pub mod lifecycle;
pub mod liveness;
pub mod message;
pub mod metrics;
pub mod money;
pub mod ports;
pub mod redrive;
pub mod resume;
pub mod sampling;
pub mod scaling;
pub mod spend;
pub mod start;
pub mod store;
pub mod submit;
pub mod task;
pub mod taskset;
pub mod templates;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trajectory;

pub use money::MicroUsd;

/// An error and all its causes on one line (`outer: cause: root cause`), for logs and
/// for messages that cross a process boundary (a Lambda's reported error).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
