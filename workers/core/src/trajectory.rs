//! The trajectory record, schema version 1 (docs/FORMATS.md, "Trajectory record").

use crate::harness::{Harness, Resolution, TestSplit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

pub const SCHEMA_VERSION: u32 = 1;

/// One message in OpenAI chat format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text returned by reasoning models (`reasoning_content` on vLLM/DeepSeek-style APIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl ChatMessage {
    pub fn text(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: Some(content.into()),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            tool_call_id: Some(tool_call_id.into()),
            ..ChatMessage::text(Role::Tool, content)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON-encoded arguments, exactly as the model produced them.
    pub arguments: String,
}

/// How a rollout ended. Serialised as a string: `submitted`, `step_limit`, `timeout`,
/// `cost_limit`, `context_exceeded`, `budget_exhausted`, or `error:<kind>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ExitStatus {
    Submitted,
    StepLimit,
    Timeout,
    /// The rollout's own cost limit was reached.
    CostLimit,
    /// The conversation outgrew the model's context window: the agent's horizon ended, as
    /// at the step limit (verified, not retried).
    ContextExceeded,
    /// The campaign's hard budget was reached.
    BudgetExhausted,
    Error(ErrorKind),
}

/// Error kinds. `Llm*` and `Sandbox` are infrastructure failures, never the agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Rate limits, 5xx or timeouts outlasted every retry and fallback.
    LlmUnavailable,
    /// The provider answered with something that is not a chat completion.
    LlmMalformed,
    /// The provider refused the request (bad key, unknown model, bad request).
    LlmRejected,
    Sandbox,
    Internal,
}

impl ErrorKind {
    const ALL: [ErrorKind; 5] = [
        ErrorKind::LlmUnavailable,
        ErrorKind::LlmMalformed,
        ErrorKind::LlmRejected,
        ErrorKind::Sandbox,
        ErrorKind::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::LlmUnavailable => "llm_unavailable",
            ErrorKind::LlmMalformed => "llm_malformed",
            ErrorKind::LlmRejected => "llm_rejected",
            ErrorKind::Sandbox => "sandbox",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Submitted => f.write_str("submitted"),
            ExitStatus::StepLimit => f.write_str("step_limit"),
            ExitStatus::Timeout => f.write_str("timeout"),
            ExitStatus::CostLimit => f.write_str("cost_limit"),
            ExitStatus::ContextExceeded => f.write_str("context_exceeded"),
            ExitStatus::BudgetExhausted => f.write_str("budget_exhausted"),
            ExitStatus::Error(kind) => write!(f, "error:{}", kind.as_str()),
        }
    }
}

impl From<ExitStatus> for String {
    fn from(status: ExitStatus) -> String {
        status.to_string()
    }
}

impl TryFrom<String> for ExitStatus {
    type Error = String;

    fn try_from(s: String) -> Result<ExitStatus, String> {
        Ok(match s.as_str() {
            "submitted" => ExitStatus::Submitted,
            "step_limit" => ExitStatus::StepLimit,
            "timeout" => ExitStatus::Timeout,
            "cost_limit" => ExitStatus::CostLimit,
            "context_exceeded" => ExitStatus::ContextExceeded,
            "budget_exhausted" => ExitStatus::BudgetExhausted,
            other => {
                let kind = other
                    .strip_prefix("error:")
                    .and_then(|k| ErrorKind::ALL.into_iter().find(|e| e.as_str() == k))
                    .ok_or_else(|| format!("unknown exit status `{other}`"))?;
                ExitStatus::Error(kind)
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaffoldInfo {
    pub name: String,
    pub version: String,
    pub protocol: crate::campaign::Protocol,
    /// SHA-256 of the prompt templates used.
    pub template_hash: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One agent step: the model's action and what the sandbox answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub index: u32,
    /// The shell command run (or another tool's input: see `tool`), or `None` for a format
    /// error or submit.
    pub action: Option<String>,
    pub observation: String,
    pub observation_truncated: bool,
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// Sandbox time for the action.
    pub duration_ms: u64,
    /// LLM time for the reply, retries included.
    pub llm_duration_ms: u64,
    /// Prompt tokens billed at the input price (cached ones excluded).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens read from and written to the provider's cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
    /// The provider reported no usage: tokens and cost are estimated from the text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cost_estimated: bool,
    /// LLM attempts beyond the first (429, 5xx, timeouts).
    pub llm_retries: u32,
    /// The model that answered (differs from the record's when a fallback served).
    pub model: String,
    pub format_error: bool,
    /// Messages (indices into `messages`) the model saw elided in this step's request, by
    /// the context policy; the record keeps them whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_elided: Vec<usize>,
    /// The tool `action` was the input of, when not `bash` (the `edit` scaffold's
    /// `str_replace_editor`: its arguments as JSON); absent for a shell command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// How a rollout's patch was verified, in a fresh sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Exit code of the eval script (tests of a per-test harness exit non-zero whenever
    /// any test fails, so there the grade decides, not this).
    pub eval_exit_code: Option<i64>,
    pub resolved: bool,
    /// 1 when resolved, else 0.
    pub reward: f64,
    /// The patch applied to a fresh sandbox.
    pub patch_applied: bool,
    pub output: String,
    pub duration_ms: u64,
    /// The public harness reproduced, for tasks graded per test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness: Option<Harness>,
    /// FAIL_TO_PASS tests that passed and that failed (per-test harnesses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_to_pass: Option<TestSplit>,
    /// PASS_TO_PASS tests that still pass and that broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_to_pass: Option<TestSplit>,
    /// SWE-bench's resolution: `full` (resolved), `partial` or `no`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
    pub llm_calls: u32,
    pub llm_retries: u32,
    pub n_steps: u32,
}

impl Totals {
    /// Adds a call's cost, kept exact in micro-dollars (rounded up) across the sum.
    pub fn add_cost(&mut self, cost: crate::MicroUsd) {
        self.cost_usd = crate::MicroUsd::from_usd_ceil(self.cost_usd)
            .saturating_add(cost)
            .as_usd();
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: u64,
    pub llm_ms: u64,
    pub sandbox_ms: u64,
    pub verification_ms: u64,
    /// Time the infrastructure made the agent wait (rate limits, retried LLM calls,
    /// fallbacks, a busy budget): not counted against `rollout_timeout_s`.
    #[serde(default)]
    pub infra_wait_ms: u64,
    /// Time counted against `rollout_timeout_s` so far — the agent's own (the model's
    /// generation and the commands), not the infrastructure's — carried over when a
    /// rollout resumes.
    #[serde(default)]
    pub agent_ms: u64,
}

impl Timings {
    /// The timings of a rollout started at `at`: nothing measured yet.
    pub fn started(at: DateTime<Utc>) -> Timings {
        Timings {
            started_at: at,
            finished_at: None,
            duration_ms: 0,
            llm_ms: 0,
            sandbox_ms: 0,
            verification_ms: 0,
            infra_wait_ms: 0,
            agent_ms: 0,
        }
    }
}

/// A whole rollout. Written after every step (so a crash keeps a partial record) and once
/// more, complete, at commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryRecord {
    pub schema_version: u32,
    pub trajectory_id: String,
    pub campaign: String,
    pub instance_id: String,
    pub sample_index: u32,
    /// Pool entry name.
    pub model: String,
    /// The `[[routes]]` entry that chose the model (`default`: the `[[models]]` weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub provider: String,
    pub scaffold: ScaffoldInfo,
    pub messages: Vec<ChatMessage>,
    /// Tool schemas offered to the model (tool-calling protocol), OpenAI format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    pub steps: Vec<Step>,
    pub patch: String,
    /// `None` while the rollout is still running.
    pub exit_status: Option<ExitStatus>,
    /// Why the rollout ended in error, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub verification: Option<Verification>,
    pub totals: Totals,
    pub timings: Timings,
    pub image: String,
    pub image_digest: Option<String>,
    /// What the agent started from and what graded it (records before it was kept have
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    pub worker_id: String,
    /// Receive count of the queue message that produced this attempt.
    pub attempt: u32,
    #[serde(default)]
    pub tags: serde_json::Map<String, Value>,
    /// The number of steps this record carried over from an interrupted attempt, when it
    /// continued one ([`crate::resume`]); `None` when the rollout ran from step 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_step: Option<u32>,
    /// Every resume of this rollout, oldest first: who resumed, when, from what, and how
    /// the sandbox was rebuilt (or why it could not be).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<crate::resume::Resume>,
    /// The `[[variants]]` arm the sample belongs to, in an experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// The environment a rollout ran in, beside the image digest: enough to trace a dataset row
/// to exactly what the agent saw and what graded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The agent's working directory.
    pub workdir: String,
    /// The one commit the agent's repository held at its first step (see
    /// [`crate::start`]); `None` when the workdir is no git repository. The patch is the
    /// agent's diff against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_commit: Option<String>,
    /// SHA-256 of the task's verification ([`crate::task::Task::harness_hash`]).
    pub harness_hash: String,
}

impl TrajectoryRecord {
    /// `success` when verification resolved the task; everything else is `failed`.
    pub fn status(&self) -> RecordStatus {
        match &self.verification {
            Some(v) if v.resolved => RecordStatus::Success,
            _ => RecordStatus::Failed,
        }
    }

    pub fn object_key(&self) -> String {
        object_key(
            &self.campaign,
            self.status(),
            &self.instance_id,
            &self.trajectory_id,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    Success,
    Failed,
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Success => "success",
            RecordStatus::Failed => "failed",
        }
    }
}

/// `trajectories/{campaign}/{status}/{instance_id}/{trajectory_id}.json.zst`
pub fn object_key(
    campaign: &str,
    status: RecordStatus,
    instance_id: &str,
    trajectory_id: &str,
) -> String {
    format!(
        "trajectories/{campaign}/{}/{instance_id}/{trajectory_id}.json.zst",
        status.as_str()
    )
}

/// Where the mid-run records of one sample's rollouts are kept until one commits: a prefix
/// per sample, so a commit removes the checkpoints of every earlier, crashed attempt too
/// and no dataset counts a partial rollout beside the finished one.
pub fn checkpoint_prefix(campaign: &str, instance_id: &str, sample_index: u32) -> String {
    format!("checkpoints/{campaign}/{instance_id}/{sample_index:06}/")
}

pub fn checkpoint_key(
    campaign: &str,
    instance_id: &str,
    sample_index: u32,
    trajectory_id: &str,
) -> String {
    format!(
        "{}{trajectory_id}.json.zst",
        checkpoint_prefix(campaign, instance_id, sample_index)
    )
}

/// Whether an object expires after [`crate::store::FAILED_RETENTION_DAYS`]: failed records,
/// and checkpoints no commit cleaned up (a rollout whose sample was never finished).
pub fn expires(key: &str) -> bool {
    status_of_key(key) == Some(RecordStatus::Failed) || key.starts_with("checkpoints/")
}

/// The status segment of a key laid out by [`object_key`], read by position: a campaign or
/// instance named `failed` does not make a success look failed.
pub fn status_of_key(key: &str) -> Option<RecordStatus> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["trajectories", _, status, _, file] if file.ends_with(".json.zst") => match *status {
            "success" => Some(RecordStatus::Success),
            "failed" => Some(RecordStatus::Failed),
            _ => None,
        },
        _ => None,
    }
}

/// Replaces a known secret everywhere it appears in a text.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 8)
        .fold(text.to_owned(), |acc, secret| {
            acc.replace(secret.as_str(), "[REDACTED]")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_round_trips_as_string() {
        for status in [
            ExitStatus::Submitted,
            ExitStatus::StepLimit,
            ExitStatus::ContextExceeded,
            ExitStatus::BudgetExhausted,
            ExitStatus::Error(ErrorKind::LlmUnavailable),
        ] {
            let json = serde_json::to_string(&status).expect("serialise");
            assert_eq!(
                serde_json::from_str::<ExitStatus>(&json).expect("parse"),
                status
            );
        }
        assert_eq!(
            serde_json::to_string(&ExitStatus::Error(ErrorKind::LlmMalformed)).expect("serialise"),
            "\"error:llm_malformed\""
        );
        assert!(serde_json::from_str::<ExitStatus>("\"error:nope\"").is_err());
    }

    #[test]
    fn the_status_of_a_key_is_read_by_position() {
        let key = object_key("failed", RecordStatus::Success, "failed", "01ABC");
        assert_eq!(status_of_key(&key), Some(RecordStatus::Success));
        let key = object_key("c", RecordStatus::Failed, "t", "01ABC");
        assert_eq!(status_of_key(&key), Some(RecordStatus::Failed));
        assert_eq!(status_of_key("quality/failed/report.json"), None);
        assert!(expires(&object_key(
            "c",
            RecordStatus::Failed,
            "t",
            "01ABC"
        )));
        assert!(expires(&checkpoint_key("c", "t", 0, "01ABC")));
        assert!(!expires(&object_key(
            "c",
            RecordStatus::Success,
            "t",
            "01ABC"
        )));
        assert!(!expires("quality/c/report.json"));
    }

    #[test]
    fn redacts_secrets() {
        assert_eq!(
            redact("key sk-12345678 x", &["sk-12345678".into()]),
            "key [REDACTED] x"
        );
    }
}
