//! Campaign files (TOML): what to run, on which models, within which limits.

use crate::MicroUsd;
use crate::task::Task;
use crate::taskset::TaskFormat;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
}

/// Where tasks come from: `"tasks.jsonl"`, or
/// `{ path = "SWE-bench_Verified/", split = "test", repos = ["django/django"], limit = 50 }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSource {
    /// A JSONL or Parquet file, or a directory laid out as a Hugging Face dataset
    /// (`data/{split}-*.parquet` or `*.jsonl`).
    pub path: PathBuf,
    #[serde(default)]
    pub format: TaskFormat,
    /// The split to read from a dataset directory (`train`, `test`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Only these instances (each must exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<String>,
    /// Only rows whose `repo` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
    /// At most this many tasks (the first, in file order, after the other filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The test command for rows that carry none and whose repository SWE-bench's table
    /// does not know (e.g. SWE-Gym's repositories); the test files are appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_cmd: Option<String>,
    /// The log parser for rows that carry none (`pytest`, `django`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_parser: Option<String>,
}

impl TaskSource {
    fn of_path(path: PathBuf) -> TaskSource {
        TaskSource {
            path,
            format: TaskFormat::Auto,
            split: None,
            instance_ids: Vec::new(),
            repos: Vec::new(),
            limit: None,
            test_cmd: None,
            log_parser: None,
        }
    }
}

/// A source is a path or a table; anything else is an error that says so.
impl<'de> Deserialize<'de> for TaskSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TaskSource, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            path: PathBuf,
            #[serde(default)]
            format: TaskFormat,
            #[serde(default)]
            split: Option<String>,
            #[serde(default)]
            instance_ids: Vec<String>,
            #[serde(default)]
            repos: Vec<String>,
            #[serde(default)]
            limit: Option<usize>,
            #[serde(default)]
            test_cmd: Option<String>,
            #[serde(default)]
            log_parser: Option<String>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TaskSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a task file path or a table { path = ..., format, split, instance_ids, repos, limit, test_cmd, log_parser }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TaskSource, E> {
                Ok(TaskSource::of_path(PathBuf::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TaskSource, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(TaskSource {
                    path: t.path,
                    format: t.format,
                    split: t.split,
                    instance_ids: t.instance_ids,
                    repos: t.repos,
                    limit: t.limit,
                    test_cmd: t.test_cmd,
                    log_parser: t.log_parser,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any server speaking OpenAI's chat-completions API: OpenAI, vLLM, llama.cpp, Ollama, ...
    Openai,
    /// Anthropic's Messages API (`https://api.anthropic.com/v1` unless `endpoint` says
    /// otherwise).
    Anthropic,
    /// Amazon Bedrock's Converse API: AWS credentials and region from the standard chain;
    /// `endpoint` overrides Bedrock's (a VPC endpoint).
    Bedrock,
    /// Keyless: plays the `replay` actions given with each task.
    Replay,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name of this pool entry, used in records, fallbacks and reports.
    pub name: String,
    pub provider: ProviderKind,
    /// Model id sent to the provider (defaults to `name`).
    #[serde(default)]
    pub model: Option<String>,
    /// Base URL of the API, up to and including `/v1`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Name of the environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub input_price_per_mtok: f64,
    #[serde(default)]
    pub output_price_per_mtok: f64,
    /// Price of prompt tokens read from the provider's cache; unset: the input price (never
    /// under-counted; set it for exact costs).
    #[serde(default)]
    pub cache_read_price_per_mtok: Option<f64>,
    /// Price of prompt tokens written to the cache; unset: 1.25 × the input price
    /// (Anthropic's five-minute cache).
    #[serde(default)]
    pub cache_write_price_per_mtok: Option<f64>,
    /// Mark the system prompt and the newest turn for prompt caching, so each call of a
    /// rollout reads the conversation so far from the cache: Anthropic (on by default) and
    /// Bedrock (off by default: not every Bedrock model takes cache points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_caching: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Upper bound on completion tokens per call; also bounds each budget reservation.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// The model's context window in tokens: a conversation that would outgrow it (with
    /// `max_tokens` for the reply) is trimmed by the scaffold's context policy first.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Relative share of samples routed to this model.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form tier label, carried into records for reports.
    #[serde(default)]
    pub tier: Option<String>,
    /// Pool entries to try, in order, when this one is unavailable.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Requests a minute for the whole fleet (each worker paces at its share).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens a minute for the whole fleet, counted as each call's prompt estimate plus
    /// `max_tokens` (never fewer than the call uses).
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: u64,
    /// Attempts per call on 429/5xx/timeouts before the provider counts as unavailable.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Name of the completion-length field: `max_tokens` (most servers) or
    /// `max_completion_tokens` (OpenAI's reasoning models).
    #[serde(default)]
    pub max_tokens_field: MaxTokensField,
    /// Extra fields merged into every request body (e.g. `reasoning_effort`, `top_k`).
    /// They cannot override the model, messages or tools.
    #[serde(default)]
    pub extra_body: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

impl MaxTokensField {
    pub fn as_str(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

fn default_max_tokens() -> u32 {
    4096
}
fn default_weight() -> u32 {
    1
}
fn default_request_timeout() -> u64 {
    300
}
fn default_max_attempts() -> u32 {
    6
}

impl ModelConfig {
    pub fn model_id(&self) -> &str {
        self.model.as_deref().unwrap_or(&self.name)
    }

    /// Whether calls mark cache points (see `prompt_caching`).
    pub fn caches(&self) -> bool {
        match self.provider {
            ProviderKind::Anthropic => self.prompt_caching.unwrap_or(true),
            ProviderKind::Bedrock => self.prompt_caching.unwrap_or(false),
            ProviderKind::Openai | ProviderKind::Replay => false,
        }
    }

    fn cache_read_price(&self) -> f64 {
        self.cache_read_price_per_mtok
            .unwrap_or(self.input_price_per_mtok)
    }

    fn cache_write_price(&self) -> f64 {
        self.cache_write_price_per_mtok
            .unwrap_or(1.25 * self.input_price_per_mtok)
    }

    /// Cost of a call, each kind of token at its price, rounded up to the micro-dollar.
    pub fn cost(&self, usage: &crate::ports::Usage) -> MicroUsd {
        MicroUsd::from_usd_ceil(
            (usage.input_tokens as f64 * self.input_price_per_mtok
                + usage.output_tokens as f64 * self.output_price_per_mtok
                + usage.cache_read_tokens as f64 * self.cache_read_price()
                + usage.cache_write_tokens as f64 * self.cache_write_price())
                / 1e6,
        )
    }

    /// The most a call with about `prompt_tokens` of prompt can cost: every prompt token at
    /// its dearest price (a cache write, where the provider caches) and `max_tokens` out.
    pub fn worst_case_cost(&self, prompt_tokens: u64) -> MicroUsd {
        let prompt_price = match self.provider {
            ProviderKind::Anthropic | ProviderKind::Bedrock if self.caches() => self
                .input_price_per_mtok
                .max(self.cache_write_price())
                .max(self.cache_read_price()),
            _ => self.input_price_per_mtok.max(self.cache_read_price()),
        };
        MicroUsd::from_usd_ceil(
            (prompt_tokens as f64 * prompt_price
                + f64::from(self.max_tokens) * self.output_price_per_mtok)
                / 1e6,
        )
    }
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

/// A validated campaign with its tasks loaded.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub config: CampaignConfig,
    pub source: PathBuf,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    pub tasks: Vec<Task>,
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("cannot read campaign file {path}: check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl Campaign {
    /// Parses and validates a campaign file's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<CampaignConfig, CampaignError> {
        let config: CampaignConfig = toml::from_str(text).map_err(|e| CampaignError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config
            .validate()
            .map_err(|(field, message)| CampaignError::Invalid {
                path: path.to_owned(),
                field,
                message,
            })?;
        Ok(config)
    }

    /// The campaign of the file at `source`, with the tasks its sources gave, in order.
    /// An instance id may appear once across all sources.
    pub fn with_tasks(
        config: CampaignConfig,
        source: PathBuf,
        tasks: Vec<Task>,
    ) -> Result<Campaign, CampaignError> {
        let mut ids = BTreeSet::new();
        let eval = config.scaffold.eval_timeout_s;
        for task in &tasks {
            if let Some(timeout) = task.timeout_s
                && timeout.saturating_add(eval.saturating_mul(2)) > MAX_LEASE_S
            {
                return Err(CampaignError::Invalid {
                    path: source,
                    field: "tasks".to_owned(),
                    message: format!(
                        "task `{}` has timeout_s = {timeout}: with twice eval_timeout_s ({eval}) that exceeds the 12-hour ceiling of a queue message's lease ({MAX_LEASE_S} s)",
                        task.instance_id
                    ),
                });
            }
            if !ids.insert(task.instance_id.as_str()) {
                return Err(CampaignError::Invalid {
                    path: source,
                    field: "tasks".to_owned(),
                    message: format!(
                        "instance_id `{}` appears in more than one task source",
                        task.instance_id
                    ),
                });
            }
        }
        Ok(Campaign {
            config,
            base_dir: base_dir_of(&source),
            source,
            tasks,
        })
    }

    /// A campaign from a stored configuration (a fleet worker's view: no task files, the
    /// tasks arrive in messages).
    pub fn from_config(config: CampaignConfig, source: PathBuf) -> Result<Campaign, CampaignError> {
        config
            .validate()
            .map_err(|(field, message)| CampaignError::Invalid {
                path: source.clone(),
                field,
                message,
            })?;
        Ok(Campaign {
            config,
            source,
            base_dir: PathBuf::from("."),
            tasks: Vec::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// The directory a campaign file's relative paths are resolved against.
pub fn base_dir_of(source: &Path) -> PathBuf {
    source
        .parent()
        .map(Path::to_owned)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Campaign {
    /// Whether a queue message's sample belongs to this campaign: its index is within
    /// `samples_per_task` and, when the campaign's tasks are known (not in a fleet worker's
    /// view), its instance is one of them. The error says why not.
    pub fn admits(&self, key: &crate::message::ResultKey) -> Result<(), String> {
        let samples = self.config.samples_per_task;
        if key.sample_index >= samples {
            return Err(format!(
                "sample {} of `{}` is outside campaign `{}` (samples_per_task = {samples})",
                key.sample_index, key.instance_id, key.campaign
            ));
        }
        if !self.tasks.is_empty() && !self.tasks.iter().any(|t| t.instance_id == key.instance_id) {
            return Err(format!(
                "instance `{}` is not a task of campaign `{}`",
                key.instance_id, key.campaign
            ));
        }
        Ok(())
    }

    pub fn budget(&self) -> MicroUsd {
        MicroUsd::from_usd_ceil(self.config.budget_usd)
    }

    pub fn resolve(&self, relative: &Path) -> PathBuf {
        self.base_dir.join(relative)
    }

    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.config.models.iter().find(|m| m.name == name)
    }

    /// The pool entry a sample runs on, and the route that chose it: the first route whose
    /// match holds for the task, else the `[[models]]` weights ([`DEFAULT_ROUTE`]). Within
    /// a route the choice is weighted and deterministic, so that a retried sample keeps its
    /// model and the split follows the weights.
    pub fn model_for(&self, task: &crate::task::Task, sample_index: u32) -> (&ModelConfig, String) {
        let digest = Sha256::digest(
            format!("{}\0{}\0{sample_index}", self.config.name, task.instance_id).as_bytes(),
        );
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        let draw = u64::from_le_bytes(bytes);
        for (i, route) in self.config.routes.iter().enumerate() {
            if !route.matches.holds_for(task) {
                continue;
            }
            let weighted = self.route_models(route);
            if let Some(model) = pick(&weighted, draw) {
                let name = route.name.clone().unwrap_or_else(|| format!("route-{i}"));
                return (model, name);
            }
        }
        let weighted: Vec<(&ModelConfig, u32)> =
            self.config.models.iter().map(|m| (m, m.weight)).collect();
        (
            pick(&weighted, draw).unwrap_or(&self.config.models[0]),
            DEFAULT_ROUTE.to_owned(),
        )
    }

    /// A route's models with their weights.
    fn route_models(&self, route: &RouteConfig) -> Vec<(&ModelConfig, u32)> {
        match &route.tier {
            Some(tier) => self
                .config
                .models
                .iter()
                .filter(|m| m.tier.as_deref() == Some(tier.as_str()))
                .map(|m| (m, m.weight))
                .collect(),
            None => route
                .models
                .iter()
                .filter_map(|(name, weight)| self.model(name).map(|m| (m, *weight)))
                .collect(),
        }
    }
}

/// The weighted choice `draw` lands on (`None` when every weight is 0).
fn pick<'a>(weighted: &[(&'a ModelConfig, u32)], draw: u64) -> Option<&'a ModelConfig> {
    let total: u64 = weighted.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut point = draw % total;
    for (model, weight) in weighted {
        if point < u64::from(*weight) {
            return Some(model);
        }
        point -= u64::from(*weight);
    }
    None
}

/// A route: which tasks (`match`), and the models they run on — named with weights, or a
/// whole tier by the models' own weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Recorded as the record's `route` (default `route-{index}`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Model name → weight.
    #[serde(default)]
    pub models: BTreeMap<String, u32>,
    /// Every model of this tier, by its own weight (instead of `models`).
    #[serde(default)]
    pub tier: Option<String>,
}

/// What a task must have for a route to take it; every field given must hold (an empty
/// match takes every task).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// The task's `difficulty` is one of these (compared as text: `"hard"`, `3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub difficulty: Vec<serde_json::Value>,
    /// Each tag has one of the values given (a value or a list).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, serde_json::Value>,
    /// The instance id starts with one of these (e.g. a repository's prefix `django__`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_prefix: Vec<String>,
}

/// A JSON value as text: strings unquoted, anything else as JSON.
fn as_text(value: &serde_json::Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Whether `value` is `wanted`, or one of them when `wanted` is a list.
fn one_of(value: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    let value = as_text(value);
    match wanted.as_array() {
        Some(list) => list.iter().any(|w| as_text(w) == value),
        None => as_text(wanted) == value,
    }
}

impl RouteMatch {
    pub fn holds_for(&self, task: &crate::task::Task) -> bool {
        let difficulty = self.difficulty.is_empty()
            || task
                .difficulty
                .as_ref()
                .is_some_and(|d| self.difficulty.iter().any(|w| as_text(w) == as_text(d)));
        let tags = self.tags.iter().all(|(tag, wanted)| {
            task.tags
                .get(tag)
                .is_some_and(|value| one_of(value, wanted))
        });
        let prefix = self.instance_prefix.is_empty()
            || self
                .instance_prefix
                .iter()
                .any(|p| task.instance_id.starts_with(p.as_str()));
        difficulty && tags && prefix
    }
}

/// The route name of tasks no `[[routes]]` entry takes.
pub const DEFAULT_ROUTE: &str = "default";

/// The longest a queue message can be held: SQS's 12-hour visibility ceiling. A rollout
/// (with its setup and verification) must fit in it, or no worker could ever finish it.
pub const MAX_LEASE_S: u64 = 12 * 3600;

/// Names used in storage keys: campaign names and instance ids.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl CampaignConfig {
    /// Checks everything serde cannot: returns the offending field and why.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        if !is_valid_name(&self.name) {
            return err(
                "name",
                "must be 1-128 ASCII letters, digits, - _ or . (it becomes part of storage keys)",
            );
        }
        if self.tasks.is_empty() {
            return err("tasks", "must list at least one task source");
        }
        if self.samples_per_task == 0 {
            return err("samples_per_task", "must be at least 1");
        }
        if !self.budget_usd.is_finite() || self.budget_usd < 0.0 {
            return err("budget_usd", "must be a non-negative number of US dollars");
        }
        if self.models.is_empty() {
            return err("models", "must list at least one model ([[models]] tables)");
        }
        let names: BTreeSet<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        if names.len() != self.models.len() {
            return err("models", "model names must be unique");
        }
        if self.models.iter().all(|m| m.weight == 0) {
            return err("models.weight", "at least one model needs a weight above 0");
        }
        for (i, m) in self.models.iter().enumerate() {
            let field = |f: &str| format!("models[{i}].{f}");
            if m.name.trim().is_empty() {
                return Err((field("name"), "must not be empty".into()));
            }
            if m.provider != ProviderKind::Openai && m.max_tokens_field != MaxTokensField::MaxTokens
            {
                return Err((
                    field("max_tokens_field"),
                    format!(
                        "is an OpenAI setting; provider {:?} takes `max_tokens` only",
                        m.provider
                    ),
                ));
            }
            if m.provider == ProviderKind::Bedrock
                && (m.api_key_env.is_some() || !m.extra_body.is_empty())
            {
                return Err((
                    field("api_key_env"),
                    "\"bedrock\" signs with AWS credentials (the standard chain: AWS_PROFILE, a role, ...); it takes no api_key_env or extra_body".into(),
                ));
            }
            if m.provider == ProviderKind::Replay
                && (m.endpoint.is_some() || m.api_key_env.is_some() || !m.extra_body.is_empty())
            {
                return Err((
                    field("provider"),
                    "\"replay\" plays the tasks' scripted actions: it takes no endpoint, api_key_env or extra_body".into(),
                ));
            }
            if m.provider == ProviderKind::Openai
                && m.endpoint.as_deref().is_none_or(|e| e.trim().is_empty())
            {
                return Err((
                    field("endpoint"),
                    "is required for provider \"openai\" (e.g. \"https://api.openai.com/v1\" or \"http://localhost:8000/v1\")".into(),
                ));
            }
            if let Some(env) = &m.api_key_env
                && (env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                return Err((
                    field("api_key_env"),
                    "must be the NAME of an environment variable (letters, digits, _), never the key itself".into(),
                ));
            }
            if [m.input_price_per_mtok, m.output_price_per_mtok]
                .into_iter()
                .chain(m.cache_read_price_per_mtok)
                .chain(m.cache_write_price_per_mtok)
                .any(|p| !p.is_finite() || p < 0.0)
            {
                return Err((
                    field("input_price_per_mtok"),
                    "prices must be non-negative".into(),
                ));
            }
            if m.context_window
                .is_some_and(|w| w <= u64::from(m.max_tokens))
            {
                return Err((
                    field("context_window"),
                    "must be larger than max_tokens (the reply has to fit too)".into(),
                ));
            }
            if m.max_tokens == 0 || m.max_attempts == 0 || m.request_timeout_s == 0 {
                return Err((
                    field("max_tokens"),
                    "max_tokens, max_attempts and request_timeout_s must be at least 1".into(),
                ));
            }
            if let Some(t) = m.temperature
                && !(0.0..=2.0).contains(&t)
            {
                return Err((field("temperature"), "must be between 0 and 2".into()));
            }
            if let Some(key) = m.extra_body.keys().find(|k| {
                ["model", "messages", "tools", "tool_choice", "stream"].contains(&k.as_str())
            }) {
                return Err((field("extra_body"), format!("may not set `{key}`")));
            }
            for fallback in &m.fallbacks {
                if !names.contains(fallback.as_str()) || fallback == &m.name {
                    return Err((
                        field("fallbacks"),
                        format!("`{fallback}` is not another model of this campaign"),
                    ));
                }
            }
        }
        let mut route_names = BTreeSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let field = |f: &str| format!("routes[{i}].{f}");
            let name = route.name.clone().unwrap_or_else(|| format!("route-{i}"));
            if name == DEFAULT_ROUTE || !route_names.insert(name.clone()) {
                return Err((
                    field("name"),
                    format!(
                        "`{name}` is taken (route names are unique, and `{DEFAULT_ROUTE}` names tasks no route takes)"
                    ),
                ));
            }
            match (&route.tier, route.models.is_empty()) {
                (Some(_), false) | (None, true) => {
                    return Err((
                        field("models"),
                        "give either `models` (name = weight) or `tier`".into(),
                    ));
                }
                (Some(tier), true) => {
                    if !self
                        .models
                        .iter()
                        .any(|m| m.tier.as_deref() == Some(tier.as_str()) && m.weight > 0)
                    {
                        return Err((
                            field("tier"),
                            format!("no model of tier `{tier}` has a weight above 0"),
                        ));
                    }
                }
                (None, false) => {
                    if let Some(unknown) = route.models.keys().find(|n| !names.contains(n.as_str()))
                    {
                        return Err((
                            field("models"),
                            format!("`{unknown}` is not a model of this campaign"),
                        ));
                    }
                    if route.models.values().all(|w| *w == 0) {
                        return Err((field("models"), "at least one weight above 0".into()));
                    }
                }
            }
        }
        let s = &self.scaffold;
        if s.kind != "bash" {
            return err(
                "scaffold.kind",
                "only the built-in \"bash\" scaffold exists",
            );
        }
        if s.max_steps == 0
            || s.step_timeout_s == 0
            || s.rollout_timeout_s == 0
            || s.eval_timeout_s == 0
        {
            return err(
                "scaffold.max_steps",
                "max_steps, step_timeout_s, rollout_timeout_s and eval_timeout_s must be at least 1",
            );
        }
        if s.rollout_timeout_s
            .saturating_add(s.eval_timeout_s.saturating_mul(2))
            > MAX_LEASE_S
        {
            return err(
                "scaffold.rollout_timeout_s",
                "rollout_timeout_s plus twice eval_timeout_s (the sandbox setup and the verification) must stay within 43200 s: a queue message can be held for at most 12 hours (SQS's visibility ceiling)",
            );
        }
        if s.max_observation_chars < 100 {
            return err("scaffold.max_observation_chars", "must be at least 100");
        }
        let b = &self.sandbox;
        if b.memory_mb < 32
            || !b.cpus.is_finite()
            || b.cpus <= 0.0
            || b.pids < 16
            || b.tmp_mb == 0
            || b.max_output_bytes < 1024
        {
            return err(
                "sandbox",
                "limits too small: memory_mb >= 32, cpus > 0, pids >= 16, tmp_mb >= 1, max_output_bytes >= 1024",
            );
        }
        if let Some(runtime) = &b.runtime
            && (runtime.is_empty()
                || !runtime
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return err(
                "sandbox.runtime",
                "must name a runtime registered with the Docker engine (e.g. \"runc\", \"crun\", \"runsc\")",
            );
        }
        let q = &self.quality;
        let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if ![
            q.max_error_ratio,
            q.max_truncated_ratio,
            q.near_duplicate_threshold,
            q.max_pattern_share,
        ]
        .into_iter()
        .all(share)
        {
            return err(
                "quality",
                "max_error_ratio, max_truncated_ratio, near_duplicate_threshold and max_pattern_share are shares between 0 and 1",
            );
        }
        if q.max_repeated_actions < 2 {
            return err("quality.max_repeated_actions", "must be at least 2");
        }
        if let Some(judge) = &q.judge
            && !names.contains(judge.model.as_str())
        {
            return err(
                "quality.judge.model",
                "must name one of the campaign's [[models]] (give it weight = 0 to keep it out of rollouts)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::parse_tasks;

    const TASK: &str = r#"{"instance_id":"t1","image":"img","problem_statement":"p"}"#;
    const CAMPAIGN: &str = r#"
name = "demo"
tasks = ["tasks.jsonl", { path = "swe/", format = "swe-bench", split = "test", repos = ["django/django"], limit = 3 }]
samples_per_task = 2
budget_usd = 1.5

[[models]]
name = "a"
provider = "replay"
weight = 3

[[models]]
name = "b"
provider = "openai"
endpoint = "http://127.0.0.1:1/v1"
api_key_env = "KEY"
fallbacks = ["a"]
"#;

    fn parse(text: &str) -> Result<CampaignConfig, CampaignError> {
        Campaign::parse(Path::new("dir/c.toml"), text)
    }

    #[test]
    fn parses_valid_campaign_and_routes_by_weight() {
        let config = parse(CAMPAIGN).expect("valid");
        assert_eq!(config.tasks[0].path, PathBuf::from("tasks.jsonl"));
        assert_eq!(config.tasks[0].format, TaskFormat::Auto);
        let swe = &config.tasks[1];
        assert_eq!(
            (swe.format, swe.split.as_deref(), swe.limit, swe.repos.len()),
            (TaskFormat::SweBench, Some("test"), Some(3), 1)
        );
        let tasks = parse_tasks(Path::new("tasks.jsonl"), TASK).expect("task");
        let c = Campaign::with_tasks(config, PathBuf::from("dir/c.toml"), tasks).expect("campaign");
        assert_eq!(c.base_dir, PathBuf::from("dir"));
        assert_eq!(c.budget(), MicroUsd(1_500_000));
        assert_eq!(c.config.scaffold.max_steps, 50);
        // deterministic routing, following the weights roughly
        let task = &c.tasks[0];
        let picks: Vec<&str> = (0..400)
            .map(|i| c.model_for(task, i).0.name.as_str())
            .collect();
        let a = picks.iter().filter(|n| **n == "a").count();
        assert!((240..360).contains(&a), "{a}");
        assert_eq!(c.model_for(task, 7), c.model_for(task, 7));
        assert_eq!(c.model_for(task, 7).1, DEFAULT_ROUTE);
    }

    #[test]
    fn routes_send_tasks_to_models_by_difficulty_tags_and_tier() {
        let text = CAMPAIGN.replace(
            "fallbacks = [\"a\"]\n",
            "fallbacks = [\"a\"]\ntier = \"large\"\n\n[[routes]]\nname = \"hard\"\nmatch = { difficulty = [\"hard\", 4] }\ntier = \"large\"\n\n[[routes]]\nmatch = { tags = { repo = [\"django/django\", \"astropy/astropy\"] }, instance_prefix = [\"django__\"] }\nmodels = { a = 1, b = 1 }\n",
        );
        let config = parse(&text).expect("valid routes");
        let task = |line: &str| {
            parse_tasks(Path::new("t.jsonl"), line)
                .expect("task")
                .remove(0)
        };
        let tasks = vec![
            task(
                r#"{"instance_id":"t-hard","image":"i","problem_statement":"p","difficulty":"hard"}"#,
            ),
            task(r#"{"instance_id":"t-four","image":"i","problem_statement":"p","difficulty":4}"#),
            task(
                r#"{"instance_id":"django__1","image":"i","problem_statement":"p","tags":{"repo":"django/django"}}"#,
            ),
            task(
                r#"{"instance_id":"flask__1","image":"i","problem_statement":"p","tags":{"repo":"django/django"}}"#,
            ),
            task(
                r#"{"instance_id":"easy","image":"i","problem_statement":"p","difficulty":"easy"}"#,
            ),
        ];
        let c = Campaign::with_tasks(config, PathBuf::from("c.toml"), tasks).expect("campaign");
        let route = |i: usize, sample: u32| {
            let (model, route) = c.model_for(&c.tasks[i], sample);
            (model.name.clone(), route)
        };
        for sample in 0..20 {
            assert_eq!(
                route(0, sample),
                ("b".to_owned(), "hard".to_owned()),
                "the large tier"
            );
            assert_eq!(route(1, sample).1, "hard", "4 matches as text");
            assert_eq!(
                route(3, sample).1,
                DEFAULT_ROUTE,
                "the prefix must hold too"
            );
            assert_eq!(route(4, sample).1, DEFAULT_ROUTE);
        }
        let models: BTreeSet<String> = (0..40).map(|s| route(2, s).0).collect();
        assert_eq!(models.len(), 2, "both models of the route");
        assert!((0..40).all(|s| route(2, s).1 == "route-1"));

        for (bad, field) in [
            ("[[routes]]\nmodels = { nope = 1 }\n", "routes[0].models"),
            ("[[routes]]\nmodels = { a = 0 }\n", "routes[0].models"),
            ("[[routes]]\ntier = \"huge\"\n", "routes[0].tier"),
            (
                "[[routes]]\nname = \"default\"\nmodels = { a = 1 }\n",
                "routes[0].name",
            ),
            ("[[routes]]\nmatch = {}\n", "routes[0].models"),
        ] {
            let e = parse(&format!("{CAMPAIGN}\n{bad}")).expect_err(bad);
            assert!(e.to_string().contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = CAMPAIGN.replace("samples_per_task = 2", "samples_per_task = 2\nbudget = 3");
        let msg = parse(&text).expect_err("unknown key").to_string();
        assert!(
            msg.contains("c.toml") && msg.contains("line 5") && msg.contains("`budget`"),
            "{msg}"
        );
        let text = CAMPAIGN.replace("limit = 3", "limt = 3");
        let msg = parse(&text).expect_err("unknown source key").to_string();
        assert!(msg.contains("`limt`"), "{msg}");
        let text = CAMPAIGN.replace("format = \"swe-bench\"", "format = \"swe-bnech\"");
        let msg = parse(&text).expect_err("unknown format").to_string();
        assert!(
            msg.contains("swe-bnech") && msg.contains("swe-smith"),
            "{msg}"
        );
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let text = CAMPAIGN.replace("fallbacks = [\"a\"]", "fallbacks = [\"zzz\"]");
        let err = parse(&text).expect_err("bad fallback");
        assert!(
            err.to_string().contains("field `models[1].fallbacks`"),
            "{err}"
        );
        let text = CAMPAIGN.replace("endpoint = \"http://127.0.0.1:1/v1\"\n", "");
        let err = parse(&text).expect_err("no endpoint");
        assert!(err.to_string().contains("models[1].endpoint"), "{err}");
    }

    #[test]
    fn a_rollout_must_fit_a_queue_lease() {
        let text = CAMPAIGN.replace(
            "budget_usd = 1.5",
            "budget_usd = 1.5\n[scaffold]\nrollout_timeout_s = 43000\neval_timeout_s = 900",
        );
        let err = parse(&text).expect_err("too long");
        assert!(err.to_string().contains("12 hours"), "{err}");
        let config = parse(CAMPAIGN).expect("valid");
        let long =
            r#"{"instance_id":"t1","image":"img","problem_statement":"p","timeout_s":43000}"#;
        let tasks = parse_tasks(Path::new("t.jsonl"), long).expect("task");
        let err = Campaign::with_tasks(config, PathBuf::from("c.toml"), tasks)
            .expect_err("task too long");
        assert!(
            err.to_string().contains("task `t1` has timeout_s = 43000"),
            "{err}"
        );
    }

    #[test]
    fn a_message_must_name_a_sample_of_the_campaign() {
        use crate::message::ResultKey;
        let tasks = parse_tasks(Path::new("t.jsonl"), TASK).expect("task");
        let c = Campaign::with_tasks(
            parse(CAMPAIGN).expect("valid"),
            PathBuf::from("c.toml"),
            tasks,
        )
        .expect("campaign");
        let key = |instance: &str, sample_index| ResultKey {
            campaign: "demo".into(),
            instance_id: instance.into(),
            sample_index,
        };
        assert!(c.admits(&key("t1", 1)).is_ok());
        let err = c.admits(&key("t1", 2)).expect_err("out of range");
        assert!(err.contains("samples_per_task = 2"), "{err}");
        let err = c.admits(&key("t9", 0)).expect_err("foreign instance");
        assert!(err.contains("not a task"), "{err}");
    }

    #[test]
    fn an_instance_appears_once_across_sources() {
        let config = parse(CAMPAIGN).expect("valid");
        let mut tasks = parse_tasks(Path::new("a.jsonl"), TASK).expect("task");
        tasks.extend(parse_tasks(Path::new("b.jsonl"), TASK).expect("task"));
        let err =
            Campaign::with_tasks(config, PathBuf::from("c.toml"), tasks).expect_err("duplicate");
        assert!(err.to_string().contains("`t1`"), "{err}");
    }
}
