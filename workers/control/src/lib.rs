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

/// A cause kept as it came (an SDK error, a builder's): downcast it for its details.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the event is not one this function takes")]
    Event {
        #[source]
        source: serde_json::Error,
    },
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
    /// An S3 call on an uploaded campaign's objects failed.
    #[error("s3://{bucket}/{key}: {operation} failed")]
    S3 {
        bucket: String,
        key: String,
        /// `listing`, `reading`, `reading the body of`.
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("s3://{bucket}/{key}: the campaign file is not UTF-8 text")]
    NotUtf8 {
        bucket: String,
        key: String,
        #[source]
        source: std::string::FromUtf8Error,
    },
    #[error(
        "s3://{bucket}/{key}: `{}` must be a path relative to the campaign file, without `..`",
        path.display()
    )]
    NotRelative {
        bucket: String,
        key: String,
        path: std::path::PathBuf,
    },
    #[error(
        "s3://{bucket}/{key}: named by the campaign file, but no such object or directory; upload it beside the campaign file first"
    )]
    MissingObject { bucket: String, key: String },
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
    /// The RunTask call (or building its request) failed.
    #[error("launching the quality jobs of `{campaign}` on ECS cluster {cluster}")]
    Jobs {
        campaign: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    /// RunTask answered, but started no task; ECS's failures say why.
    #[error(
        "launching the quality jobs of `{campaign}` on ECS cluster {cluster}: no task started: {}",
        if reasons.is_empty() { "ECS returned neither a task nor a failure".to_owned() } else { reasons.join("; ") }
    )]
    NoJobsTask {
        campaign: String,
        cluster: String,
        /// `reason (detail)` of each failure ECS returned.
        reasons: Vec<String>,
    },
    /// Reading or setting the worker fleet's capacity failed.
    #[error("{target}: {operation} failed")]
    Capacity {
        /// `Auto Scaling group …` or `ECS service … in …`.
        target: String,
        /// `reading the desired capacity`, `setting the desired capacity`.
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{target}: not found; check the name")]
    NoCapacity { target: String },
    /// A `SYNTHFLEET_*` variable unset or set wrong; `problem` says what to do.
    #[error("{variable}: {problem}")]
    Config {
        variable: &'static str,
        problem: &'static str,
    },
    #[error("{variable}: `{value}` is not a count")]
    NotACount {
        variable: &'static str,
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("publishing the budget alert for `{campaign}` to {topic}")]
    Alert {
        campaign: String,
        topic: String,
        #[source]
        source: BoxError,
    },
}

impl ControlError {
    /// Whether the function's configuration (its environment) is what failed.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            ControlError::Config { .. } | ControlError::NotACount { .. }
        )
    }
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
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
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
                problem: "unset or empty: set it in the function's environment (infra/modules/functions gives every function SYNTHFLEET_BUCKET, SYNTHFLEET_TABLE, SYNTHFLEET_QUEUE_URL and SYNTHFLEET_DLQ_URL; `terraform apply` restores them)",
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
    serde_json::from_value(event.payload).map_err(|source| ControlError::Event { source })
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
    use synthfleet_core::error_chain;

    #[test]
    fn errors_say_what_failed_once_and_keep_their_cause() {
        let source = "ten".parse::<u32>().expect_err("not a number");
        let not_a_count = ControlError::NotACount {
            variable: "SYNTHFLEET_SCALE_MAX",
            value: "ten".into(),
            source,
        };
        assert!(not_a_count.is_config());
        assert_eq!(
            error_chain(&not_a_count),
            "SYNTHFLEET_SCALE_MAX: `ten` is not a count: invalid digit found in string"
        );
        let s3 = ControlError::S3 {
            bucket: "b".into(),
            key: "k".into(),
            operation: "reading",
            source: std::io::Error::other("NoSuchKey").into(),
        };
        assert!(!s3.is_config());
        assert_eq!(error_chain(&s3), "s3://b/k: reading failed: NoSuchKey");
        let nothing = ControlError::NoJobsTask {
            campaign: "c".into(),
            cluster: "jobs".into(),
            reasons: Vec::new(),
        };
        assert_eq!(
            nothing.to_string(),
            "launching the quality jobs of `c` on ECS cluster jobs: no task started: ECS returned neither a task nor a failure"
        );
    }

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
