//! A fake LLM server for tests, speaking OpenAI's chat completions (`/v1/chat/completions`)
//! and Anthropic's Messages API (`/v1/messages`).
//!
//! It plays scripted actions per task (a script is picked by a needle found in the first
//! user message; the step is the number of assistant turns so far), in whichever protocol
//! the request uses, and injects faults: statuses with `Retry-After`, slow replies and
//! malformed bodies. Usage is reported as about 4 characters per token, so the client's
//! worst-case estimate (3 characters per token) stays above it. The Messages route checks
//! what Anthropic's API checks (version header, alternating turns, a `tool_result` for
//! every `tool_use`, the signed thinking of the last tool call sent back) and reports
//! prompt-cache reads and writes when the request marks blocks for caching.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds when given).
    Status { code: u16, retry_after: Option<u64> },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer 200 with a body that is not a chat completion.
    Malformed,
    /// Answer 400 as the API does when the conversation outgrows the context window.
    ContextOverflow,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub needle: String,
    /// Replies in order. `submit` submits; `edit:` and a JSON object is a call of the file
    /// editor (an ```` ```edit ```` block in text mode); text starting with `raw:` is sent
    /// verbatim as the assistant's content (for format errors); anything else is a command.
    pub actions: Vec<String>,
    /// Applied to every request of this script.
    pub always: Option<Fault>,
    /// First actions taken in turn by the conversations of this script (the first
    /// conversation's first action is the first of these, the second's the second, ...),
    /// instead of `actions[0]`: samples of one task with known, different outcomes.
    pub openings: Vec<String>,
}

impl Script {
    pub fn new(needle: &str, actions: &[&str]) -> Script {
        Script {
            needle: needle.into(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            always: None,
            openings: Vec::new(),
        }
    }

    /// A script whose conversations open with `openings` in turn, then go on with `rest`
    /// (from their second turn).
    pub fn alternating(needle: &str, openings: &[&str], rest: &[&str]) -> Script {
        let mut script = Script::new(needle, rest);
        // Turn 0 is an opening's; `rest` answers turns 1, 2, ...
        script.actions.insert(0, String::new());
        script.openings = openings.iter().map(|s| s.to_string()).collect();
        script
    }
}

#[derive(Default)]
struct Shared {
    scripts: Vec<Script>,
    /// Conversations opened so far, by script (for `Script::openings`).
    opened: Mutex<std::collections::HashMap<String, usize>>,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<Value>>,
    /// When each request arrived.
    arrivals: Mutex<Vec<std::time::Instant>>,
    /// Requests longer than this many tokens (4 characters each) overflow; 0: no limit.
    context_window: std::sync::atomic::AtomicU64,
    authorization: Mutex<Vec<String>>,
}

pub struct FakeLlm {
    /// Base URL up to and including `/v1`.
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl FakeLlm {
    /// Starts a server on a free loopback port, on its own thread (so it serves
    /// processes spawned by blocking tests too).
    pub fn start(scripts: Vec<Script>) -> FakeLlm {
        let shared = Arc::new(Shared {
            scripts,
            ..Shared::default()
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/messages", post(messages))
            .route("/v1/model/{model}/converse", post(converse))
            .with_state(shared.clone());
        let (addr, shutdown) = crate::serve(app);
        FakeLlm {
            url: format!("http://{addr}/v1"),
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// Faults applied, in order, to the next requests (one each).
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.faults.lock().expect("faults").extend(faults);
    }

    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// The prompt tokens of every request so far, counted as this server counts usage.
    pub fn prompt_tokens(&self) -> u64 {
        self.requests()
            .iter()
            .map(|r| estimate(&r.to_string()))
            .sum()
    }

    /// Refuses, as a context overflow, every request longer than `tokens` (counted as
    /// this server counts usage).
    pub fn set_context_window(&self, tokens: u64) {
        self.shared
            .context_window
            .store(tokens, std::sync::atomic::Ordering::Relaxed);
    }

    /// When each request arrived, in order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.shared.arrivals.lock().expect("arrivals").clone()
    }

    pub fn authorization_headers(&self) -> Vec<String> {
        self.shared
            .authorization
            .lock()
            .expect("authorization")
            .clone()
    }
}

fn estimate(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
    Bedrock,
}

/// Bedrock names its errors in a header the SDK reads.
fn bedrock_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut response = (status, json!({ "message": message }).to_string()).into_response();
    if let Ok(value) = kind.parse() {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

fn apply(fault: &Fault, api: Api) -> Option<Response> {
    if api == Api::Bedrock {
        return match fault {
            Fault::Status { code, .. } => {
                let status =
                    StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let kind = match code {
                    429 => "ThrottlingException",
                    503 => "ServiceUnavailableException",
                    c if *c >= 500 => "InternalServerException",
                    _ => "ValidationException",
                };
                Some(bedrock_error(status, kind, "injected fault"))
            }
            Fault::Malformed => Some((StatusCode::OK, "{\"output\": {\"mess").into_response()),
            Fault::ContextOverflow => Some(bedrock_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "Input is too long for requested model.",
            )),
            Fault::Delay(_) => None,
        };
    }
    match fault {
        Fault::Status { code, retry_after } => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                status,
                json!({"error": {"message": "injected fault"}}).to_string(),
            )
                .into_response();
            if let Some(seconds) = retry_after
                && let Ok(value) = seconds.to_string().parse()
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Some(response)
        }
        Fault::Malformed => Some(
            (
                StatusCode::OK,
                match api {
                    Api::Anthropic => "{\"content\": [{\"type\": \"te",
                    _ => "{\"choices\": [{\"mess",
                },
            )
                .into_response(),
        ),
        Fault::ContextOverflow => Some(
            (
                StatusCode::BAD_REQUEST,
                match api {
                    Api::OpenAi | Api::Bedrock => json!({"error": {
                        "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens.",
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded"
                    }}),
                    Api::Anthropic => json!({"type": "error", "error": {
                        "type": "invalid_request_error",
                        "message": "prompt is too long: 210000 tokens > 200000 maximum"
                    }}),
                }
                .to_string(),
            )
                .into_response(),
        ),
        Fault::Delay(_) => None,
    }
}

/// The task of a conversation (its first user text, in any API's shape: a string or
/// blocks with `text`) and its turn (assistant turns so far).
fn task_and_turn(request: &Value) -> (String, usize) {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let first_user = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| {
            m["content"].as_str().map(str::to_owned).or_else(|| {
                m["content"]
                    .as_array()?
                    .iter()
                    .find_map(|b| b["text"].as_str())
                    .map(str::to_owned)
            })
        })
        .unwrap_or_default();
    let turn = messages.iter().filter(|m| m["role"] == "assistant").count();
    (first_user, turn)
}

/// What to answer to this request: the script's action at its turn (and the turn), or a
/// fault (or a refusal) to send.
async fn play(
    shared: &Shared,
    request: &Value,
    body: &str,
    api: Api,
) -> Result<(String, usize), Response> {
    let (first_user, turn) = task_and_turn(request);
    let prompt_tokens = estimate(body);
    shared
        .requests
        .lock()
        .expect("requests")
        .push(request.clone());
    shared
        .arrivals
        .lock()
        .expect("arrivals")
        .push(std::time::Instant::now());
    let script = shared
        .scripts
        .iter()
        .find(|s| first_user.contains(&s.needle))
        .cloned();
    let window = shared
        .context_window
        .load(std::sync::atomic::Ordering::Relaxed);
    if window > 0 && prompt_tokens > window {
        return Err(apply(&Fault::ContextOverflow, api).expect("an overflow answers"));
    }
    let fault = shared.faults.lock().expect("faults").pop_front();
    for fault in fault
        .iter()
        .chain(script.as_ref().and_then(|s| s.always.as_ref()))
    {
        if let Fault::Delay(d) = fault {
            tokio::time::sleep(*d).await;
        }
        if let Some(response) = apply(fault, api) {
            return Err(response);
        }
    }
    let Some(script) = script else {
        return Err((StatusCode::BAD_REQUEST, "no script matches this task").into_response());
    };
    if turn == 0 && !script.openings.is_empty() {
        let mut opened = shared.opened.lock().expect("openings");
        let n = opened.entry(script.needle.clone()).or_default();
        let action = script.openings[*n % script.openings.len()].clone();
        *n += 1;
        return Ok((action, turn));
    }
    let action = script
        .actions
        .get(turn)
        .cloned()
        .unwrap_or_else(|| "submit".into());
    Ok((action, turn))
}

fn json_response(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn remember_key(shared: &Shared, headers: &HeaderMap, name: header::HeaderName) {
    if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
        shared
            .authorization
            .lock()
            .expect("authorization")
            .push(value.to_owned());
    }
}

/// The tool call of a scripted action: (name, input). `edit:` and a JSON object call the
/// file editor (the `edit` scaffold's `str_replace_editor`).
fn tool_action(action: &str) -> (&'static str, Value) {
    if action == "submit" {
        ("submit", json!({}))
    } else if let Some(arguments) = action.strip_prefix("edit:") {
        (
            "str_replace_editor",
            serde_json::from_str(arguments).unwrap_or_else(|_| json!(arguments)),
        )
    } else {
        ("bash", json!({"command": action}))
    }
}

/// The text-protocol reply of a scripted action: its fenced block.
fn text_action(action: &str) -> String {
    match action.strip_prefix("edit:") {
        Some(arguments) => format!("Next step.\n\n```edit\n{arguments}\n```"),
        None => format!("Next step.\n\n```bash\n{action}\n```"),
    }
}

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    remember_key(&shared, &headers, header::AUTHORIZATION);
    let (action, turn) = match play(&shared, &request, &body, Api::OpenAi).await {
        Ok(played) => played,
        Err(response) => return response,
    };
    let tool_mode = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let message = if let Some(raw) = action.strip_prefix("raw:") {
        json!({"role": "assistant", "content": raw})
    } else if tool_mode {
        let (name, args) = tool_action(&action);
        json!({"role": "assistant", "content": "Working on it.", "reasoning_content": format!("step {turn}"),
               "tool_calls": [{"id": format!("call_{turn}"), "type": "function",
                               "function": {"name": name, "arguments": args.to_string()}}]})
    } else {
        json!({"role": "assistant", "content": text_action(&action)})
    };
    json_response(json!({
        "id": format!("chatcmpl-{turn}"),
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": estimate(&body), "completion_tokens": estimate(&message.to_string())},
    }))
}

/// What Anthropic's API would refuse in this request, if anything.
fn anthropic_refusal(headers: &HeaderMap, request: &Value) -> Option<String> {
    if headers.get("anthropic-version").is_none() {
        return Some("anthropic-version header is required".into());
    }
    if request["max_tokens"].as_u64().is_none() {
        return Some("max_tokens: Field required".into());
    }
    let messages = request["messages"].as_array()?;
    for pair in messages.windows(2) {
        if pair[0]["role"] == pair[1]["role"] {
            return Some(
                "messages: roles must alternate between \"user\" and \"assistant\"".into(),
            );
        }
        let uses: Vec<&Value> = pair[0]["content"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| &b["id"])
                    .collect()
            })
            .unwrap_or_default();
        let results: Vec<&Value> = pair[1]["content"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter(|b| b["type"] == "tool_result")
                    .map(|b| &b["tool_use_id"])
                    .collect()
            })
            .unwrap_or_default();
        if uses.iter().any(|id| !results.contains(id)) {
            return Some(
                "tool_use ids were found without tool_result blocks immediately after".into(),
            );
        }
    }
    // With thinking on, the last assistant turn's thinking must come back, signed.
    let last_assistant = messages.iter().rev().find(|m| m["role"] == "assistant");
    if let Some(last) = last_assistant
        && let Some(blocks) = last["content"].as_array()
        && blocks.iter().any(|b| b["type"] == "tool_use")
        && !blocks
            .first()
            .is_some_and(|b| b["type"] == "thinking" && b["signature"].is_string())
    {
        return Some(
            "messages: the final assistant turn must start with its thinking block".into(),
        );
    }
    None
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    remember_key(
        &shared,
        &headers,
        header::HeaderName::from_static("x-api-key"),
    );
    if let Some(refusal) = anthropic_refusal(&headers, &request) {
        shared.requests.lock().expect("requests").push(request);
        return (
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": refusal}}).to_string(),
        )
            .into_response();
    }
    let (action, turn) = match play(&shared, &request, &body, Api::Anthropic).await {
        Ok(played) => played,
        Err(response) => return response,
    };
    let tool_mode = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    // Tool-use ids are unique across conversations, as Anthropic's are.
    let call_id = format!(
        "toolu_{:04}",
        shared.requests.lock().expect("requests").len()
    );
    let (content, stop) = if let Some(raw) = action.strip_prefix("raw:") {
        (json!([{"type": "text", "text": raw}]), "end_turn")
    } else if tool_mode {
        let (name, input) = tool_action(&action);
        (
            json!([
                {"type": "thinking", "thinking": format!("step {turn}"), "signature": format!("sig-{turn}")},
                {"type": "text", "text": "Working on it."},
                {"type": "tool_use", "id": call_id, "name": name, "input": input},
            ]),
            "tool_use",
        )
    } else {
        (
            json!([{"type": "text", "text": text_action(&action)}]),
            "end_turn",
        )
    };
    // Blocks marked for caching: what came before the newest turn is read from the cache,
    // the newest turn is written to it.
    let prompt = estimate(&body);
    let cached = body.contains("cache_control");
    let newest = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map_or(0, |m| estimate(&m.to_string()));
    let (input, read, written) = match (cached, turn) {
        (false, _) => (prompt, 0, 0),
        (true, 0) => (0, 0, prompt),
        (true, _) => (0, prompt.saturating_sub(newest), newest),
    };
    json_response(json!({
        "id": format!("msg_{turn}"),
        "type": "message",
        "role": "assistant",
        "model": request["model"],
        "content": content,
        "stop_reason": stop,
        "usage": {
            "input_tokens": input,
            "output_tokens": estimate(&content.to_string()),
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
        },
    }))
}

/// Bedrock's Converse API (`POST /model/{model}/converse`), as the AWS SDK calls it with an
/// endpoint override.
async fn converse(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (action, turn) = match play(&shared, &request, &body, Api::Bedrock).await {
        Ok(played) => played,
        Err(response) => return response,
    };
    let tool_mode = request["toolConfig"]["tools"]
        .as_array()
        .is_some_and(|t| !t.is_empty());
    let call_id = format!(
        "tooluse_{:04}",
        shared.requests.lock().expect("requests").len()
    );
    let (content, stop) = if let Some(raw) = action.strip_prefix("raw:") {
        (json!([{"text": raw}]), "end_turn")
    } else if tool_mode {
        let (name, input) = tool_action(&action);
        (
            json!([
                {"reasoningContent": {"reasoningText": {"text": format!("step {turn}"), "signature": "sig"}}},
                {"text": "Working on it."},
                {"toolUse": {"toolUseId": call_id, "name": name, "input": input}},
            ]),
            "tool_use",
        )
    } else {
        (json!([{"text": text_action(&action)}]), "end_turn")
    };
    let input = estimate(&body);
    let output = estimate(&content.to_string());
    json_response(json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output},
        "metrics": {"latencyMs": 1},
    }))
}
