//! synthfleet's serverless control plane: what the Lambda functions under `functions/` do,
//! as library code (each function's `main.rs` only wires it to `lambda_runtime`), over the
//! same backend (`synthfleet-backend`) and rules (`synthfleet-core`) the CLI uses.
//!
//! * [`enqueue`]: a campaign file uploaded to S3, a schedule's firing or a direct call →
//!   validated, stored and enqueued through [`synthfleet_backend::submit`], idempotently.
//! * [`budget`]: on a schedule, reclaims the budget leases of dead calls, marks campaigns
//!   past their cap `exhausted`, and sends each budget alert once.
//! * [`finalize`]: on a schedule, marks campaigns whose every sample is accounted for
//!   `done`, records their totals and launches their quality jobs (an ECS task).
//! * [`scaler`]: every minute, sets the worker fleet's capacity (an Auto Scaling group or
//!   an ECS service) from the queue and the workers' heartbeats: 0 → N → 0.

pub mod budget;
pub mod enqueue;
pub mod finalize;
pub mod scaler;

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use synthfleet_aws::{AwsClients, AwsNames};
use synthfleet_backend::BackendConfig;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the event is not one this function takes: {0}")]
    Event(String),
    #[error(transparent)]
    Backend(#[from] synthfleet_backend::BackendError),
    #[error(transparent)]
    Load(#[from] synthfleet_tasks::LoadError),
    #[error(transparent)]
    Campaign(#[from] synthfleet_core::campaign::CampaignError),
    #[error(transparent)]
    Store(#[from] synthfleet_core::ports::StoreError),
    #[error(transparent)]
    Gold(#[from] synthfleet_core::gold::GoldError),
    #[error("s3://{bucket}/{key}: {detail}")]
    S3 {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("encoding {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("launching the quality jobs of `{campaign}` on ECS cluster {cluster}: {detail}")]
    Jobs {
        campaign: String,
        cluster: String,
        detail: String,
    },
    #[error("{target}: {detail}")]
    Capacity { target: String, detail: String },
    #[error("{variable}: {detail}")]
    Config {
        variable: &'static str,
        detail: String,
    },
    #[error("publishing the budget alert for `{campaign}` to {topic}: {detail}")]
    Alert {
        campaign: String,
        topic: String,
        detail: String,
    },
}

/// What Lambda reports of a failed invocation: the error with its whole chain of causes.
impl From<ControlError> for lambda_runtime::Diagnostic {
    fn from(error: ControlError) -> lambda_runtime::Diagnostic {
        lambda_runtime::Diagnostic {
            error_type: "synthfleet::ControlError".to_owned(),
            error_message: synthfleet_core::error_chain(&error),
        }
    }
}

/// JSON logs, as CloudWatch Logs takes them (`RUST_LOG` sets the level; `info` by default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
}

/// The deployment the function serves: its clients (the SDK configuration loaded once) and
/// the names in its `SYNTHFLEET_*` environment, the same variables the workers read.
async fn deployment() -> Result<(AwsClients, AwsNames), ControlError> {
    let clients = AwsClients::from_env().await;
    let names = BackendConfig::aws_from_env().aws_names()?;
    Ok((clients, names))
}

/// An environment variable, unless it is unset or empty.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The payload of an invocation, decoded as `T`.
fn payload<T: serde::de::DeserializeOwned>(event: LambdaEvent<Value>) -> Result<T, ControlError> {
    serde_json::from_value(event.payload).map_err(|e| ControlError::Event(e.to_string()))
}
