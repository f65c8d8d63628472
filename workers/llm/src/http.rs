//! One HTTP chat client for every JSON chat API: the rate limit, the retries (backoff,
//! `Retry-After`), the fault classes and the usage fallback live here once; what differs
//! between APIs — URL path, headers, request body, reply — is a [`Wire`].

use crate::guards::RateLimit;
use async_trait::async_trait;
use backon::BackoffBuilder;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use synthfleet_core::MicroUsd;
use synthfleet_core::campaign::ModelConfig;
use synthfleet_core::ports::{ChatCompletion, ChatModel, ChatRequest, LlmError, Usage};
use synthfleet_core::trajectory::{ChatMessage, Role, ToolCall};
use tracing::{debug, warn};

/// Longest `Retry-After` honoured; a server asking for more is treated as unavailable.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A reply as a wire format reads it.
#[derive(Debug)]
pub struct Reply {
    pub message: ChatMessage,
    pub usage: Usage,
    pub finish_reason: Option<String>,
}

/// The assistant message of a reply assembled from blocks (Anthropic, Bedrock): empty text
/// and reasoning are absent.
pub(crate) fn assistant(
    content: String,
    reasoning: String,
    tool_calls: Vec<ToolCall>,
) -> ChatMessage {
    ChatMessage {
        role: Role::Assistant,
        content: (!content.is_empty()).then_some(content),
        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls,
        tool_call_id: None,
    }
}

/// A stop reason in the words of Anthropic and Bedrock (`end_turn`, `tool_use`,
/// `max_tokens`, ...) as OpenAI's finish reason, which the record keeps.
pub(crate) fn finish_reason(stop: &str) -> String {
    match stop {
        "end_turn" | "stop_sequence" => "stop",
        "tool_use" => "tool_calls",
        "max_tokens" => "length",
        other => other,
    }
    .to_owned()
}

/// Appends `blocks` to a conversation of `(role, blocks)` turns, merging them into the last
/// turn when it has the same role: Anthropic and Bedrock want turns to alternate.
pub(crate) fn push_turn<R: PartialEq, B>(turns: &mut Vec<(R, Vec<B>)>, role: R, blocks: Vec<B>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, content)) if *last == role => content.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// A tool call's arguments as the JSON object block-based APIs take; arguments that are
/// not an object are passed as `{"arguments": "..."}`.
pub(crate) fn tool_input(call: &ToolCall) -> Value {
    serde_json::from_str::<Value>(&call.function.arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::json!({ "arguments": call.function.arguments }))
}

/// What differs between chat APIs.
pub trait Wire: Send + Sync + 'static {
    /// Appended to the endpoint: `/chat/completions`, `/messages`.
    fn path(&self) -> &'static str;
    /// The key (when the model has one) and any version headers.
    fn authorize(
        &self,
        call: reqwest::RequestBuilder,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder;
    fn body(&self, request: &ChatRequest) -> Value;
    /// The reply, or what is wrong with it (a malformed body is retried like a transport
    /// fault).
    fn parse(&self, text: &str) -> Result<Reply, String>;
}

pub struct HttpChat<W> {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    retries: Retries,
    wire: W,
}

impl<W> std::fmt::Debug for HttpChat<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key is deliberately left out.
        f.debug_struct("HttpChat").field("url", &self.url).finish()
    }
}

/// What went wrong with one attempt.
pub(crate) enum Attempt {
    /// A transport fault: retried at the call, with backoff (or as `after` says).
    Retry {
        reason: String,
        after: Option<Duration>,
        /// The server answered 200 with a body that is not a reply (cut off mid-body, or
        /// garbage): retried like any transport fault, and named so if it persists.
        malformed: bool,
    },
    Fail(LlmError),
}

/// Statuses that say "try again": timeouts, conflicts, too early, rate limits, server
/// errors (Anthropic's 529 "overloaded" among them).
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 425 | 429) || status.is_server_error()
}

/// Whether a rejection says the request is longer than the model's context window (each
/// server words it its own way: OpenAI's `context_length_exceeded`, vLLM's "maximum context
/// length", llama.cpp's "exceeds the available context size", Anthropic's "prompt is too
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

pub(crate) fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 300 {
        format!("{}…", t.chars().take(300).collect::<String>())
    } else {
        t.to_owned()
    }
}

impl<W: Wire> HttpChat<W> {
    /// A client of the pool entry's endpoint (or `default_endpoint`), reading the key from
    /// the environment variable the entry names, paced by `limit` (the fleet's share).
    pub fn new(
        config: &ModelConfig,
        default_endpoint: Option<&str>,
        wire: W,
        limit: Option<RateLimit>,
    ) -> Result<HttpChat<W>, LlmError> {
        let endpoint = config
            .endpoint
            .as_deref()
            .or(default_endpoint)
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
        let url = format!("{}{}", endpoint.trim_end_matches('/'), wire.path());
        Ok(HttpChat {
            http,
            retries: Retries::new(url.clone(), config, limit),
            url,
            api_key,
            wire,
        })
    }

    #[cfg(test)]
    pub(crate) fn wire(&self) -> &W {
        &self.wire
    }

    async fn attempt(&self, body: &Value) -> Result<Reply, Attempt> {
        let call = self.http.post(&self.url).json(body);
        let call = self.wire.authorize(call, self.api_key.as_deref());
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
                // A 200 cut off mid-body was generated, and billed, like a garbled one.
                return Err(Attempt::Retry {
                    reason: format!("reading the body failed (cut off?): {e}"),
                    after: None,
                    malformed: status.is_success(),
                });
            }
        };
        if is_transient(status) {
            if retry_after.is_some_and(|d| d > MAX_RETRY_AFTER) {
                return Err(Attempt::Fail(LlmError::Unavailable {
                    billed: MicroUsd::ZERO,
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
                billed: MicroUsd::ZERO,
            }));
        }
        if !status.is_success() {
            return Err(Attempt::Fail(LlmError::Rejected {
                endpoint: self.url.clone(),
                status: status.as_u16(),
                detail: snippet(&text),
                billed: MicroUsd::ZERO,
            }));
        }
        self.wire.parse(&text).map_err(|detail| Attempt::Retry {
            reason: detail,
            after: None,
            malformed: true,
        })
    }
}

/// The policy every client applies to a call: each attempt paced by the model's rate limit,
/// backoff between attempts (or as the server's `Retry-After` says), a transport fault or
/// malformed reply retried, a failure returned at once; only the attempt that succeeded,
/// from when it was sent, counts as the model's generation time.
pub(crate) struct Retries {
    endpoint: String,
    max_attempts: u32,
    backoff: backon::ExponentialBuilder,
    /// The model's prices: what broken but answered attempts cost.
    pricing: ModelConfig,
    limit: Option<RateLimit>,
}

impl Retries {
    pub(crate) fn new(endpoint: String, config: &ModelConfig, limit: Option<RateLimit>) -> Retries {
        Retries {
            endpoint,
            max_attempts: config.max_attempts,
            pricing: config.clone(),
            limit,
            backoff: backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(60))
                .with_jitter()
                .without_max_times(),
        }
    }

    pub(crate) async fn run<F, Fut>(
        &self,
        request: &ChatRequest,
        mut attempt: F,
    ) -> Result<ChatCompletion, LlmError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Reply, Attempt>>,
    {
        let mut delays = self.backoff.build();
        let mut last = String::new();
        let mut last_malformed = false;
        // A 200 with a broken body was generated, and billed: each counts as the prompt and
        // a full reply, estimated.
        let mut billed = Usage::default();
        let prompt = crate::estimate_request_tokens(request);
        let tokens = prompt + u64::from(request.max_tokens);
        for attempt_no in 1..=self.max_attempts {
            if let Some(limit) = &self.limit {
                limit.until_ready(tokens).await;
            }
            let sent = std::time::Instant::now();
            match attempt().await {
                Ok(reply) => {
                    let mut usage = reply.usage;
                    if usage.is_empty() {
                        // Some self-hosted servers omit usage: estimate from everything
                        // sent and received, and say so.
                        usage = crate::estimate_usage(request, &reply.message);
                    }
                    usage.add(billed);
                    return Ok(ChatCompletion {
                        message: reply.message,
                        usage,
                        retries: attempt_no - 1,
                        finish_reason: reply.finish_reason,
                        generation: sent.elapsed(),
                    });
                }
                Err(Attempt::Fail(e)) => return Err(e.with_billed(self.pricing.cost(&billed))),
                Err(Attempt::Retry {
                    reason,
                    after,
                    malformed,
                }) => {
                    let backoff = delays.next().unwrap_or(Duration::from_secs(60));
                    let wait = after.unwrap_or(backoff);
                    if attempt_no < self.max_attempts {
                        warn!(endpoint = %self.endpoint, attempt = attempt_no, wait_ms = wait.as_millis() as u64, %reason, "LLM call failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    last = reason;
                    last_malformed = malformed;
                    if malformed {
                        billed.add(Usage {
                            input_tokens: prompt,
                            output_tokens: u64::from(request.max_tokens),
                            estimated: true,
                            ..Usage::default()
                        });
                    }
                }
            }
        }
        debug!(endpoint = %self.endpoint, "LLM attempts exhausted");
        let billed = self.pricing.cost(&billed);
        Err(if last_malformed {
            LlmError::Malformed {
                endpoint: self.endpoint.clone(),
                detail: format!("{last} (after {} attempts)", self.max_attempts),
                billed,
            }
        } else {
            LlmError::Unavailable {
                endpoint: self.endpoint.clone(),
                attempts: self.max_attempts,
                last,
                billed,
            }
        })
    }
}

#[async_trait]
impl<W: Wire> ChatModel for HttpChat<W> {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatCompletion, LlmError> {
        let body = self.wire.body(request);
        self.retries.run(request, || self.attempt(&body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert!(is_context_overflow(StatusCode::BAD_REQUEST, anthropic));
        assert!(!is_context_overflow(
            StatusCode::BAD_REQUEST,
            r#"{"error":"unknown model"}"#
        ));
        assert!(!is_context_overflow(StatusCode::UNAUTHORIZED, openai));
    }
}
