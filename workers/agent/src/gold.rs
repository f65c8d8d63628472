//! Gold-patch validation: every task's reference patch and the empty patch through the
//! same verification a rollout gets, in parallel, before any money is spent.

use crate::verify::Verifier;
use futures_util::StreamExt;
use synthfleet_core::campaign::Campaign;
use synthfleet_core::gold::{self, GoldReport, Problem, Run, TaskResult};
use synthfleet_core::ports::SandboxProvider;
use synthfleet_core::task::Task;
use synthfleet_core::trajectory::Verification;
use tracing::{Instrument, info, info_span};

/// Progress of a validation, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum GoldEvent {
    Checked {
        instance_id: String,
        problem: Option<Problem>,
    },
}

/// Validates every task of `campaign`, `concurrency` sandboxes at a time.
pub async fn validate_gold(
    campaign: &Campaign,
    sandboxes: &dyn SandboxProvider,
    concurrency: usize,
    events: &(dyn Fn(GoldEvent) + Send + Sync),
) -> GoldReport {
    let verifier = Verifier {
        campaign,
        sandboxes,
    };
    // Each task takes two sandboxes at once (reference and empty patch).
    let tasks = futures_util::stream::iter(&campaign.tasks)
        .map(|task| {
            let span = info_span!("gold", instance = %task.instance_id);
            validate_task(&verifier, task).instrument(span)
        })
        .buffered(concurrency.div_ceil(2).max(1))
        .inspect(|result| {
            events(GoldEvent::Checked {
                instance_id: result.instance_id.clone(),
                problem: result.problem.clone(),
            })
        })
        .collect::<Vec<_>>()
        .await;
    GoldReport {
        campaign: campaign.name().to_owned(),
        created_at: chrono::Utc::now(),
        tasks,
    }
}

async fn validate_task(verifier: &Verifier<'_>, task: &Task) -> TaskResult {
    let result = |gold: Option<Run>, empty: Option<Run>, problem: Option<Problem>| TaskResult {
        instance_id: task.instance_id.clone(),
        gold,
        empty,
        problem,
    };
    if !task.is_verifiable() {
        return result(
            None,
            None,
            Some(Problem::Unchecked {
                detail: "the task has neither `eval` nor per-test `tests`".into(),
            }),
        );
    }
    let reference = task.tests.as_ref().and_then(|t| t.gold_patch.as_deref());
    let gold_run = async {
        match reference {
            Some(patch) => Some(verifier.verify(task, patch).await),
            None => None,
        }
    };
    let (gold, empty) = tokio::join!(gold_run, verifier.verify(task, ""));
    let (gold, empty): (Option<Verification>, Verification) = match (gold.transpose(), empty) {
        (Ok(gold), Ok(empty)) => (gold, empty),
        (Err(e), _) | (_, Err(e)) => {
            return result(None, None, Some(Problem::Error { detail: e }));
        }
    };
    let mut problem = gold::judge(gold.as_ref(), Some(&empty));
    if problem.is_none() && gold.is_none() {
        problem = Some(Problem::Unchecked {
            detail: "the task has no reference patch; only the empty patch was checked".into(),
        });
    }
    info!(resolved_by_gold = ?gold.as_ref().map(|g| g.resolved), resolved_by_empty = empty.resolved,
        problem = ?problem, "gold validation");
    result(gold.as_ref().map(Run::of), Some(Run::of(&empty)), problem)
}
