//! LLM clients behind [`synthfleet_core::ports::ChatModel`].
//!
//! * [`HttpChat`]: one client for every JSON chat API — rate-limited per model, retried
//!   with exponential backoff on 429/5xx/timeouts/cut-off bodies, honouring `Retry-After` —
//!   over a wire format: [`OpenAiChat`] (any server speaking OpenAI's `/chat/completions`:
//!   OpenAI, vLLM, llama.cpp, Ollama, ...) and [`AnthropicChat`] (Anthropic's Messages API).
//! * `BedrockChat` (feature `bedrock`): Amazon Bedrock's Converse API through the AWS SDK,
//!   under the same retry policy and rate limits.
//! * [`ModelGuards`]: each model's `requests_per_minute`, held for the whole fleet, and its
//!   circuit breaker.
//! * [`ReplayChat`]: keyless, plays the scripted actions of a task.
//! * [`ModelPool`]: the campaign's models, with fallbacks.
//! * [`Meter`]: the budgeted call (hold → call → book) every caller goes through, on the
//!   budget slices of the process's [`Wallet`].

mod anthropic;
#[cfg(feature = "bedrock")]
mod bedrock;
mod guards;
mod http;
mod metered;
mod openai;
mod pool;
mod replay;
mod wallet;

pub use anthropic::AnthropicWire;
#[cfg(feature = "bedrock")]
pub use bedrock::BedrockChat;
pub use guards::{BREAKER_COOLDOWN, BREAKER_THRESHOLD, ModelGuards, RateLimit};
pub use http::{HttpChat, Reply, Wire};
pub use metered::{Meter, MeterError, Metered, MeteredCall, MeteredRequest};
pub use openai::{OpenAiChat, OpenAiWire};

/// A client of Anthropic's Messages API.
pub type AnthropicChat = HttpChat<AnthropicWire>;
pub use pool::{ModelPool, PoolCompletion};
pub use replay::ReplayChat;
pub use wallet::{Hold, Holding, IDLE_RETURN, SLICE_CALLS, Wallet};

/// A rough, deliberately high token estimate for text (used for budget reservations and
/// for providers that report no usage): about 3 characters per token.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(3)
}

/// The usage of a call whose provider reported none: the request as sent, the reply with
/// its reasoning and tool calls, marked estimated.
pub fn estimate_usage(
    request: &synthfleet_core::ports::ChatRequest,
    reply: &synthfleet_core::trajectory::ChatMessage,
) -> synthfleet_core::ports::Usage {
    let reply_tokens = estimate_tokens(reply.content.as_deref().unwrap_or(""))
        + estimate_tokens(reply.reasoning_content.as_deref().unwrap_or(""))
        + reply
            .tool_calls
            .iter()
            .map(|c| estimate_tokens(&c.function.name) + estimate_tokens(&c.function.arguments) + 8)
            .sum::<u64>();
    synthfleet_core::ports::Usage {
        input_tokens: estimate_request_tokens(request),
        output_tokens: reply_tokens,
        estimated: true,
        ..Default::default()
    }
}

/// Token estimate for a whole request: messages plus tool schemas plus per-message overhead.
pub fn estimate_request_tokens(request: &synthfleet_core::ports::ChatRequest) -> u64 {
    estimate_messages_tokens(&request.messages) + estimate_tools_tokens(&request.tools)
}

/// Token estimate of tool schemas.
pub fn estimate_tools_tokens(tools: &[serde_json::Value]) -> u64 {
    tools.iter().map(|t| estimate_tokens(&t.to_string())).sum()
}

/// Token estimate of messages, with their tool calls and a per-message overhead.
pub fn estimate_messages_tokens(messages: &[synthfleet_core::trajectory::ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| {
            8 + estimate_tokens(m.content.as_deref().unwrap_or(""))
                + m.tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.function.arguments) + 8)
                    .sum::<u64>()
        })
        .sum()
}
