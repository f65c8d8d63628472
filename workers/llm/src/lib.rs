//! LLM clients behind [`synthfleet_core::ports::ChatModel`].
//!
//! * [`OpenAiChat`]: any server speaking OpenAI's `/chat/completions` (OpenAI, vLLM,
//!   llama.cpp, Ollama, ...). Rate-limited per model, retried with exponential backoff on
//!   429/5xx/timeouts, honouring `Retry-After`.
//! * [`ReplayChat`]: keyless, plays the scripted actions of a task.
//! * [`ModelPool`]: the campaign's models, with fallbacks.
//! * [`Meter`]: the budgeted call (reserve → call → settle) every caller goes through.

mod metered;
mod openai;
mod pool;
mod replay;

pub use metered::{Meter, MeterError, Metered, MeteredCall, MeteredRequest};
pub use openai::OpenAiChat;
pub use pool::{ModelPool, PoolCompletion};
pub use replay::ReplayChat;

/// A rough, deliberately high token estimate for text (used for budget reservations and
/// for providers that report no usage): about 3 characters per token.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(3)
}

/// Token estimate for a whole request: messages plus tool schemas plus per-message overhead.
pub fn estimate_request_tokens(request: &synthfleet_core::ports::ChatRequest) -> u64 {
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| {
            8 + estimate_tokens(m.content.as_deref().unwrap_or(""))
                + m.tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.function.arguments) + 8)
                    .sum::<u64>()
        })
        .sum();
    let tools: u64 = request
        .tools
        .iter()
        .map(|t| estimate_tokens(&t.to_string()))
        .sum();
    messages + tools
}
