//! Gold-patch validation: does a task's harness work before money is spent on it?
//!
//! `synthfleet validate --gold` runs each task's reference patch and the empty patch
//! through the same verification as a rollout. A task is broken when the reference patch
//! does not resolve it, or when the empty patch already does (SWE-bench itself shipped such
//! instances). The report is stored beside the campaign; a campaign with
//! `skip_broken_tasks = true` leaves the broken tasks out when it is enqueued.

use crate::ports::{ObjectStore, StoreError};
use crate::task::Task;
use crate::trajectory::Verification;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// `gold/{campaign}/report.json`
pub fn report_key(campaign: &str) -> String {
    format!("gold/{campaign}/report.json")
}

/// What one run (reference or empty patch) gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub resolved: bool,
    pub patch_applied: bool,
    /// FAIL_TO_PASS / PASS_TO_PASS tests that failed (per-test harnesses only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tests: Vec<String>,
}

impl Run {
    pub fn of(v: &Verification) -> Run {
        Run {
            resolved: v.resolved,
            patch_applied: v.patch_applied,
            failed_tests: v
                .fail_to_pass
                .iter()
                .chain(&v.pass_to_pass)
                .flat_map(|split| split.failed.iter().cloned())
                .collect(),
        }
    }
}

/// The validation of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub instance_id: String,
    /// The reference patch's run; `None` when the task has no reference patch.
    pub gold: Option<Run>,
    pub empty: Option<Run>,
    /// Why the task is broken, or why it could not be checked; `None` when it is sound.
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The reference patch does not resolve the task.
    GoldFails { detail: String },
    /// The task is resolved without any change.
    EmptyPasses,
    /// The task has no reference patch or no verification: it could not be checked.
    Unchecked { detail: String },
    /// Verification could not run (the sandbox failed): not a verdict on the task.
    Error { detail: String },
}

impl Problem {
    /// A broken task: its labels would be wrong. Unchecked or failed runs are not
    /// verdicts.
    pub fn is_broken(&self) -> bool {
        matches!(self, Problem::GoldFails { .. } | Problem::EmptyPasses)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::GoldFails { detail } => {
                write!(f, "the reference patch does not resolve it ({detail})")
            }
            Problem::EmptyPasses => f.write_str("the empty patch already resolves it"),
            Problem::Unchecked { detail } => write!(f, "not checked: {detail}"),
            Problem::Error { detail } => write!(f, "verification failed to run: {detail}"),
        }
    }
}

/// The verdict on one task from its two runs.
pub fn judge(gold: Option<&Verification>, empty: Option<&Verification>) -> Option<Problem> {
    let gold_problem = gold.and_then(|g| {
        (!g.resolved).then(|| Problem::GoldFails {
            detail: if !g.patch_applied {
                "it does not apply".to_owned()
            } else {
                let failed = Run::of(g).failed_tests;
                if failed.is_empty() {
                    format!("eval exited with {:?}", g.eval_exit_code)
                } else {
                    format!("failing: {}", failed.join(", "))
                }
            },
        })
    });
    gold_problem.or_else(|| empty.filter(|e| e.resolved).map(|_| Problem::EmptyPasses))
}

/// What `validate --gold` found for a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldReport {
    pub campaign: String,
    pub created_at: DateTime<Utc>,
    pub tasks: Vec<TaskResult>,
}

impl GoldReport {
    /// Instance ids of the broken tasks.
    pub fn broken(&self) -> BTreeSet<&str> {
        self.tasks
            .iter()
            .filter(|t| t.problem.as_ref().is_some_and(Problem::is_broken))
            .map(|t| t.instance_id.as_str())
            .collect()
    }

    /// Of `tasks`, the ones this report does not cover.
    pub fn missing<'a>(&self, tasks: &'a [Task]) -> Vec<&'a str> {
        let covered: BTreeSet<&str> = self.tasks.iter().map(|t| t.instance_id.as_str()).collect();
        tasks
            .iter()
            .map(|t| t.instance_id.as_str())
            .filter(|id| !covered.contains(id))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GoldError {
    #[error(
        "campaign `{campaign}` sets skip_broken_tasks, but no gold report is stored for it: run `synthfleet validate --gold` on the campaign first"
    )]
    NoReport { campaign: String },
    #[error(
        "campaign `{campaign}` sets skip_broken_tasks, but {} task(s) were not gold-validated ({}): run `synthfleet validate --gold` again",
        missing.len(), missing.join(", ")
    )]
    NotValidated {
        campaign: String,
        missing: Vec<String>,
    },
    #[error(
        "the gold report {key} is not valid JSON ({detail}); run `synthfleet validate --gold` again"
    )]
    Invalid { key: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn put_report(objects: &dyn ObjectStore, report: &GoldReport) -> Result<(), GoldError> {
    let key = report_key(&report.campaign);
    let bytes = serde_json::to_vec_pretty(report).map_err(|e| GoldError::Invalid {
        key: key.clone(),
        detail: e.to_string(),
    })?;
    objects.put(&key, bytes).await?;
    Ok(())
}

/// The stored report of a campaign, if `validate --gold` ran.
pub async fn get_report(
    objects: &dyn ObjectStore,
    campaign: &str,
) -> Result<Option<GoldReport>, GoldError> {
    let key = report_key(campaign);
    let bytes = match objects.get(&key).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| GoldError::Invalid {
            key,
            detail: e.to_string(),
        })
}
