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
//!
//! [`lambda::run`] is what every `main.rs` calls: JSON logs, the setup once, the
//! invocations; a setup that fails is reported to Lambda as an init error.

pub mod budget;
pub mod enqueue;
pub mod finalize;
pub mod lambda;
pub mod scaler;

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use synthfleet_aws::{AwsClients, AwsNames};
use synthfleet_backend::{BackendConfig, BackendError};

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
    let names = BackendConfig::aws_from_env()
        .aws_names()
        .map_err(|e| match e {
            // Said as a function's configuration, not as the CLI's flags.
            BackendError::Missing { env, .. } => ControlError::Config {
                variable: env,
                detail: "unset or empty: set it in the function's environment (infra/modules/functions gives every function SYNTHFLEET_BUCKET, SYNTHFLEET_TABLE, SYNTHFLEET_QUEUE_URL and SYNTHFLEET_DLQ_URL; `terraform apply` restores them)".into(),
            },
            other => other.into(),
        })?;
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

/// What invoked a scheduled function (budget, finalize, scaler), for its log. These
/// functions ignore their payload — whatever it holds, an invocation does the same work —
/// so only the log says what started one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// An EventBridge event: a rule's (`"source": "aws.events"`, `"detail-type":
    /// "Scheduled Event"`), or a schedule's input shaped like one.
    Event {
        source: String,
        detail_type: String,
        time: Option<String>,
    },
    /// An EventBridge Scheduler input that carries its context attributes
    /// (`"schedule_arn": "<aws.scheduler.schedule-arn>"`, `"scheduled_time":
    /// "<aws.scheduler.scheduled-time>"`).
    Schedule {
        schedule_arn: Option<String>,
        scheduled_time: Option<String>,
    },
    /// Anything else: a direct invocation (`aws lambda invoke`, the console, a test) — or
    /// a schedule whose input says nothing (`{}`).
    Direct,
}

impl Invocation {
    pub fn of(payload: &Value) -> Invocation {
        let text = |field: &str| {
            payload
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let (Some(source), Some(detail_type)) = (text("source"), text("detail-type")) {
            return Invocation::Event {
                source,
                detail_type,
                time: text("time"),
            };
        }
        let (schedule_arn, scheduled_time) = (text("schedule_arn"), text("scheduled_time"));
        if schedule_arn.is_some() || scheduled_time.is_some() {
            return Invocation::Schedule {
                schedule_arn,
                scheduled_time,
            };
        }
        Invocation::Direct
    }
}

/// Logs what invoked the scheduled `function`: the event's source, detail type and time,
/// the schedule and its time, or a direct invocation. The payload is otherwise ignored.
pub fn log_invocation(function: &str, event: &LambdaEvent<Value>) {
    let request_id = event.context.request_id.as_str();
    match Invocation::of(&event.payload) {
        Invocation::Event {
            source,
            detail_type,
            time,
        } => tracing::info!(
            function,
            request_id,
            source,
            detail_type,
            time = time.as_deref().unwrap_or("unknown"),
            "invoked by an event (its payload is otherwise ignored)"
        ),
        Invocation::Schedule {
            schedule_arn,
            scheduled_time,
        } => tracing::info!(
            function,
            request_id,
            source = "aws.scheduler",
            schedule = schedule_arn.as_deref().unwrap_or("unknown"),
            time = scheduled_time.as_deref().unwrap_or("unknown"),
            "invoked by a schedule (its payload is otherwise ignored)"
        ),
        Invocation::Direct => tracing::info!(
            function,
            request_id,
            source = "direct invocation",
            "invoked directly, or by a schedule whose input names no event (the payload is ignored)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_function_says_what_invoked_it() {
        let rule = serde_json::json!({
            "version": "0", "source": "aws.events", "detail-type": "Scheduled Event",
            "time": "2026-11-28T05:00:00Z", "detail": {}
        });
        assert_eq!(
            Invocation::of(&rule),
            Invocation::Event {
                source: "aws.events".into(),
                detail_type: "Scheduled Event".into(),
                time: Some("2026-11-28T05:00:00Z".into()),
            }
        );
        let schedule = serde_json::json!({
            "schedule_arn": "arn:aws:scheduler:us-east-1:1:schedule/g/budget",
            "scheduled_time": "2026-11-28T05:05:00Z"
        });
        assert_eq!(
            Invocation::of(&schedule),
            Invocation::Schedule {
                schedule_arn: Some("arn:aws:scheduler:us-east-1:1:schedule/g/budget".into()),
                scheduled_time: Some("2026-11-28T05:05:00Z".into()),
            }
        );
        for payload in [
            serde_json::json!({}),
            serde_json::json!(null),
            serde_json::json!({"anything": 1}),
        ] {
            assert_eq!(Invocation::of(&payload), Invocation::Direct, "{payload}");
        }
    }
}
