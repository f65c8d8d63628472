//! A fake OpenAI-compatible chat-completions server for tests.
//!
//! It plays scripted actions per task (a script is picked by a needle found in the first
//! user message; the step is the number of assistant turns so far), in whichever protocol
//! the request uses, and injects faults: statuses with `Retry-After`, slow replies and
//! malformed bodies. Usage is reported as about 4 characters per token, so the client's
//! worst-case estimate (3 characters per token) stays above it.

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
    /// Answer 400 as OpenAI does when the conversation outgrows the context window.
    ContextOverflow,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub needle: String,
    /// Replies in order. `submit` submits; text starting with `raw:` is sent verbatim as
    /// the assistant's content (for format errors).
    pub actions: Vec<String>,
    /// Applied to every request of this script.
    pub always: Option<Fault>,
}

impl Script {
    pub fn new(needle: &str, actions: &[&str]) -> Script {
        Script {
            needle: needle.into(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            always: None,
        }
    }
}

#[derive(Default)]
struct Shared {
    scripts: Vec<Script>,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<Value>>,
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

fn apply(fault: &Fault) -> Option<Response> {
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
        Fault::Malformed => Some((StatusCode::OK, "{\"choices\": [{\"mess").into_response()),
        Fault::ContextOverflow => Some(
            (
                StatusCode::BAD_REQUEST,
                json!({"error": {
                    "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens.",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded"
                }})
                .to_string(),
            )
                .into_response(),
        ),
        Fault::Delay(_) => None,
    }
}

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    shared
        .requests
        .lock()
        .expect("requests")
        .push(request.clone());
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        shared
            .authorization
            .lock()
            .expect("authorization")
            .push(auth.to_owned());
    }
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let first_user = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let script = shared
        .scripts
        .iter()
        .find(|s| first_user.contains(&s.needle))
        .cloned();
    let fault = shared.faults.lock().expect("faults").pop_front();
    for fault in fault
        .iter()
        .chain(script.as_ref().and_then(|s| s.always.as_ref()))
    {
        if let Fault::Delay(d) = fault {
            tokio::time::sleep(*d).await;
        }
        if let Some(response) = apply(fault) {
            return response;
        }
    }
    let Some(script) = script else {
        return (StatusCode::BAD_REQUEST, "no script matches this task").into_response();
    };
    let turn = messages.iter().filter(|m| m["role"] == "assistant").count();
    let action = script
        .actions
        .get(turn)
        .cloned()
        .unwrap_or_else(|| "submit".into());
    let tool_mode = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let message = if let Some(raw) = action.strip_prefix("raw:") {
        json!({"role": "assistant", "content": raw})
    } else if tool_mode {
        let (name, args) = if action == "submit" {
            ("submit", json!({}))
        } else {
            ("bash", json!({"command": action}))
        };
        json!({"role": "assistant", "content": "Working on it.", "reasoning_content": format!("step {turn}"),
               "tool_calls": [{"id": format!("call_{turn}"), "type": "function",
                               "function": {"name": name, "arguments": args.to_string()}}]})
    } else {
        json!({"role": "assistant", "content": format!("Next step.\n\n```bash\n{action}\n```")})
    };
    let completion = json!({
        "id": format!("chatcmpl-{turn}"),
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": estimate(&body), "completion_tokens": estimate(&message.to_string())},
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        completion.to_string(),
    )
        .into_response()
}
