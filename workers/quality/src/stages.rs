//! The filtering stages (SPEC "Quality pipeline"), applied in order to every trajectory of a
//! campaign: structural validity → integrity (no sign of reward hacking) → execution
//! verification → heuristics → deduplication → the optional second verifier. Each stage's verdict is kept per trajectory, so the funnel
//! (how many survive each stage, and why the others did not) is visible.
//!
//! Pure functions of the trajectories' facts ([`TrajectoryFacts`], derived once from each
//! record) and the campaign's `[quality]` thresholds: no storage, no DuckDB, no record.
//! Stages after the first failure are `skipped`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use synthfleet_core::campaign::QualityConfig;
use synthfleet_core::facts::{Measures, TrajectoryFacts};
use synthfleet_core::hacks::{Finding, Signal};

/// The stages, in the order they filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Structural,
    /// No sign of reward hacking (`synthfleet_core::hacks`): a trajectory that read the
    /// answer out of history, edited the tests or the harness, or called the network is
    /// `suspect`, whatever its grade.
    Integrity,
    Execution,
    Heuristics,
    Dedup,
    Judge,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Structural,
        Stage::Integrity,
        Stage::Execution,
        Stage::Heuristics,
        Stage::Dedup,
        Stage::Judge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Structural => "structural",
            Stage::Integrity => "integrity",
            Stage::Execution => "execution",
            Stage::Heuristics => "heuristics",
            Stage::Dedup => "dedup",
            Stage::Judge => "judge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail {
        reason: String,
    },
    /// An earlier stage rejected the trajectory, or the stage is not configured.
    Skipped {
        reason: String,
    },
}

impl Verdict {
    pub fn fail(reason: impl Into<String>) -> Verdict {
        Verdict::Fail {
            reason: reason.into(),
        }
    }

    pub fn skipped(reason: impl Into<String>) -> Verdict {
        Verdict::Skipped {
            reason: reason.into(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail { .. } => "fail",
            Verdict::Skipped { .. } => "skipped",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Pass => None,
            Verdict::Fail { reason } | Verdict::Skipped { reason } => Some(reason),
        }
    }
}

/// What the judge said of one trajectory (cached, so a re-run does not pay twice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeVerdict {
    pub trajectory_id: String,
    pub model: String,
    pub pass: bool,
    pub reason: String,
    pub cost_usd: f64,
}

/// Every stage's verdict for one trajectory, and the features the later reports use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub trajectory_id: String,
    pub instance_id: String,
    pub model: String,
    pub stages: BTreeMap<Stage, Verdict>,
    /// Passed every stage.
    pub accepted: bool,
    /// The trajectory this one duplicates (exactly or nearly), when dedup rejected it.
    pub duplicate_of: Option<String>,
    /// The shape of the action sequence (see [`TrajectoryFacts::pattern`]).
    pub pattern: String,
    pub patch_hash: Option<String>,
    /// The kinds of reward hacking its facts show (empty: none), counted whatever the
    /// funnel did with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Vec<Signal>,
}

impl Assessment {
    pub fn verdict(&self, stage: Stage) -> &Verdict {
        static SKIPPED: Verdict = Verdict::Skipped {
            reason: String::new(),
        };
        self.stages.get(&stage).unwrap_or(&SKIPPED)
    }

    /// Whether the trajectory is still in after `stage`: a stage runs only on the survivors
    /// of the earlier ones, so passing it means passing all of them.
    pub fn survived(&self, stage: Stage) -> bool {
        self.verdict(stage) == &Verdict::Pass
    }

    /// The first stage that rejected this trajectory.
    pub fn rejected_at(&self) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|s| matches!(self.verdict(*s), Verdict::Fail { .. }))
    }
}

/// A stage's verdict on one trajectory from its facts' failure reason.
fn verdict(failure: &Option<String>) -> Verdict {
    failure.as_ref().map_or(Verdict::Pass, Verdict::fail)
}

/// Integrity: every reward-hacking signal found, with where it was seen.
fn integrity(findings: &[Finding]) -> Verdict {
    if findings.is_empty() {
        return Verdict::Pass;
    }
    let seen: Vec<String> = findings
        .iter()
        .map(|f| match f.step {
            Some(step) => format!("{} (step {step}: `{}`)", f.signal, first_line(&f.evidence)),
            None => format!("{} ({})", f.signal, f.evidence),
        })
        .collect();
    Verdict::fail(format!("suspect: {}", seen.join("; ")))
}

/// Execution on a task gold validation found flaky: its grade cannot be trusted, so a
/// resolved trajectory of it is marked (an unresolved one already fails).
fn execution(f: &TrajectoryFacts, flaky: &BTreeMap<String, Vec<String>>) -> Verdict {
    match (&f.execution_failure, flaky.get(&f.summary.instance_id)) {
        (Some(failure), _) => Verdict::fail(failure),
        (None, Some(tests)) if tests.is_empty() => {
            Verdict::fail("the task is flaky: its eval changed outcome between gold runs")
        }
        (None, Some(tests)) => Verdict::fail(format!(
            "the task is flaky: {} changed outcome between gold runs",
            tests.join(", ")
        )),
        (None, None) => Verdict::Pass,
    }
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(120) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}

/// Heuristics: loops, error ratio, step bounds, truncated observations — the facts'
/// measures against the thresholds.
fn heuristics(m: &Measures, config: &QualityConfig, max_steps: u32) -> Verdict {
    // A loop is an action run twice or more in a row.
    if m.longest_repeat >= config.max_repeated_actions.max(2) {
        return Verdict::fail(format!(
            "action loop: `{}` repeated {} times in a row",
            m.repeated_action, m.longest_repeat
        ));
    }
    let n = m.steps;
    if n < config.min_steps {
        return Verdict::fail(format!(
            "{n} steps, fewer than min_steps = {}",
            config.min_steps
        ));
    }
    if n > max_steps {
        return Verdict::fail(format!("{n} steps, more than max_steps = {max_steps}"));
    }
    if n > 0 {
        let total = f64::from(n);
        let errors = f64::from(m.failed_steps);
        if errors / total > config.max_error_ratio {
            return Verdict::fail(format!(
                "{errors} of {total} steps failed, above max_error_ratio = {}",
                config.max_error_ratio
            ));
        }
        let truncated = f64::from(m.truncated_observations);
        if truncated / total > config.max_truncated_ratio {
            return Verdict::fail(format!(
                "{truncated} of {total} observations truncated, above max_truncated_ratio = {}",
                config.max_truncated_ratio
            ));
        }
    }
    Verdict::Pass
}

/// Runs every stage over a campaign's trajectories; the assessments come in the order of
/// `facts`. `scaffold_max_steps` is the step bound when `[quality] max_steps` is unset;
/// `judged` holds the judge's cached verdicts (`None`: no judge configured); `flaky` the
/// tasks gold validation found flaky, with the tests that changed outcome.
pub fn assess(
    facts: &[&TrajectoryFacts],
    config: &QualityConfig,
    scaffold_max_steps: u32,
    judged: Option<&HashMap<String, JudgeVerdict>>,
    flaky: &BTreeMap<String, Vec<String>>,
) -> Vec<Assessment> {
    let max_steps = config.max_steps.unwrap_or(scaffold_max_steps);
    // Oldest first, so that of two duplicates the first one made is kept.
    let mut order: Vec<usize> = (0..facts.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&facts[*a], &facts[*b]);
        (a.started_at, &a.summary.trajectory_id).cmp(&(b.started_at, &b.summary.trajectory_id))
    });
    let mut kept: HashMap<&str, Vec<&TrajectoryFacts>> = HashMap::new();
    let mut out: Vec<Option<Assessment>> = vec![None; facts.len()];
    for i in order {
        let f = facts[i];
        let mut stages = BTreeMap::new();
        let mut duplicate_of = None;
        let mut alive = true;
        let mut decide = |stage: Stage, verdict: &mut dyn FnMut() -> Verdict| {
            let verdict = if alive {
                verdict()
            } else {
                Verdict::skipped("rejected by an earlier stage")
            };
            alive &= verdict == Verdict::Pass;
            stages.insert(stage, verdict);
        };
        decide(Stage::Structural, &mut || verdict(&f.structural_failure));
        decide(Stage::Integrity, &mut || integrity(&f.hack_signals));
        decide(Stage::Execution, &mut || execution(f, flaky));
        decide(Stage::Heuristics, &mut || {
            heuristics(&f.measures, config, max_steps)
        });
        let same_task = kept.entry(f.summary.instance_id.as_str()).or_default();
        decide(Stage::Dedup, &mut || {
            for other in same_task.iter() {
                let other_id = &other.summary.trajectory_id;
                if other.action_hash == f.action_hash {
                    duplicate_of = Some(other_id.clone());
                    return Verdict::fail(format!("exact duplicate of {other_id} (same actions)"));
                }
                let similarity = other.minhash.similarity(&f.minhash);
                if similarity >= config.near_duplicate_threshold {
                    duplicate_of = Some(other_id.clone());
                    return Verdict::fail(format!(
                        "near duplicate of {other_id} (action similarity {similarity:.2})"
                    ));
                }
            }
            Verdict::Pass
        });
        decide(Stage::Judge, &mut || match judged {
            None => Verdict::skipped("no judge configured"),
            Some(judged) => match judged.get(&f.summary.trajectory_id) {
                None => Verdict::fail("not judged yet: run `synthfleet assess`"),
                Some(j) if j.pass => Verdict::Pass,
                Some(j) => Verdict::fail(format!("judge {}: {}", j.model, j.reason)),
            },
        });
        let accepted = stages
            .iter()
            .all(|(stage, v)| v == &Verdict::Pass || (*stage == Stage::Judge && judged.is_none()));
        if stages.get(&Stage::Dedup) == Some(&Verdict::Pass) {
            same_task.push(f);
        }
        out[i] = Some(Assessment {
            trajectory_id: f.summary.trajectory_id.clone(),
            instance_id: f.summary.instance_id.clone(),
            model: f.summary.model.clone(),
            stages,
            accepted,
            duplicate_of,
            pattern: f.pattern.clone(),
            patch_hash: f.patch_hash.clone(),
            suspect: {
                let mut signals: Vec<Signal> = f.hack_signals.iter().map(|h| h.signal).collect();
                signals.sort();
                signals.dedup();
                signals
            },
        });
    }
    out.into_iter().flatten().collect()
}

/// Survivors after each stage, in order: `[(total)], (structural, n), ...`.
pub fn funnel(assessments: &[Assessment], judge_configured: bool) -> Vec<(String, u64)> {
    let mut rows = vec![("total".to_owned(), assessments.len() as u64)];
    for stage in Stage::ALL {
        if stage == Stage::Judge && !judge_configured {
            continue;
        }
        let n = assessments.iter().filter(|a| a.survived(stage)).count();
        rows.push((stage.as_str().to_owned(), n as u64));
    }
    rows
}
