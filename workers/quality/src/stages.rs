//! The filtering stages (SPEC "Quality pipeline"), applied in order to every trajectory of a
//! campaign: structural validity → execution verification → heuristics → deduplication →
//! the optional second verifier. Each stage's verdict is kept per trajectory, so the funnel
//! (how many survive each stage, and why the others did not) is visible.
//!
//! Pure functions of the records and the campaign's `[quality]` thresholds: no storage, no
//! DuckDB. The stages that judge one record alone run as it is read ([`Facts::of`]);
//! dedup and the judge's verdicts are applied over the whole campaign ([`assess`]).
//! Stages after the first failure are `skipped`.

use crate::features::Features;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use synthfleet_core::campaign::QualityConfig;
use synthfleet_core::trajectory::{ExitStatus, Role, TrajectoryRecord};

/// The stages, in the order they filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Structural,
    Execution,
    Heuristics,
    Dedup,
    Judge,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Structural,
        Stage::Execution,
        Stage::Heuristics,
        Stage::Dedup,
        Stage::Judge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Structural => "structural",
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
    /// The shape of the action sequence (see [`Features::pattern`]).
    pub pattern: String,
    pub patch_hash: Option<String>,
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

/// Structural validity: the record is complete and well formed.
fn structural(record: &TrajectoryRecord) -> Verdict {
    let Some(exit) = &record.exit_status else {
        return Verdict::fail("no exit status: the rollout never finished");
    };
    if let ExitStatus::Error(_) = exit {
        return Verdict::fail(format!(
            "rollout ended in {exit}: {}",
            record.error.as_deref().unwrap_or("no detail")
        ));
    }
    if exit == &ExitStatus::BudgetExhausted {
        return Verdict::fail("rollout cut short by the campaign budget");
    }
    if !matches!(
        record.messages.first().map(|m| m.role),
        Some(Role::System | Role::User)
    ) {
        return Verdict::fail("messages do not start with a system or user message");
    }
    if !record.messages.iter().any(|m| m.role == Role::Assistant) {
        return Verdict::fail("no assistant message");
    }
    // Every tool call is answered, and every tool answer belongs to a call.
    let mut open: Vec<&str> = Vec::new();
    for message in &record.messages {
        match message.role {
            Role::Assistant => open.extend(message.tool_calls.iter().map(|c| c.id.as_str())),
            Role::Tool => {
                let Some(id) = message.tool_call_id.as_deref() else {
                    return Verdict::fail("a tool message has no tool_call_id");
                };
                let Some(at) = open.iter().position(|o| *o == id) else {
                    return Verdict::fail(format!("tool message answers unknown call `{id}`"));
                };
                open.remove(at);
            }
            _ => {}
        }
    }
    if let Some(id) = open.first() {
        return Verdict::fail(format!("tool call `{id}` has no answer"));
    }
    if record.steps.len() != record.totals.n_steps as usize {
        return Verdict::fail(format!(
            "{} steps recorded but totals say {}",
            record.steps.len(),
            record.totals.n_steps
        ));
    }
    if let Some((i, step)) = record
        .steps
        .iter()
        .enumerate()
        .find(|(i, s)| s.index as usize != *i)
    {
        return Verdict::fail(format!("step {i} is numbered {}", step.index));
    }
    Verdict::Pass
}

/// Execution verification: the eval ran in a fresh sandbox and resolved the task. The
/// agent's own claim never counts.
fn execution(record: &TrajectoryRecord) -> Verdict {
    match &record.verification {
        None => Verdict::fail("never verified"),
        Some(v) if !v.patch_applied => Verdict::fail("the patch did not apply to a fresh sandbox"),
        Some(v) if !v.resolved => Verdict::fail(match v.eval_exit_code {
            Some(code) => format!("eval failed (exit code {code})"),
            None => "eval did not finish".to_owned(),
        }),
        Some(_) => Verdict::Pass,
    }
}

/// Heuristics: loops, error ratio, step bounds, truncated observations.
fn heuristics(record: &TrajectoryRecord, config: &QualityConfig, max_steps: u32) -> Verdict {
    let steps = &record.steps;
    let mut run = 1;
    for pair in steps.windows(2) {
        let same = pair[0].action.is_some() && pair[0].action == pair[1].action;
        run = if same { run + 1 } else { 1 };
        if run >= config.max_repeated_actions {
            let action = pair[1].action.as_deref().unwrap_or_default();
            return Verdict::fail(format!(
                "action loop: `{}` repeated {run} times in a row",
                first_line(action)
            ));
        }
    }
    let n = steps.len() as u32;
    if n < config.min_steps {
        return Verdict::fail(format!(
            "{n} steps, fewer than min_steps = {}",
            config.min_steps
        ));
    }
    if n > max_steps {
        return Verdict::fail(format!("{n} steps, more than max_steps = {max_steps}"));
    }
    if !steps.is_empty() {
        let total = steps.len() as f64;
        let errors = steps
            .iter()
            .filter(|s| s.format_error || s.timed_out || s.exit_code.is_some_and(|c| c != 0))
            .count() as f64;
        if errors / total > config.max_error_ratio {
            return Verdict::fail(format!(
                "{errors} of {total} steps failed, above max_error_ratio = {}",
                config.max_error_ratio
            ));
        }
        let truncated = steps.iter().filter(|s| s.observation_truncated).count() as f64;
        if truncated / total > config.max_truncated_ratio {
            return Verdict::fail(format!(
                "{truncated} of {total} observations truncated, above max_truncated_ratio = {}",
                config.max_truncated_ratio
            ));
        }
    }
    Verdict::Pass
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    line.get(..60).unwrap_or(line)
}

/// What the stages need of one record, computed when it is read: the verdicts of the
/// stages that look at one record alone, and the features dedup compares. The record
/// itself (its conversation) is not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub trajectory_id: String,
    pub instance_id: String,
    pub model: String,
    pub started_at: DateTime<Utc>,
    pub structural: Verdict,
    pub execution: Verdict,
    pub heuristics: Verdict,
    pub features: Features,
}

impl Facts {
    pub fn of(record: &TrajectoryRecord, config: &QualityConfig, scaffold_max_steps: u32) -> Facts {
        let max_steps = config.max_steps.unwrap_or(scaffold_max_steps);
        Facts {
            trajectory_id: record.trajectory_id.clone(),
            instance_id: record.instance_id.clone(),
            model: record.model.clone(),
            started_at: record.timings.started_at,
            structural: structural(record),
            execution: execution(record),
            heuristics: heuristics(record, config, max_steps),
            features: Features::of(record),
        }
    }
}

/// Runs every stage over a campaign's trajectories; the assessments come in the order of
/// `facts`. `judged` holds the judge's cached verdicts (`None`: no judge configured).
pub fn assess(
    facts: &[&Facts],
    config: &QualityConfig,
    judged: Option<&HashMap<String, JudgeVerdict>>,
) -> Vec<Assessment> {
    // Oldest first, so that of two duplicates the first one made is kept.
    let mut order: Vec<usize> = (0..facts.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&facts[*a], &facts[*b]);
        (a.started_at, &a.trajectory_id).cmp(&(b.started_at, &b.trajectory_id))
    });
    let mut kept: HashMap<&str, Vec<&Facts>> = HashMap::new();
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
        decide(Stage::Structural, &mut || f.structural.clone());
        decide(Stage::Execution, &mut || f.execution.clone());
        decide(Stage::Heuristics, &mut || f.heuristics.clone());
        let same_task = kept.entry(f.instance_id.as_str()).or_default();
        decide(Stage::Dedup, &mut || {
            for other in same_task.iter() {
                let other_id = &other.trajectory_id;
                if other.features.action_hash == f.features.action_hash {
                    duplicate_of = Some(other_id.clone());
                    return Verdict::fail(format!("exact duplicate of {other_id} (same actions)"));
                }
                let similarity = other.features.minhash.similarity(&f.features.minhash);
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
            Some(judged) => match judged.get(&f.trajectory_id) {
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
            trajectory_id: f.trajectory_id.clone(),
            instance_id: f.instance_id.clone(),
            model: f.model.clone(),
            stages,
            accepted,
            duplicate_of,
            pattern: f.features.pattern.clone(),
            patch_hash: f.features.patch_hash.clone(),
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
