//! The campaign file's shape: the top-level table and its `[scaffold]`, `[sandbox]`,
//! `[quality]` and `[storage]` sections, with their defaults. Task sources, models and
//! routes have files of their own.

use super::models::ModelConfig;
use super::routes::RouteConfig;
use super::sampling::SamplingConfig;
use super::sources::TaskSource;
use super::variants::VariantConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The campaign file as written. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    pub name: String,
    /// Task sources: files (JSONL, Parquet) or dataset directories, relative to the
    /// campaign file, each a path or a table with a format and filters.
    pub tasks: Vec<TaskSource>,
    #[serde(default = "one")]
    pub samples_per_task: u32,
    /// How many samples each task gets: `samples_per_task` each, or adaptive rounds.
    #[serde(default, skip_serializing_if = "SamplingConfig::is_default")]
    pub sampling: SamplingConfig,
    /// Hard cap on LLM spend for the whole campaign, in USD.
    pub budget_usd: f64,
    pub models: Vec<ModelConfig>,
    /// Model choice by task: the first route whose `match` holds picks the model; a task
    /// no route matches goes by the `[[models]]` weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub scaffold: ScaffoldConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub quality: QualityConfig,
    /// Leave out the tasks `synthfleet validate --gold` found broken (the reference patch
    /// does not resolve them, the empty patch already does, or — with `--repeat` — a test
    /// changed outcome between runs: flaky).
    #[serde(default)]
    pub skip_broken_tasks: bool,
    /// An experiment's arms: each task's samples split among them by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantConfig>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The model calls a `bash` or `submit` tool.
    #[default]
    ToolCalls,
    /// The model answers with exactly one fenced ```bash block (mini-swe-agent style).
    Text,
}

impl std::fmt::Display for Protocol {
    /// The protocol as campaign files name it (`tool_calls`, `text`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::ToolCalls => "tool_calls",
            Protocol::Text => "text",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaffoldConfig {
    pub kind: String,
    pub protocol: Protocol,
    /// Directory of minijinja templates overriding the built-in ones (relative to the campaign file).
    pub templates: Option<PathBuf>,
    pub max_steps: u32,
    pub step_timeout_s: u64,
    pub rollout_timeout_s: u64,
    /// Wall-clock limit of the eval script in the verification sandbox.
    pub eval_timeout_s: u64,
    /// Per-rollout LLM spend limit in USD.
    pub cost_limit_usd: Option<f64>,
    /// Observations longer than this are cut in the middle with a marker.
    pub max_observation_chars: usize,
    /// The context policy: when a conversation outgrows the model's `context_window`, old
    /// observations are elided, oldest first; the last this many always stay whole.
    pub keep_recent_observations: u32,
    /// The agent program an `external` scaffold runs in the workdir (a shell command line),
    /// its model calls going to the metering gateway at `$OPENAI_BASE_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// An attempt that receives a sample an interrupted attempt left a checkpoint of
    /// continues it (the sandbox rebuilt by replay, the conversation carried over) instead
    /// of starting over; see [`crate::resume`]. On by default.
    pub resume: bool,
}

impl Default for ScaffoldConfig {
    fn default() -> Self {
        ScaffoldConfig {
            kind: "bash".into(),
            protocol: Protocol::default(),
            templates: None,
            max_steps: 50,
            step_timeout_s: 120,
            rollout_timeout_s: 3600,
            eval_timeout_s: 900,
            cost_limit_usd: None,
            max_observation_chars: 10_000,
            keep_recent_observations: 3,
            command: None,
            resume: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// No network interface but loopback (the default).
    #[default]
    None,
    /// Docker's default bridge: outbound network. Only when a campaign opts in.
    Bridge,
}

/// How commands reach a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SandboxChannel {
    /// A relay started once per sandbox user over an attached `docker exec`, spawning each
    /// command as a fresh process: no round trip through the daemon per step (the default).
    #[default]
    Relay,
    /// One `docker exec` per command (what the relay falls back to when it cannot start).
    Exec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: i64,
    /// Writable-layer size cap; needs a storage driver that supports it (overlay2 on xfs with pquota).
    pub disk_mb: Option<u64>,
    /// Size of the scratch tmpfs mounted on /tmp.
    pub tmp_mb: u64,
    pub network: NetworkPolicy,
    /// Bytes of stdout+stderr kept per command; the rest is dropped and the cut marked.
    pub max_output_bytes: usize,
    /// User the agent's commands run as; `auto` picks uid 1000 when the image has it, else root
    /// (still without capabilities).
    pub user: String,
    /// The OCI runtime of the sandboxes, as registered with the Docker engine (`runc`,
    /// `crun`, `runsc` for gVisor); unset: the engine's default.
    pub runtime: Option<String>,
    /// How commands reach the sandbox: `relay` (default) or `exec`.
    pub channel: SandboxChannel,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_mb: 2048,
            cpus: 1.0,
            pids: 512,
            disk_mb: None,
            tmp_mb: 256,
            network: NetworkPolicy::None,
            max_output_bytes: 1 << 20,
            user: "auto".into(),
            runtime: None,
            channel: SandboxChannel::Relay,
        }
    }
}

/// Thresholds of the quality pipeline (`[quality]`): which trajectories the heuristics
/// reject, what counts as a near duplicate, and when diversity raises an alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// The same action this many times in a row is a loop.
    pub max_repeated_actions: u32,
    /// Share of steps that failed (non-zero exit, timeout or format error) above which a
    /// trajectory is rejected.
    pub max_error_ratio: f64,
    pub min_steps: u32,
    /// Defaults to the scaffold's `max_steps`.
    pub max_steps: Option<u32>,
    /// Share of observations cut for length above which a trajectory is rejected.
    pub max_truncated_ratio: f64,
    /// Estimated Jaccard similarity of action shingles from which two trajectories of one
    /// task are near duplicates.
    pub near_duplicate_threshold: f64,
    /// Alarm when one action pattern makes up more than this share of a model's (or the
    /// campaign's) structurally valid trajectories...
    pub max_pattern_share: f64,
    /// ...among at least this many trajectories.
    pub min_trajectories_for_alarm: u32,
    /// A second, independent verifier: an LLM judge.
    pub judge: Option<JudgeConfig>,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            max_repeated_actions: 3,
            max_error_ratio: 0.5,
            min_steps: 1,
            max_steps: None,
            max_truncated_ratio: 0.25,
            near_duplicate_threshold: 0.9,
            max_pattern_share: 0.6,
            min_trajectories_for_alarm: 10,
            judge: None,
        }
    }
}

/// The LLM judge: one of the campaign's models, asked whether the final patch solves the
/// task. Its calls are reserved against the campaign budget like any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// Name of a `[[models]]` entry (weight 0 keeps it out of rollouts).
    pub model: String,
    /// Judge only trajectories that passed every earlier stage (default), or all.
    #[serde(default = "yes")]
    pub only_accepted: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// Embedded backends in one directory (relative to the campaign file).
    Local { dir: PathBuf },
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::Local {
            dir: PathBuf::from(".synthfleet"),
        }
    }
}
