//! Preference pairs (`--format pairs`) in the conversational preference format of TRL's
//! DPO and reward trainers: `prompt` (the messages up to and including the first user
//! message: the system prompt and the task), `chosen` and `rejected` (the rest of each
//! conversation), all lists of messages, with `tools` and the two trajectories' ids,
//! rewards, models and steps beside them.
//!
//! Which trajectories make a pair is decided from the metadata alone, by a fixed rule
//! ([`plan`], and [`ABOUT`] in the dataset card):
//! 1. Only verified trajectories take part, and only trajectories of the same task and
//!    scaffold (name, version, protocol and prompt templates) are compared, so both sides
//!    saw the same prompt and tools.
//! 2. The chosen side is the resolved ones (with `--filter accepted`, only those that
//!    passed every quality stage), fewest steps first, then by trajectory id.
//! 3. Each in turn takes, as its rejected side, the unused unresolved trajectory closest
//!    to it in steps (a tie goes to the fewer steps, then the smaller trajectory id).
//! 4. A trajectory is in one pair at most: a group of r resolved and u unresolved
//!    trajectories gives min(r, u) pairs.

use super::{ExportRow, TOOLS};
use crate::dataset::{Column, ColumnType, col};
use crate::export::Filter;
use crate::stages::Assessment;
use crate::{Item, TrajectoryRow};
use serde::Serialize;
use std::collections::BTreeMap;
use synthfleet_core::trajectory::{ChatMessage, Role};

/// The rule, for the dataset card.
pub const ABOUT: &str = "## Pairs\n\nEach row is a preference pair in TRL's conversational format (`DPOTrainer`, `RewardTrainer`): `prompt` holds the messages up to and including the first user message (the system prompt and the task), `chosen` and `rejected` the rest of two conversations on that prompt. The pairs are drawn by a fixed rule: only verified trajectories of the same task and scaffold (name, version, protocol, prompt templates) are compared; the resolved ones (the chosen side; with filter `accepted`, only those that passed every quality stage) are taken fewest steps first (then by trajectory id), and each takes the unused unresolved trajectory closest to it in steps (ties: fewer steps, then trajectory id). A trajectory is in one pair at most.\n";

/// A trajectory with its verdicts.
type Candidate<'a> = (&'a Item, &'a Assessment);

/// A group's resolved (chosen) and unresolved (rejected) candidates.
type Sides<'a> = (Vec<Candidate<'a>>, Vec<Candidate<'a>>);

/// A chosen (resolved) and a rejected (unresolved) trajectory of one task and scaffold.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    pub chosen: Candidate<'a>,
    pub rejected: Candidate<'a>,
}

/// The pairs of `candidates` (verified trajectories), by the rule of the module's
/// documentation, in the order of (task, scaffold), then the chosen side's.
pub fn plan<'a>(candidates: &[Candidate<'a>], filter: Filter) -> Vec<Pair<'a>> {
    let mut groups: BTreeMap<(&str, &str), Sides<'a>> = BTreeMap::new();
    for &(item, a) in candidates {
        let (chosen, rejected) = groups
            .entry((
                item.row.summary.instance_id.as_str(),
                item.facts.scaffold_detail.as_str(),
            ))
            .or_default();
        match item.row.resolved {
            true if filter.keeps(item, a) => chosen.push((item, a)),
            true => {}
            false => rejected.push((item, a)),
        }
    }
    let row = |c: &Candidate<'a>| -> &'a TrajectoryRow { &c.0.row };
    let key = |c: &Candidate<'a>| {
        (
            row(c).summary.n_steps,
            row(c).summary.trajectory_id.as_str(),
        )
    };
    let mut pairs = Vec::new();
    for (_, (mut chosen, mut rejected)) in groups {
        chosen.sort_by_key(key);
        for c in chosen {
            let steps = row(&c).summary.n_steps;
            let closest = rejected
                .iter()
                .enumerate()
                .min_by_key(|&(_, r)| (key(r).0.abs_diff(steps), key(r)))
                .map(|(i, _)| i);
            let Some(closest) = closest else { break };
            pairs.push(Pair {
                chosen: c,
                rejected: rejected.remove(closest),
            });
        }
    }
    pairs
}

/// The columns of a pair, in the order of [`PairRow`]'s fields.
pub fn columns() -> Vec<Column> {
    let side = |name, doc| col(name, ColumnType::Messages, doc);
    vec![
        side(
            "prompt",
            "The messages up to and including the first user message (system prompt and task), in OpenAI chat format; shared by both sides.",
        ),
        side(
            "chosen",
            "The rest of the resolved trajectory's conversation (assistant turns, tool calls and results).",
        ),
        side(
            "rejected",
            "The rest of the unresolved trajectory's conversation.",
        ),
        TOOLS,
        col("instance_id", ColumnType::Varchar, "Task id."),
        col(
            "chosen_trajectory_id",
            ColumnType::Varchar,
            "The resolved trajectory.",
        ),
        col(
            "rejected_trajectory_id",
            ColumnType::Varchar,
            "The unresolved trajectory.",
        ),
        col(
            "chosen_reward",
            ColumnType::Double,
            "Reward of the chosen trajectory from verification.",
        ),
        col(
            "rejected_reward",
            ColumnType::Double,
            "Reward of the rejected trajectory from verification.",
        ),
        col(
            "chosen_model",
            ColumnType::Varchar,
            "Model pool entry of the chosen trajectory.",
        ),
        col(
            "rejected_model",
            ColumnType::Varchar,
            "Model pool entry of the rejected trajectory.",
        ),
        col(
            "chosen_n_steps",
            ColumnType::UInteger,
            "Agent steps of the chosen trajectory.",
        ),
        col(
            "rejected_n_steps",
            ColumnType::UInteger,
            "Agent steps of the rejected trajectory.",
        ),
        col("scaffold", ColumnType::Varchar, "Scaffold name@version."),
        col("campaign", ColumnType::Varchar, "synthfleet campaign."),
    ]
}

/// One preference pair (columns: [`columns`]).
#[derive(Debug, Serialize)]
pub struct PairRow {
    prompt: Vec<ChatMessage>,
    chosen: Vec<ChatMessage>,
    rejected: Vec<ChatMessage>,
    tools: String,
    instance_id: String,
    chosen_trajectory_id: String,
    rejected_trajectory_id: String,
    chosen_reward: f64,
    rejected_reward: f64,
    chosen_model: String,
    rejected_model: String,
    chosen_n_steps: u32,
    rejected_n_steps: u32,
    scaffold: String,
    campaign: String,
}

impl PairRow {
    /// The pair of two trajectories' rows (anonymised already, when asked).
    pub fn of(chosen: ExportRow, rejected: ExportRow) -> PairRow {
        let (prompt, chosen_turns) = split_prompt(chosen.messages);
        let (_, rejected_turns) = split_prompt(rejected.messages);
        let (c, r) = (chosen.row, rejected.row);
        PairRow {
            prompt,
            chosen: chosen_turns,
            rejected: rejected_turns,
            tools: chosen.tools,
            instance_id: c.summary.instance_id,
            chosen_trajectory_id: c.summary.trajectory_id,
            rejected_trajectory_id: r.summary.trajectory_id,
            chosen_reward: c.reward,
            rejected_reward: r.reward,
            chosen_model: c.summary.model,
            rejected_model: r.summary.model,
            chosen_n_steps: c.summary.n_steps,
            rejected_n_steps: r.summary.n_steps,
            scaffold: c.scaffold,
            campaign: c.summary.campaign,
        }
    }
}

/// A conversation split where TRL's conversational format splits it: the prompt up to
/// and including the first user message, and the turns after it.
fn split_prompt(mut messages: Vec<ChatMessage>) -> (Vec<ChatMessage>, Vec<ChatMessage>) {
    let at = messages
        .iter()
        .position(|m| m.role == Role::User)
        .map_or(0, |i| i + 1);
    let turns = messages.split_off(at);
    (messages, turns)
}

#[cfg(test)]
mod tests {
    use super::split_prompt;
    use synthfleet_core::trajectory::{ChatMessage, Role};

    #[test]
    fn the_prompt_ends_with_the_first_user_message() {
        let m = |role, text: &str| ChatMessage::text(role, text);
        let (prompt, turns) = split_prompt(vec![
            m(Role::System, "s"),
            m(Role::User, "task"),
            m(Role::Assistant, "a"),
            m(Role::User, "observation"),
        ]);
        let texts = |ms: &[ChatMessage]| -> Vec<String> {
            ms.iter().filter_map(|m| m.content.clone()).collect()
        };
        assert_eq!(texts(&prompt), ["s", "task"]);
        assert_eq!(texts(&turns), ["a", "observation"]);
        let (prompt, turns) = split_prompt(vec![m(Role::Assistant, "a")]);
        assert!(
            prompt.is_empty() && turns.len() == 1,
            "no user message: no prompt"
        );
    }
}
