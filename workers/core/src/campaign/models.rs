//! The model pool (`[[models]]`): providers, limits and prices, and what a call costs —
//! as used and, for budget reservations, at worst.

use crate::MicroUsd;
use serde::{Deserialize, Serialize};

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

impl ProviderKind {
    /// The provider as campaign files and records name it (`openai`, `anthropic`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Replay => "replay",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::Protocol;

    #[test]
    fn providers_and_protocols_print_as_campaign_files_name_them() {
        for provider in [
            ProviderKind::Openai,
            ProviderKind::Anthropic,
            ProviderKind::Bedrock,
            ProviderKind::Replay,
        ] {
            assert_eq!(serde_json::json!(provider), provider.to_string());
        }
        for protocol in [Protocol::ToolCalls, Protocol::Text] {
            assert_eq!(serde_json::json!(protocol), protocol.to_string());
        }
    }
}
