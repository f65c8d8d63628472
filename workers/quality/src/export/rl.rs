//! RL data (`--format rl`): one row per verified trajectory — a trajectory row (reward,
//! messages, tools, the verdicts) with its group and the token counts a trainer sizes
//! batches by.
//!
//! The group is the task and the sampling round (`{instance_id}#r{round}`): the samples
//! drawn together, which a group-based trainer (GRPO, RLOO) compares with each other. A
//! fixed campaign has one round per task; an adaptive one numbers its rounds as it draws
//! them ([`CampaignConfig::round_of`]).

use super::{ExportRow, Exported, trajectory_columns};
use crate::dataset::{Column, ColumnType, col};
use serde::{Deserialize, Serialize};
use synthfleet_core::campaign::CampaignConfig;

/// What a row is, for the dataset card.
pub const ABOUT: &str = "## Groups and rewards\n\nEach row is one verified trajectory (never-verified ones, e.g. an infrastructure error, are left out) with its `reward`. `group_id` is `{instance_id}#r{round}`: the samples of a task drawn in one round, the group a GRPO- or RLOO-style trainer compares. `prompt_tokens` and `context_tokens` are the provider's counts for the first and the last model call; `output_tokens` is everything the policy generated.\n";

/// The columns: a trajectory's, with the group after the ids and the token counts after
/// the trajectory's own.
pub fn columns() -> Vec<Column> {
    let mut columns = Vec::new();
    for column in trajectory_columns() {
        columns.push(column);
        match column.name {
            "model" => columns.extend([
                col(
                    "group_id",
                    ColumnType::Varchar,
                    "`{instance_id}#r{round}`: the samples of a task drawn in one round, compared with each other by group-based RL.",
                ),
                col(
                    "round",
                    ColumnType::UInteger,
                    "Sampling round of the task (0 in a fixed campaign).",
                ),
            ]),
            "cache_write_tokens" => columns.extend([
                col(
                    "prompt_tokens",
                    ColumnType::UBigInt,
                    "The first model call's prompt (system prompt and task): uncached, cache-read and cache-written tokens.",
                ),
                col(
                    "context_tokens",
                    ColumnType::UBigInt,
                    "The last model call's prompt and completion: the conversation's length in tokens at its end (less what the context policy elided).",
                ),
                col(
                    "llm_calls",
                    ColumnType::UInteger,
                    "Model calls of the rollout.",
                ),
            ]),
            _ => {}
        }
    }
    columns
}

/// A step's token counts: all an export reads of a step.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct StepTokens {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_read_tokens: u64,
    #[serde(default)]
    cache_write_tokens: u64,
}

impl StepTokens {
    /// The call's whole prompt: uncached, cache-read and cache-written tokens.
    fn prompt(&self) -> u64 {
        self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
    }
}

/// A record's token counts beyond its totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tokens {
    prompt_tokens: u64,
    context_tokens: u64,
    llm_calls: u32,
}

impl Tokens {
    pub fn of(record: &Exported) -> Tokens {
        Tokens {
            prompt_tokens: record.steps.first().map_or(0, StepTokens::prompt),
            context_tokens: record
                .steps
                .last()
                .map_or(0, |s| s.prompt() + s.output_tokens),
            llm_calls: record.totals.llm_calls,
        }
    }
}

/// One trajectory for RL (columns: [`columns`]).
#[derive(Serialize)]
pub struct RlRow {
    #[serde(flatten)]
    trajectory: ExportRow,
    group_id: String,
    round: u32,
    #[serde(flatten)]
    tokens: Tokens,
}

impl RlRow {
    pub fn of(config: &CampaignConfig, tokens: Tokens, trajectory: ExportRow) -> RlRow {
        let summary = &trajectory.row.summary;
        let round = config.round_of(summary.sample_index);
        RlRow {
            group_id: format!("{}#r{round}", summary.instance_id),
            round,
            tokens,
            trajectory,
        }
    }
}
