//! OpenAI-compatible chat completions.

use async_trait::async_trait;
use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use synthfleet_core::campaign::ModelConfig;
use synthfleet_core::ports::{ChatCompletion, ChatModel, ChatRequest, LlmError};
use synthfleet_core::trajectory::{ChatMessage, Role, ToolCall};
use tracing::{debug, warn};

/// Longest `Retry-After` honoured; a server asking for more is treated as unavailable.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

pub struct OpenAiChat {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    max_attempts: u32,
    max_tokens_field: &'static str,
    extra_body: serde_json::Map<String, Value>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    backoff: backon::ExponentialBuilder,
}

impl std::fmt::Debug for OpenAiChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key is deliberately left out.
        f.debug_struct("OpenAiChat")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish()
    }
}

/// What went wrong with one attempt.
enum Attempt {
    /// A transport fault: retried at the call, with backoff (or as `after` says).
    Retry {
        reason: String,
        after: Option<Duration>,
        /// The server answered 200 with a body that is not a chat completion (cut off mid-body,
        /// or garbage): retried like any transport fault, and named so if it persists.
        malformed: bool,
    },
    Fail(LlmError),
}

/// Statuses that say "try again": timeouts, conflicts, too early, rate limits, server errors.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 425 | 429) || status.is_server_error()
}

/// Whether a rejection says the request is longer than the model's context window (each
/// server words it its own way: OpenAI's `context_length_exceeded`, vLLM's "maximum context
/// length", llama.cpp's "exceeds the available context size", Anthropic-style "prompt is too
/// long").
fn is_context_overflow(status: StatusCode, body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    matches!(status.as_u16(), 400 | 413 | 422)
        && [
            "context_length_exceeded",
            "maximum context length",
            "context length",
            "context size",
            "context window",
            "prompt is too long",
            "too many tokens",
        ]
        .iter()
        .any(|needle| body.contains(needle))
}

impl OpenAiChat {
    /// Builds a client from a pool entry, reading the key from the environment variable
    /// the entry names.
    pub fn from_config(config: &ModelConfig) -> Result<OpenAiChat, LlmError> {
        let endpoint = config
            .endpoint
            .as_deref()
            .ok_or_else(|| LlmError::Config(format!("model `{}` has no endpoint", config.name)))?;
        let api_key = match &config.api_key_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|_| {
                LlmError::Config(format!(
                    "model `{}` reads its API key from ${var}, which is not set; export it (or remove api_key_env for a keyless server)",
                    config.name
                ))
            })?),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.request_timeout_s))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("synthfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build an HTTP client: {e}")))?;
        let limiter = config
            .requests_per_minute
            .and_then(NonZeroU32::new)
            .map(|rpm| Arc::new(RateLimiter::direct(Quota::per_minute(rpm))));
        Ok(OpenAiChat {
            http,
            url: format!("{}/chat/completions", endpoint.trim_end_matches('/')),
            model: config.model_id().to_owned(),
            api_key,
            max_attempts: config.max_attempts,
            max_tokens_field: config.max_tokens_field.as_str(),
            extra_body: config.extra_body.clone(),
            limiter,
            backoff: backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(60))
                .with_jitter()
                .without_max_times(),
        })
    }

    /// Shortens the delays between retries (tests).
    pub fn with_min_backoff(mut self, min: Duration) -> OpenAiChat {
        self.backoff = self.backoff.with_min_delay(min).with_max_delay(min * 8);
        self
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let mut body = Value::Object(self.extra_body.clone());
        body["model"] = json!(self.model);
        body["messages"] = json!(request.messages);
        body[self.max_tokens_field] = json!(request.max_tokens);
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if !request.tools.is_empty() {
            body["tools"] = Value::Array(request.tools.clone());
            body["tool_choice"] = json!("auto");
        }
        body
    }

    async fn attempt(&self, body: &Value) -> Result<ChatCompletion, Attempt> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let sent = std::time::Instant::now();
        let mut call = self.http.post(&self.url).json(body);
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let response = match call.send().await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "connection failed"
                };
                return Err(Attempt::Retry {
                    reason: format!("{kind}: {e}"),
                    after: None,
                    malformed: false,
                });
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => {
                return Err(Attempt::Retry {
                    reason: format!("reading the body failed (cut off?): {e}"),
                    after: None,
                    malformed: false,
                });
            }
        };
        if is_transient(status) {
            if retry_after.is_some_and(|d| d > MAX_RETRY_AFTER) {
                return Err(Attempt::Fail(LlmError::Unavailable {
                    endpoint: self.url.clone(),
                    attempts: 1,
                    last: format!(
                        "{status} with Retry-After beyond {}s",
                        MAX_RETRY_AFTER.as_secs()
                    ),
                }));
            }
            return Err(Attempt::Retry {
                reason: format!("{status}: {}", snippet(&text)),
                after: retry_after,
                malformed: false,
            });
        }
        if is_context_overflow(status, &text) {
            return Err(Attempt::Fail(LlmError::ContextExceeded {
                endpoint: self.url.clone(),
                detail: snippet(&text),
            }));
        }
        if !status.is_success() {
            return Err(Attempt::Fail(LlmError::Rejected {
                endpoint: self.url.clone(),
                status: status.as_u16(),
                detail: snippet(&text),
            }));
        }
        let mut completion = parse_completion(&text).map_err(|detail| Attempt::Retry {
            reason: detail,
            after: None,
            malformed: true,
        })?;
        completion.generation = sent.elapsed();
        Ok(completion)
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 300 {
        format!("{}…", t.chars().take(300).collect::<String>())
    } else {
        t.to_owned()
    }
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default, alias = "reasoning")]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// Parses a chat-completion body; the error says what is missing.
fn parse_completion(text: &str) -> Result<ChatCompletion, String> {
    let wire: WireResponse = serde_json::from_str(text).map_err(|e| {
        format!(
            "not a chat completion ({e}); body starts with {:?}",
            snippet(text)
        )
    })?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| "the completion has no choices".to_owned())?;
    let message = ChatMessage {
        role: Role::Assistant,
        content: choice.message.content,
        reasoning_content: choice.message.reasoning_content.filter(|r| !r.is_empty()),
        tool_calls: choice.message.tool_calls.unwrap_or_default(),
        tool_call_id: None,
    };
    let (input_tokens, output_tokens) = match wire.usage {
        Some(u) => (u.prompt_tokens, u.completion_tokens),
        None => (0, 0),
    };
    Ok(ChatCompletion {
        message,
        input_tokens,
        output_tokens,
        retries: 0,
        finish_reason: choice.finish_reason,
        generation: Duration::ZERO,
    })
}

#[async_trait]
impl ChatModel for OpenAiChat {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatCompletion, LlmError> {
        let body = self.body(request);
        let mut delays = self.backoff.build();
        let mut last = String::new();
        let mut last_malformed = false;
        for attempt in 1..=self.max_attempts {
            match self.attempt(&body).await {
                Ok(mut completion) => {
                    completion.retries = attempt - 1;
                    if completion.input_tokens == 0 && completion.output_tokens == 0 {
                        // Some self-hosted servers omit usage: estimate rather than record zero.
                        completion.input_tokens = crate::estimate_request_tokens(request);
                        completion.output_tokens = crate::estimate_tokens(
                            &completion.message.content.clone().unwrap_or_default(),
                        );
                    }
                    return Ok(completion);
                }
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry {
                    reason,
                    after,
                    malformed,
                }) => {
                    let backoff = delays.next().unwrap_or(Duration::from_secs(60));
                    let wait = after.unwrap_or(backoff);
                    if attempt < self.max_attempts {
                        warn!(url = %self.url, attempt, wait_ms = wait.as_millis() as u64, %reason, "LLM call failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    last = reason;
                    last_malformed = malformed;
                }
            }
        }
        debug!(url = %self.url, "LLM attempts exhausted");
        Err(if last_malformed {
            LlmError::Malformed {
                endpoint: self.url.clone(),
                detail: format!("{last} (after {} attempts)", self.max_attempts),
            }
        } else {
            LlmError::Unavailable {
                endpoint: self.url.clone(),
                attempts: self.max_attempts,
                last,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_follows_the_model_config() {
        let config: ModelConfig = serde_json::from_value(serde_json::json!({
            "name": "o", "provider": "openai", "endpoint": "http://127.0.0.1:9/v1",
            "max_tokens_field": "max_completion_tokens", "temperature": 0.2,
            "extra_body": {"reasoning_effort": "low", "model": "ignored"}
        }))
        .expect("config");
        let client = OpenAiChat::from_config(&config).expect("client");
        let body = client.body(&ChatRequest {
            messages: vec![ChatMessage::text(Role::User, "hi")],
            tools: vec![json!({"type": "function"})],
            max_tokens: 77,
            temperature: Some(0.2),
        });
        assert_eq!(body["max_completion_tokens"], 77);
        assert!(body.get("max_tokens").is_none());
        assert_eq!(body["reasoning_effort"], "low");
        assert_eq!(body["model"], "o", "extra fields never override the model");
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(body["messages"][0]["content"], "hi");
    }

    #[test]
    fn parses_tool_calls_reasoning_and_usage() {
        let body = r#"{"choices":[{"message":{"role":"assistant","content":null,"reasoning":"think",
            "tool_calls":[{"id":"c1","type":"function","function":{"name":"bash","arguments":"{\"command\":\"ls\"}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":12,"completion_tokens":5}}"#;
        let c = parse_completion(body).expect("valid");
        assert_eq!(c.message.tool_calls[0].function.name, "bash");
        assert_eq!(c.message.reasoning_content.as_deref(), Some("think"));
        assert_eq!((c.input_tokens, c.output_tokens), (12, 5));
    }

    #[test]
    fn transient_statuses_and_context_overflows_are_told_apart() {
        for code in [408, 409, 425, 429, 500, 502, 503, 529] {
            assert!(
                is_transient(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(
                !is_transient(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
        let openai = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","code":"context_length_exceeded"}}"#;
        assert!(is_context_overflow(StatusCode::BAD_REQUEST, openai));
        let llama = r#"{"error":{"message":"the request exceeds the available context size"}}"#;
        assert!(is_context_overflow(StatusCode::BAD_REQUEST, llama));
        assert!(!is_context_overflow(
            StatusCode::BAD_REQUEST,
            r#"{"error":"unknown model"}"#
        ));
        assert!(!is_context_overflow(StatusCode::UNAUTHORIZED, openai));
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        assert!(
            parse_completion("{\"choices\":[]}")
                .expect_err("empty")
                .contains("no choices")
        );
        assert!(
            parse_completion("<html>")
                .expect_err("html")
                .contains("not a chat completion")
        );
    }
}
