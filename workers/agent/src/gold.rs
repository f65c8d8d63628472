//! Gold-patch validation: every task's reference patch and the empty patch through the
//! same verification a rollout gets, `repeat` times each, in parallel, before any money is
//! spent. The verdict is core's (`gold::TaskResult::of_runs`, `gold::judge`); this runs them.

use crate::verify::Verifier;
use futures_util::StreamExt;
use synthfleet_core::campaign::Campaign;
use synthfleet_core::error_chain;
use synthfleet_core::gold::{Attempt, GoldReport, Problem, TaskResult};
use synthfleet_core::ports::SandboxProvider;
use synthfleet_core::task::Task;
use tracing::{Instrument, info, info_span};

/// Progress of a validation, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum GoldEvent {
    /// Every run of a task is in.
    Checked {
        instance_id: String,
        problem: Option<Problem>,
    },
}

/// Which patch a run verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patch {
    Gold,
    Empty,
}

impl Patch {
    /// As logs name it.
    fn as_str(self) -> &'static str {
        match self {
            Patch::Gold => "gold",
            Patch::Empty => "empty",
        }
    }
}

/// The runs of one task, filled in as they finish (in any order), kept by run index.
struct Pending {
    gold: Option<Vec<Option<Attempt>>>,
    empty: Vec<Option<Attempt>>,
    left: usize,
}

/// Validates every task of `campaign`: its reference patch and the empty patch, `repeat`
/// times each, every run in a fresh sandbox, `concurrency` sandboxes at a time — no more.
pub async fn validate_gold(
    campaign: &Campaign,
    sandboxes: &dyn SandboxProvider,
    concurrency: usize,
    repeat: u32,
    events: &(dyn Fn(GoldEvent) + Send + Sync),
) -> GoldReport {
    let verifier = Verifier {
        campaign,
        sandboxes,
    };
    let repeat = repeat.max(1);
    let runs = repeat as usize;
    let mut results: Vec<Option<TaskResult>> = vec![None; campaign.tasks.len()];
    let mut pending: Vec<Option<Pending>> = Vec::with_capacity(campaign.tasks.len());
    for (i, task) in campaign.tasks.iter().enumerate() {
        if task.is_verifiable() {
            let has_gold = reference(task).is_some();
            pending.push(Some(Pending {
                gold: has_gold.then(|| vec![None; runs]),
                empty: vec![None; runs],
                left: runs * if has_gold { 2 } else { 1 },
            }));
        } else {
            pending.push(None);
            let result = TaskResult {
                instance_id: task.instance_id.clone(),
                gold: None,
                empty: None,
                problem: Some(Problem::Unchecked {
                    detail: "the task has neither `eval` nor per-test `tests`".into(),
                }),
                runs: 0,
                gold_outcomes: None,
                empty_outcomes: None,
            };
            finished(events, &result);
            results[i] = Some(result);
        }
    }

    // One job per run (a run is one sandbox, created and removed within it), in task
    // order, so at most `concurrency` sandboxes exist at once and a task's runs finish
    // close together.
    let jobs = campaign
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, task)| task.is_verifiable())
        .flat_map(|(i, task)| {
            let patches = reference(task)
                .map(|gold| (Patch::Gold, gold))
                .into_iter()
                .chain([(Patch::Empty, "")]);
            patches.flat_map(move |(which, patch)| {
                (0..runs).map(move |run| (i, task, which, patch, run))
            })
        });
    let mut done = futures_util::stream::iter(jobs)
        .map(|(i, task, which, patch, run)| {
            let span =
                info_span!("gold", instance = %task.instance_id, patch = which.as_str(), run);
            let verifier = &verifier;
            async move {
                let attempt = verifier
                    .verify(task, patch)
                    .await
                    .map(|mut v| {
                        // The verdict needs the grade, not the log: keep memory flat.
                        v.output = String::new();
                        v
                    })
                    // What the report keeps of a run that could not run: its error's chain.
                    .map_err(|e| error_chain(&e));
                (i, which, run, attempt)
            }
            .instrument(span)
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((i, which, run, attempt)) = done.next().await {
        let Some(task_runs) = pending.get_mut(i).and_then(Option::as_mut) else {
            continue;
        };
        let slot = match which {
            Patch::Gold => task_runs.gold.as_mut().and_then(|g| g.get_mut(run)),
            Patch::Empty => task_runs.empty.get_mut(run),
        };
        if let Some(slot) = slot {
            *slot = Some(attempt);
        }
        task_runs.left = task_runs.left.saturating_sub(1);
        if task_runs.left > 0 {
            continue;
        }
        let Some(task_runs) = pending.get_mut(i).and_then(Option::take) else {
            continue;
        };
        let task = &campaign.tasks[i];
        let gold: Option<Vec<Attempt>> = task_runs.gold.map(|g| g.into_iter().flatten().collect());
        let empty: Vec<Attempt> = task_runs.empty.into_iter().flatten().collect();
        let result = TaskResult::of_runs(&task.instance_id, repeat, gold.as_deref(), &empty);
        info!(instance = %task.instance_id, runs = repeat,
            resolved_by_gold = result.gold_outcomes.as_ref().map(|o| o.resolved),
            resolved_by_empty = result.empty_outcomes.as_ref().map(|o| o.resolved),
            problem = result.problem.as_ref().map(tracing::field::display), "gold validation");
        finished(events, &result);
        results[i] = Some(result);
    }
    GoldReport {
        campaign: campaign.name().to_owned(),
        created_at: chrono::Utc::now(),
        tasks: results.into_iter().flatten().collect(),
    }
}

/// The task's reference patch, if it has one.
fn reference(task: &Task) -> Option<&str> {
    task.tests.as_ref().and_then(|t| t.gold_patch.as_deref())
}

fn finished(events: &(dyn Fn(GoldEvent) + Send + Sync), result: &TaskResult) {
    events(GoldEvent::Checked {
        instance_id: result.instance_id.clone(),
        problem: result.problem.clone(),
    });
}
