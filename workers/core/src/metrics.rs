//! The fleet's CloudWatch metrics: their names, units and dimensions, and the log line
//! that publishes one data point in CloudWatch's embedded metric format (EMF).
//!
//! Workers log to CloudWatch Logs (`--log-format json`); CloudWatch Logs extracts a metric
//! from every log event that is an EMF document. [`emf`] builds that document; the caller
//! writes it as a line of its own (the whole event must be the JSON object, nothing before
//! or after it, so never as a field of a tracing event). The dashboard and alarms in
//! `infra/modules/monitoring` query exactly these names and dimension sets — CloudWatch
//! matches a metric by its full set of dimensions — and `tests/infra.rs` checks that they
//! do.
//!
//! Specification: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use crate::ports::LlmError;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every synthfleet metric.
pub const NAMESPACE: &str = "Synthfleet";

/// Dimension: the deployment's name prefix (Terraform's `name_prefix`).
pub const DEPLOYMENT: &str = "Deployment";
/// Dimension: the campaign (run) a data point belongs to.
pub const CAMPAIGN: &str = "Campaign";
/// Dimension of [`Metric::LlmErrors`]: what kind of failure ([`ErrorClass`]).
pub const ERROR_CLASS: &str = "ErrorClass";

/// The longest dimension value EMF accepts.
pub const MAX_DIMENSION_VALUE: usize = 1024;

const BY_CAMPAIGN: &[&[&str]] = &[&[DEPLOYMENT], &[DEPLOYMENT, CAMPAIGN]];
const FLEET_WIDE: &[&[&str]] = &[&[DEPLOYMENT]];
const BY_ERROR_CLASS: &[&[&str]] = &[
    &[DEPLOYMENT],
    &[DEPLOYMENT, ERROR_CLASS],
    &[DEPLOYMENT, CAMPAIGN, ERROR_CLASS],
];

/// A CloudWatch unit (the ones these metrics use), as `MetricDatum` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
    /// No unit: the value's meaning is in the metric's name (`SpendMicroUsd`).
    None,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::None => "None",
        }
    }
}

/// What the fleet publishes. Each data point carries `Deployment`; most also `Campaign`
/// when the point belongs to one (see [`Metric::dimension_sets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// 1 per committed trajectory.
    RolloutsCompleted,
    /// 1 per LLM call.
    LlmRequests,
    /// 1 per failed LLM call, with its [`ErrorClass`] as the `ErrorClass` dimension.
    LlmErrors,
    /// Micro-dollars booked to the ledger (settled calls); the spend rate is its `Sum` per
    /// period.
    SpendMicroUsd,
    /// How long a rollout waited for its sandbox.
    SandboxAcquireMs,
    /// A task message's age when a worker received it.
    QueueAgeS,
    /// 1 per worker heartbeat: `SampleCount` per minute ÷ beats per minute = live workers.
    WorkerHeartbeat,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::RolloutsCompleted,
        Metric::LlmRequests,
        Metric::LlmErrors,
        Metric::SpendMicroUsd,
        Metric::SandboxAcquireMs,
        Metric::QueueAgeS,
        Metric::WorkerHeartbeat,
    ];

    /// The metric's name in CloudWatch, and its member in the EMF document.
    pub fn name(self) -> &'static str {
        match self {
            Metric::RolloutsCompleted => "RolloutsCompleted",
            Metric::LlmRequests => "LlmRequests",
            Metric::LlmErrors => "LlmErrors",
            Metric::SpendMicroUsd => "SpendMicroUsd",
            Metric::SandboxAcquireMs => "SandboxAcquireMs",
            Metric::QueueAgeS => "QueueAgeS",
            Metric::WorkerHeartbeat => "WorkerHeartbeat",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Metric::RolloutsCompleted
            | Metric::LlmRequests
            | Metric::LlmErrors
            | Metric::WorkerHeartbeat => Unit::Count,
            Metric::SpendMicroUsd => Unit::None,
            Metric::SandboxAcquireMs => Unit::Milliseconds,
            Metric::QueueAgeS => Unit::Seconds,
        }
    }

    /// The dimension sets a data point is published under: each set is a metric of its own
    /// in CloudWatch, and a query names one of them exactly.
    pub fn dimension_sets(self) -> &'static [&'static [&'static str]] {
        match self {
            Metric::WorkerHeartbeat => FLEET_WIDE,
            Metric::LlmErrors => BY_ERROR_CLASS,
            _ => BY_CAMPAIGN,
        }
    }
}

/// Why an LLM call failed: the `ErrorClass` dimension of [`Metric::LlmErrors`].
///
/// [`ErrorClass::of`] classifies a call's final error, one class per kind of `LlmError`
/// (rate limits and timeouts are retried at the call; one that never went through is
/// `unavailable`); count each failed *call* once, so that `LlmErrors ÷ LlmRequests` (the
/// error-rate alarm) is a fraction of calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Unavailable,
    Malformed,
    Rejected,
    ContextExceeded,
    Config,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Unavailable,
        ErrorClass::Malformed,
        ErrorClass::Rejected,
        ErrorClass::ContextExceeded,
        ErrorClass::Config,
    ];

    /// The dimension's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Malformed => "malformed",
            ErrorClass::Rejected => "rejected",
            ErrorClass::ContextExceeded => "context_exceeded",
            ErrorClass::Config => "config",
        }
    }

    /// The class of a call's final error.
    pub fn of(error: &LlmError) -> ErrorClass {
        match error {
            LlmError::Unavailable { .. } => ErrorClass::Unavailable,
            LlmError::Malformed { .. } => ErrorClass::Malformed,
            LlmError::ContextExceeded { .. } => ErrorClass::ContextExceeded,
            LlmError::Rejected { .. } => ErrorClass::Rejected,
            LlmError::Config(_) => ErrorClass::Config,
        }
    }
}

/// A data point that cannot be written as EMF (CloudWatch would drop the event).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmfError {
    #[error("{metric:?}: a metric value must be a finite number, not {value}")]
    NotFinite { metric: Metric, value: f64 },
    #[error(
        "dimension {dimension}: a value must be 1 to {MAX_DIMENSION_VALUE} characters, not {length}"
    )]
    DimensionValue { dimension: String, length: usize },
    #[error(
        "extra member {key}: it would replace `_aws`, the deployment, the campaign, the metric's value or another extra; use another name"
    )]
    Reserved { key: String },
}

/// One data point of `metric` as an EMF document: `deployment` and `campaign` become
/// dimensions, and so does each of `extra` whose name one of the metric's dimension sets
/// uses (`ERROR_CLASS`); any other `extra` is a plain member, searchable in Logs Insights
/// but no dimension. A dimension set naming a dimension that is absent (`campaign` is
/// `None`, no `ErrorClass` given) is left out of the directive.
///
/// Write it as one line of its own (`to_string()` renders it compact, on one line).
pub fn emf(
    deployment: &str,
    campaign: Option<&str>,
    metric: Metric,
    value: f64,
    extra: &[(&str, &str)],
    at: DateTime<Utc>,
) -> Result<Value, EmfError> {
    if !value.is_finite() {
        return Err(EmfError::NotFinite { metric, value });
    }
    let mut root = Map::new();
    root.insert(DEPLOYMENT.to_owned(), Value::from(deployment));
    if let Some(campaign) = campaign {
        root.insert(CAMPAIGN.to_owned(), Value::from(campaign));
    }
    for (key, value) in extra {
        let reserved = ["_aws", DEPLOYMENT, CAMPAIGN, metric.name()];
        if reserved.contains(key) || root.contains_key(*key) {
            return Err(EmfError::Reserved {
                key: (*key).to_owned(),
            });
        }
        root.insert((*key).to_owned(), Value::from(*value));
    }

    let mut dimension_sets = Vec::new();
    for set in metric.dimension_sets() {
        if !set.iter().all(|d| root.contains_key(*d)) {
            continue;
        }
        for dimension in *set {
            let length = root[*dimension].as_str().map_or(0, |v| v.chars().count());
            if length == 0 || length > MAX_DIMENSION_VALUE {
                return Err(EmfError::DimensionValue {
                    dimension: (*dimension).to_owned(),
                    length,
                });
            }
        }
        dimension_sets.push(json!(set));
    }

    root.insert(metric.name().to_owned(), json!(value));
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimension_sets,
                "Metrics": [{ "Name": metric.name(), "Unit": metric.unit().as_str() }],
            }],
        }),
    );
    Ok(Value::Object(root))
}

/// One data point as a process measures it; a [`MetricSink`] publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    pub metric: Metric,
    /// The campaign it belongs to (none: fleet-wide, as the heartbeat).
    pub campaign: Option<String>,
    pub value: f64,
    /// The `ErrorClass` dimension of [`Metric::LlmErrors`].
    pub error_class: Option<ErrorClass>,
    pub at: DateTime<Utc>,
}

impl DataPoint {
    /// `value` of `metric`, measured now.
    pub fn now(metric: Metric, campaign: Option<&str>, value: f64) -> DataPoint {
        DataPoint {
            metric,
            campaign: campaign.map(str::to_owned),
            value,
            error_class: None,
            at: Utc::now(),
        }
    }

    /// A failed LLM call of `campaign`, of `class`: 1 [`Metric::LlmErrors`].
    pub fn llm_error(campaign: &str, class: ErrorClass) -> DataPoint {
        DataPoint {
            error_class: Some(class),
            ..DataPoint::now(Metric::LlmErrors, Some(campaign), 1.0)
        }
    }

    /// The point as an EMF document of `deployment` (see [`emf`]).
    pub fn emf(&self, deployment: &str) -> Result<Value, EmfError> {
        let class = self.error_class.map(|c| [(ERROR_CLASS, c.as_str())]);
        emf(
            deployment,
            self.campaign.as_deref(),
            self.metric,
            self.value,
            class.as_ref().map_or(&[], |c| c.as_slice()),
            self.at,
        )
    }
}

/// Where a process publishes its data points: in the fleet, EMF lines beside its JSON logs
/// (`synthfleet_term::logging::EmfLines`). Publishing never fails the work it measures.
pub trait MetricSink: Send + Sync {
    fn publish(&self, point: DataPoint);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MicroUsd;
    use chrono::TimeZone;
    use std::collections::BTreeSet;

    /// The units `MetricDatum` accepts (the EMF schema's pattern).
    const CLOUDWATCH_UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
            .single()
            .expect("a valid time")
    }

    #[test]
    fn a_campaigns_data_point_is_published_per_deployment_and_per_campaign() {
        let doc = emf(
            "acme",
            Some("nightly-202503010600"),
            Metric::SandboxAcquireMs,
            412.0,
            &[],
            at(),
        )
        .expect("a valid point");
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_740_830_400_000_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Synthfleet",
                        "Dimensions": [["Deployment"], ["Deployment", "Campaign"]],
                        "Metrics": [{ "Name": "SandboxAcquireMs", "Unit": "Milliseconds" }],
                    }],
                },
                "Deployment": "acme",
                "Campaign": "nightly-202503010600",
                "SandboxAcquireMs": 412.0,
            })
        );
    }

    #[test]
    fn sets_naming_an_absent_dimension_are_left_out() {
        let doc = emf("acme", None, Metric::RolloutsCompleted, 1.0, &[], at()).expect("valid");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Deployment"]])
        );
        assert!(doc.get(CAMPAIGN).is_none());
        assert_eq!(doc["RolloutsCompleted"], json!(1.0));

        // An error with its class: every set; without a campaign, the two that need none.
        let class = ErrorClass::of(&LlmError::Rejected {
            endpoint: "https://api.example.com".into(),
            status: 400,
            detail: "bad request".into(),
            billed: MicroUsd::ZERO,
        });
        let extra = [(ERROR_CLASS, class.as_str()), ("Model", "gpt-x")];
        let doc = emf("acme", Some("c1"), Metric::LlmErrors, 1.0, &extra, at()).expect("valid");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([
                ["Deployment"],
                ["Deployment", "ErrorClass"],
                ["Deployment", "Campaign", "ErrorClass"]
            ])
        );
        assert_eq!(doc["ErrorClass"], "rejected");
        assert_eq!(doc["Model"], "gpt-x", "a plain member, no dimension");
        let doc = emf("acme", None, Metric::LlmErrors, 1.0, &extra, at()).expect("valid");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Deployment"], ["Deployment", "ErrorClass"]])
        );

        // The heartbeat is fleet-wide: a campaign given is a plain member.
        let doc = emf("acme", Some("c1"), Metric::WorkerHeartbeat, 1.0, &[], at()).expect("ok");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Deployment"]])
        );
    }

    #[test]
    fn points_cloudwatch_would_drop_are_refused() {
        assert!(matches!(
            emf("acme", None, Metric::QueueAgeS, f64::NAN, &[], at()),
            Err(EmfError::NotFinite { .. })
        ));
        assert!(matches!(
            emf("", None, Metric::QueueAgeS, 1.0, &[], at()),
            Err(EmfError::DimensionValue { length: 0, .. })
        ));
        let long = "c".repeat(MAX_DIMENSION_VALUE + 1);
        assert!(matches!(
            emf("acme", Some(&long), Metric::QueueAgeS, 1.0, &[], at()),
            Err(EmfError::DimensionValue { length: 1025, .. })
        ));
        for key in ["_aws", DEPLOYMENT, CAMPAIGN, "QueueAgeS"] {
            assert_eq!(
                emf("acme", None, Metric::QueueAgeS, 1.0, &[(key, "x")], at()),
                Err(EmfError::Reserved { key: key.into() }),
                "{key}"
            );
        }
        assert_eq!(
            emf(
                "acme",
                None,
                Metric::LlmErrors,
                1.0,
                &[(ERROR_CLASS, "malformed"), (ERROR_CLASS, "malformed")],
                at()
            ),
            Err(EmfError::Reserved {
                key: ERROR_CLASS.into()
            }),
            "one value per member"
        );
        // A long value that is no dimension of this metric is only a member.
        assert!(emf("acme", Some(&long), Metric::WorkerHeartbeat, 1.0, &[], at()).is_ok());
    }

    #[test]
    fn a_data_point_carries_its_error_class_as_the_dimension() {
        let point = DataPoint {
            at: at(),
            ..DataPoint::llm_error("c1", ErrorClass::Malformed)
        };
        assert_eq!(
            point.emf("acme"),
            emf(
                "acme",
                Some("c1"),
                Metric::LlmErrors,
                1.0,
                &[(ERROR_CLASS, "malformed")],
                at()
            )
        );
        let beat = DataPoint {
            at: at(),
            ..DataPoint::now(Metric::WorkerHeartbeat, None, 1.0)
        };
        assert_eq!(
            beat.emf("acme"),
            emf("acme", None, Metric::WorkerHeartbeat, 1.0, &[], at())
        );
    }

    #[test]
    fn names_are_unique_units_valid_and_every_set_starts_with_the_deployment() {
        let names: BTreeSet<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Metric::ALL.len());
        for metric in Metric::ALL {
            assert!(
                CLOUDWATCH_UNITS.contains(&metric.unit().as_str()),
                "{metric:?}"
            );
            assert!(
                ![DEPLOYMENT, CAMPAIGN, ERROR_CLASS, "_aws"].contains(&metric.name()),
                "{metric:?}'s name is a member of its own"
            );
            for set in metric.dimension_sets() {
                assert_eq!(set.first(), Some(&DEPLOYMENT), "{metric:?}");
                assert!(set.len() <= 30);
            }
        }
        let classes: BTreeSet<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(classes.len(), ErrorClass::ALL.len());
    }
}
