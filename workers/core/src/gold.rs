//! Gold-patch validation: does a task's harness work before money is spent on it?
//!
//! `synthfleet validate --gold` runs each task's reference patch and the empty patch
//! through the same verification as a rollout (`--repeat N`: N times each, every run in a
//! fresh sandbox). A task is broken when the reference patch does not resolve it, or when
//! the empty patch already does (SWE-bench itself shipped such instances), or when it is
//! flaky: a FAIL_TO_PASS or PASS_TO_PASS test (for a task graded by its eval script only,
//! `resolved`) changed outcome between runs of the same patch. The report is stored beside
//! the campaign; a campaign with `skip_broken_tasks = true` leaves the broken tasks out when
//! it is enqueued.

use crate::ports::{ObjectStore, StoreError};
use crate::task::Task;
use crate::trajectory::Verification;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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

/// How the completed runs of one patch went, together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Runs whose verification ran (the ones that failed to run are not counted).
    pub runs: u32,
    /// Of those, the runs that resolved the task.
    pub resolved: u32,
    /// The FAIL_TO_PASS / PASS_TO_PASS tests that did not pass in every run, with the runs
    /// that passed and failed them (a run that skipped a test its harness does not count
    /// is in neither). A test absent here passed in every run, or was never counted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tests: BTreeMap<String, TestCounts>,
}

/// In how many runs one test passed and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub passed: u32,
    pub failed: u32,
}

impl Outcomes {
    pub fn of(runs: &[Verification]) -> Outcomes {
        let mut counts: BTreeMap<String, TestCounts> = BTreeMap::new();
        for v in runs {
            for split in v.fail_to_pass.iter().chain(&v.pass_to_pass) {
                for test in &split.passed {
                    counts.entry(test.clone()).or_default().passed += 1;
                }
                for test in &split.failed {
                    counts.entry(test.clone()).or_default().failed += 1;
                }
            }
        }
        let runs_n = count(runs.len());
        counts.retain(|_, c| c.passed != runs_n);
        Outcomes {
            runs: runs_n,
            resolved: count(runs.iter().filter(|v| v.resolved).count()),
            tests: counts,
        }
    }

    /// The tests whose outcome (passed, failed, not counted) differed between runs.
    pub fn flaky_tests(&self) -> impl Iterator<Item = &str> {
        self.tests.iter().filter_map(|(test, c)| {
            let uncounted = self.runs.saturating_sub(c.passed + c.failed);
            let outcomes = [c.passed, c.failed, uncounted];
            (outcomes.iter().filter(|n| **n > 0).count() > 1).then_some(test.as_str())
        })
    }

    /// Some runs resolved the task and others did not.
    pub fn resolved_changed(&self) -> bool {
        self.resolved > 0 && self.resolved < self.runs
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The validation of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub instance_id: String,
    /// The reference patch's first completed run; `None` when the task has no reference
    /// patch (or no run of it completed).
    pub gold: Option<Run>,
    /// The empty patch's first completed run.
    pub empty: Option<Run>,
    /// Why the task is broken, or why it could not be checked; `None` when it is sound.
    pub problem: Option<Problem>,
    /// How many times each patch was run (`validate --gold --repeat`); 1 in reports written
    /// before repeats existed.
    #[serde(default = "one_run")]
    pub runs: u32,
    /// The reference patch's completed runs together (absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_outcomes: Option<Outcomes>,
    /// The empty patch's completed runs together (absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_outcomes: Option<Outcomes>,
}

fn one_run() -> u32 {
    1
}

/// One run of a patch: its verification, or why verification could not run (an
/// infrastructure failure, not a verdict).
pub type Attempt = Result<Verification, String>;

impl TaskResult {
    /// The result of a task from all its runs: of the reference patch (`None` when the task
    /// has none) and of the empty patch, `runs` of each asked for. A flaky verdict stands
    /// even when some runs failed to run (what did run already changed outcome); otherwise
    /// a run that failed to run makes the result an [`Problem::Error`], not a verdict.
    pub fn of_runs(
        instance_id: &str,
        runs: u32,
        gold: Option<&[Attempt]>,
        empty: &[Attempt],
    ) -> TaskResult {
        let completed = |attempts: &[Attempt]| -> Vec<Verification> {
            attempts
                .iter()
                .filter_map(|a| a.as_ref().ok())
                .cloned()
                .collect()
        };
        let gold_ok = gold.map(completed);
        let empty_ok = completed(empty);
        let errors: Vec<&str> = gold
            .unwrap_or_default()
            .iter()
            .chain(empty)
            .filter_map(|a| a.as_ref().err().map(String::as_str))
            .collect();
        let attempted = gold.map_or(0, <[Attempt]>::len) + empty.len();
        let mut problem = judge(gold_ok.as_deref().unwrap_or_default(), &empty_ok);
        if !matches!(problem, Some(Problem::Flaky { .. }))
            && let Some(first) = errors.first()
        {
            problem = Some(Problem::Error {
                detail: if attempted == 1 {
                    (*first).to_owned()
                } else {
                    format!("{} of {attempted} runs: {first}", errors.len())
                },
            });
        }
        if problem.is_none() && gold.is_none() {
            problem = Some(Problem::Unchecked {
                detail: "the task has no reference patch; only the empty patch was checked".into(),
            });
        }
        TaskResult {
            instance_id: instance_id.to_owned(),
            gold: gold_ok.as_ref().and_then(|g| g.first()).map(Run::of),
            empty: empty_ok.first().map(Run::of),
            problem,
            runs,
            gold_outcomes: gold_ok.as_deref().map(Outcomes::of),
            empty_outcomes: Some(Outcomes::of(&empty_ok)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The reference patch does not resolve the task.
    GoldFails { detail: String },
    /// The task is resolved without any change.
    EmptyPasses,
    /// Runs of the same patch disagreed: `tests` changed outcome between them (empty for a
    /// task graded by its eval script only, whose `resolved` changed). `runs`: of each patch.
    Flaky { tests: Vec<String>, runs: u32 },
    /// The task has no reference patch or no verification: it could not be checked.
    Unchecked { detail: String },
    /// Verification could not run (the sandbox failed): not a verdict on the task.
    Error { detail: String },
}

impl Problem {
    /// A broken task: its labels would be wrong, or would depend on luck (flaky).
    /// Unchecked or failed runs are not verdicts.
    pub fn is_broken(&self) -> bool {
        matches!(
            self,
            Problem::GoldFails { .. } | Problem::EmptyPasses | Problem::Flaky { .. }
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::GoldFails { detail } => {
                write!(f, "the reference patch does not resolve it ({detail})")
            }
            Problem::EmptyPasses => f.write_str("the empty patch already resolves it"),
            Problem::Flaky { tests, runs } if tests.is_empty() => {
                write!(f, "flaky: the outcome changed between {runs} runs")
            }
            Problem::Flaky { tests, runs } => write!(
                f,
                "flaky: tests changed outcome between {runs} runs: {}",
                tests.join(", ")
            ),
            Problem::Unchecked { detail } => write!(f, "not checked: {detail}"),
            Problem::Error { detail } => write!(f, "verification failed to run: {detail}"),
        }
    }
}

/// The verdict on one task from all its completed runs: of the reference patch (none when
/// the task has no reference patch) and of the empty patch. Runs of the same patch that
/// disagree make the task flaky, which comes first: a reference patch that fails only
/// sometimes is flaky, not wrong. Otherwise (every run of a patch alike) the first run of
/// each decides.
pub fn judge(gold: &[Verification], empty: &[Verification]) -> Option<Problem> {
    let (gold_outcomes, empty_outcomes) = (Outcomes::of(gold), Outcomes::of(empty));
    let tests: BTreeSet<&str> = gold_outcomes
        .flaky_tests()
        .chain(empty_outcomes.flaky_tests())
        .collect();
    if !tests.is_empty() || gold_outcomes.resolved_changed() || empty_outcomes.resolved_changed() {
        return Some(Problem::Flaky {
            tests: tests.into_iter().map(str::to_owned).collect(),
            runs: gold_outcomes.runs.max(empty_outcomes.runs),
        });
    }
    let gold_problem = gold.first().and_then(|g| {
        (!g.resolved).then(|| Problem::GoldFails {
            detail: if !g.patch_applied {
                "it does not apply".to_owned()
            } else {
                let failed = Run::of(g).failed_tests;
                if failed.is_empty() {
                    match g.eval_exit_code {
                        Some(code) => format!("eval exited with {code}"),
                        None => "eval ended without an exit code (killed or timed out)".to_owned(),
                    }
                } else {
                    format!("failing: {}", failed.join(", "))
                }
            },
        })
    });
    gold_problem.or_else(|| {
        empty
            .first()
            .filter(|e| e.resolved)
            .map(|_| Problem::EmptyPasses)
    })
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

    /// The flaky tasks (instance id → the tests that changed outcome; empty for a task
    /// graded by its eval script only).
    pub fn flaky(&self) -> BTreeMap<&str, &[String]> {
        self.tasks
            .iter()
            .filter_map(|t| match &t.problem {
                Some(Problem::Flaky { tests, .. }) => {
                    Some((t.instance_id.as_str(), tests.as_slice()))
                }
                _ => None,
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Harness, TestSplit};

    const F2P: &str = "tests/test_x.py::test_fix";
    const P2P: &str = "tests/test_x.py::test_old";

    /// A per-test run: `F2P` passed or not, `P2P` always passed.
    fn graded(f2p_passes: bool) -> Verification {
        let (passed, failed) = if f2p_passes {
            (vec![F2P.to_owned()], vec![])
        } else {
            (vec![], vec![F2P.to_owned()])
        };
        Verification {
            eval_exit_code: Some(if f2p_passes { 0 } else { 1 }),
            resolved: f2p_passes,
            reward: if f2p_passes { 1.0 } else { 0.0 },
            patch_applied: true,
            output: String::new(),
            duration_ms: 1,
            harness: Some(Harness::SweBench),
            fail_to_pass: Some(TestSplit { passed, failed }),
            pass_to_pass: Some(TestSplit {
                passed: vec![P2P.to_owned()],
                failed: vec![],
            }),
            resolution: None,
        }
    }

    /// A run of a task graded by its eval script only.
    fn eval_only(resolved: bool) -> Verification {
        Verification {
            harness: None,
            fail_to_pass: None,
            pass_to_pass: None,
            eval_exit_code: Some(if resolved { 0 } else { 1 }),
            ..graded(resolved)
        }
    }

    #[test]
    fn stable_gold_and_stable_empty_are_sound() {
        let gold = vec![graded(true); 5];
        let empty = vec![graded(false); 5];
        assert_eq!(judge(&gold, &empty), None);
        let attempts = |runs: &[Verification]| runs.iter().cloned().map(Ok).collect::<Vec<_>>();
        let result = TaskResult::of_runs("t", 5, Some(&attempts(&gold)), &attempts(&empty));
        assert_eq!(result.problem, None);
        assert_eq!(result.runs, 5);
        let outcomes = result.gold_outcomes.expect("gold outcomes");
        assert_eq!((outcomes.runs, outcomes.resolved), (5, 5));
        assert!(outcomes.tests.is_empty(), "{outcomes:?}");
        let empty = result.empty_outcomes.expect("empty outcomes");
        assert_eq!(
            empty.tests.get(F2P),
            Some(&TestCounts {
                passed: 0,
                failed: 5
            })
        );
    }

    #[test]
    fn a_fail_to_pass_test_passing_in_two_of_five_gold_runs_is_flaky() {
        let gold = [
            graded(false),
            graded(true),
            graded(false),
            graded(true),
            graded(false),
        ];
        let empty = vec![graded(false); 5];
        let problem = judge(&gold, &empty);
        assert_eq!(
            problem,
            Some(Problem::Flaky {
                tests: vec![F2P.to_owned()],
                runs: 5
            }),
            "flaky, not GoldFails, although the first gold run failed"
        );
        let problem = problem.expect("a problem");
        assert!(problem.is_broken());
        assert_eq!(
            problem.to_string(),
            format!("flaky: tests changed outcome between 5 runs: {F2P}")
        );
        let attempts: Vec<Attempt> = gold.iter().cloned().map(Ok).collect();
        let empty: Vec<Attempt> = empty.into_iter().map(Ok).collect();
        let result = TaskResult::of_runs("t", 5, Some(&attempts), &empty);
        assert_eq!(
            result
                .gold_outcomes
                .as_ref()
                .expect("outcomes")
                .tests
                .get(F2P),
            Some(&TestCounts {
                passed: 2,
                failed: 3
            })
        );
        let report = GoldReport {
            campaign: "c".into(),
            created_at: Utc::now(),
            tasks: vec![result],
        };
        assert_eq!(
            report.flaky(),
            BTreeMap::from([("t", [F2P.to_owned()].as_slice())])
        );
        assert_eq!(report.broken(), BTreeSet::from(["t"]));
    }

    #[test]
    fn a_test_skipped_in_some_runs_changed_outcome() {
        let mut skipped = graded(true);
        skipped.pass_to_pass = Some(TestSplit::default());
        assert_eq!(
            judge(&[graded(true), skipped], &[graded(false), graded(false)]),
            Some(Problem::Flaky {
                tests: vec![P2P.to_owned()],
                runs: 2
            })
        );
    }

    #[test]
    fn an_eval_only_task_resolved_in_some_runs_is_flaky_without_tests() {
        let gold = [eval_only(true), eval_only(true), eval_only(true)];
        let empty = [eval_only(false), eval_only(true), eval_only(false)];
        let problem = judge(&gold, &empty).expect("a problem");
        assert_eq!(
            problem,
            Problem::Flaky {
                tests: vec![],
                runs: 3
            }
        );
        assert_eq!(
            problem.to_string(),
            "flaky: the outcome changed between 3 runs"
        );
        assert_eq!(
            judge(&vec![eval_only(true); 3], &vec![eval_only(false); 3]),
            None,
            "stable eval-only runs are sound"
        );
    }

    #[test]
    fn gold_failing_every_time_fails_and_empty_passing_every_time_passes() {
        assert_eq!(
            judge(&vec![graded(false); 5], &vec![graded(false); 5]),
            Some(Problem::GoldFails {
                detail: format!("failing: {F2P}")
            })
        );
        assert_eq!(
            judge(&vec![graded(true); 5], &vec![graded(true); 5]),
            Some(Problem::EmptyPasses)
        );
        // One run each, as before repeats.
        assert_eq!(judge(&[graded(true)], &[graded(false)]), None);
    }

    #[test]
    fn runs_that_failed_to_run_are_errors_unless_the_others_are_already_flaky() {
        let infra = || -> Attempt { Err("docker went away".into()) };
        let result = TaskResult::of_runs(
            "t",
            2,
            Some(&[Ok(graded(true)), infra()]),
            &[Ok(graded(false)), Ok(graded(false))],
        );
        assert_eq!(
            result.problem,
            Some(Problem::Error {
                detail: "1 of 4 runs: docker went away".into()
            })
        );
        assert!(result.gold.is_some_and(|g| g.resolved));
        let result = TaskResult::of_runs(
            "t",
            3,
            Some(&[Ok(graded(true)), infra(), Ok(graded(false))]),
            &[Ok(graded(false)), Ok(graded(false)), Ok(graded(false))],
        );
        assert!(
            matches!(&result.problem, Some(Problem::Flaky { tests, runs: 3 }) if tests == &[F2P.to_owned()]),
            "{:?}",
            result.problem
        );
        let no_gold = TaskResult::of_runs("t", 1, None, &[Ok(graded(false))]);
        assert!(matches!(no_gold.problem, Some(Problem::Unchecked { .. })));
    }

    #[test]
    fn a_report_written_before_repeats_still_reads() {
        let old = r#"{
          "campaign": "swe-gold",
          "created_at": "2025-01-01T00:00:00Z",
          "tasks": [
            {"instance_id": "a", "gold": {"resolved": true, "patch_applied": true},
             "empty": {"resolved": false, "patch_applied": true,
                       "failed_tests": ["tests/test_calc.py::test_clamp_high"]},
             "problem": null},
            {"instance_id": "b", "gold": {"resolved": true, "patch_applied": true},
             "empty": {"resolved": true, "patch_applied": true},
             "problem": {"kind": "empty_passes"}},
            {"instance_id": "c", "gold": null, "empty": null,
             "problem": {"kind": "error", "detail": "no docker"}}
          ]
        }"#;
        let report: GoldReport = serde_json::from_str(old).expect("an old report reads");
        assert_eq!(report.tasks[0].runs, 1);
        assert_eq!(report.tasks[0].gold_outcomes, None);
        assert_eq!(report.broken(), BTreeSet::from(["b"]));
        assert!(report.flaky().is_empty());
        // And a new one round-trips.
        let mut report = report;
        report.tasks[0].problem = Some(Problem::Flaky {
            tests: vec![F2P.to_owned()],
            runs: 10,
        });
        report.tasks[0].runs = 10;
        let json = serde_json::to_string(&report).expect("serialize");
        assert_eq!(
            serde_json::from_str::<GoldReport>(&json).expect("read back"),
            report
        );
    }
}
