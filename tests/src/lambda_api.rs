//! Lambda's Runtime API as a function's runtime meets it at `$AWS_LAMBDA_RUNTIME_API`, for
//! running the real function binaries (one emulator per execution environment):
//! * `GET /2018-06-01/runtime/invocation/next` hands out the queued invocations in order,
//!   with the headers Lambda sends (`Lambda-Runtime-Aws-Request-Id`,
//!   `Lambda-Runtime-Deadline-Ms`, `Lambda-Runtime-Invoked-Function-Arn`,
//!   `Lambda-Runtime-Trace-Id`); it long-polls until one is queued or the emulator is
//!   dropped;
//! * `POST /2018-06-01/runtime/invocation/{id}/response` and `…/{id}/error` are recorded
//!   per request id (the first answer; another is refused), with the time they came;
//! * `POST /2018-06-01/runtime/init/error` is recorded as it came: the
//!   `Lambda-Runtime-Function-Error-Type` header and the body.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// One invocation, as queued.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Value,
    /// When it times out, in Unix milliseconds (`Lambda-Runtime-Deadline-Ms`).
    pub deadline_ms: u64,
}

/// An error the runtime reported (of an invocation, or of its initialization).
#[derive(Debug, Clone)]
pub struct Reported {
    /// The `Lambda-Runtime-Function-Error-Type` header, if sent.
    pub error_type: Option<String>,
    /// The body (`{"errorMessage": …, "errorType": …}`); a body that is not JSON is kept as
    /// a JSON string.
    pub body: Value,
    /// When it came, in Unix milliseconds.
    pub at_ms: u64,
}

/// How an invocation ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response {
        body: Value,
        /// When it came, in Unix milliseconds.
        at_ms: u64,
    },
    Error(Reported),
}

impl Outcome {
    pub fn at_ms(&self) -> u64 {
        match self {
            Outcome::Response { at_ms, .. } | Outcome::Error(Reported { at_ms, .. }) => *at_ms,
        }
    }
}

#[derive(Default)]
struct Book {
    queued: VecDeque<Invocation>,
    /// Every invocation queued, by request id.
    invocations: HashMap<String, Invocation>,
    handed_out: Vec<String>,
    outcomes: HashMap<String, Outcome>,
    init_errors: Vec<Reported>,
    polls: u64,
    closed: bool,
}

struct Shared {
    function_arn: String,
    book: Mutex<Book>,
    /// Bumped on every change: wakes long polls and the test's waits.
    changes: watch::Sender<u64>,
}

impl Shared {
    fn change(&self, apply: impl FnOnce(&mut Book)) {
        apply(&mut self.book.lock().expect("book"));
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits until `found` finds something in the book, or `timeout` passes.
    async fn wait_for<T>(
        &self,
        timeout: Duration,
        found: impl Fn(&Book) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Subscribed before looking: a change after the look wakes the wait.
            let mut changes = self.changes.subscribe();
            if let Some(value) = found(&self.book.lock().expect("book")) {
                return Some(value);
            }
            tokio::time::timeout_at(deadline, changes.changed())
                .await
                .ok()?
                .ok()?;
        }
    }
}

pub struct LambdaApi {
    /// What `AWS_LAMBDA_RUNTIME_API` is set to (`host:port`).
    pub address: String,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Drop for LambdaApi {
    fn drop(&mut self) {
        // Long polls answer now, so the server can stop.
        self.shared.change(|book| book.closed = true);
    }
}

const NEXT: &str = "/2018-06-01/runtime/invocation/next";

impl LambdaApi {
    /// The Runtime API of one execution environment of `function_name`.
    pub fn start(function_name: &str) -> LambdaApi {
        let shared = Arc::new(Shared {
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
            book: Mutex::default(),
            changes: watch::Sender::new(0),
        });
        let app = Router::new()
            .route(NEXT, get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let (addr, shutdown) = crate::serve(app);
        LambdaApi {
            address: addr.to_string(),
            shared,
            _shutdown: shutdown,
        }
    }

    /// Queues an invocation of `payload` that times out `timeout` from now.
    pub fn invoke(&self, payload: Value, timeout: Duration) -> Invocation {
        let mut queued = None;
        self.shared.change(|book| {
            let n = book.invocations.len() + 1;
            let invocation = Invocation {
                request_id: format!("00000000-0000-4000-8000-{n:012x}"),
                payload,
                deadline_ms: now_ms() + timeout.as_millis() as u64,
            };
            book.invocations
                .insert(invocation.request_id.clone(), invocation.clone());
            book.queued.push_back(invocation.clone());
            queued = Some(invocation);
        });
        queued.expect("queued")
    }

    /// How `request_id` ended, once it has (`None` if not within `timeout`).
    pub async fn outcome(&self, request_id: &str, timeout: Duration) -> Option<Outcome> {
        self.shared
            .wait_for(timeout, |book| book.outcomes.get(request_id).cloned())
            .await
    }

    /// The first init error reported (`None` if none within `timeout`).
    pub async fn init_error(&self, timeout: Duration) -> Option<Reported> {
        self.shared
            .wait_for(timeout, |book| book.init_errors.first().cloned())
            .await
    }

    /// Every init error reported so far.
    pub fn init_errors(&self) -> Vec<Reported> {
        self.shared.book.lock().expect("book").init_errors.clone()
    }

    /// How many times the runtime asked for its next invocation.
    pub fn polls(&self) -> u64 {
        self.shared.book.lock().expect("book").polls
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("a header value")
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.change(|book| book.polls += 1);
    loop {
        let mut changes = shared.changes.subscribe();
        {
            let mut book = shared.book.lock().expect("book");
            if book.closed {
                return (StatusCode::GONE, "the Runtime API emulator stopped").into_response();
            }
            if let Some(invocation) = book.queued.pop_front() {
                book.handed_out.push(invocation.request_id.clone());
                drop(book);
                let trace = format!(
                    "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
                    invocation.deadline_ms / 1000,
                    invocation.deadline_ms,
                    invocation.deadline_ms
                );
                let mut headers = HeaderMap::new();
                for (name, value) in [
                    (
                        "lambda-runtime-aws-request-id",
                        invocation.request_id.as_str(),
                    ),
                    (
                        "lambda-runtime-deadline-ms",
                        &invocation.deadline_ms.to_string(),
                    ),
                    (
                        "lambda-runtime-invoked-function-arn",
                        shared.function_arn.as_str(),
                    ),
                    ("lambda-runtime-trace-id", &trace),
                ] {
                    headers.insert(name, header_value(value));
                }
                headers.insert(header::CONTENT_TYPE, header_value("application/json"));
                return (headers, invocation.payload.to_string()).into_response();
            }
        }
        if changes.changed().await.is_err() {
            return StatusCode::GONE.into_response();
        }
    }
}

/// The body as JSON, or as a JSON string when it is not JSON.
fn json_body(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn reported(headers: &HeaderMap, body: &Bytes) -> Reported {
    Reported {
        error_type: headers
            .get("lambda-runtime-function-error-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: json_body(body),
        at_ms: now_ms(),
    }
}

/// Records the first answer to an invocation handed out; refuses any other, as Lambda does.
fn answer(shared: &Shared, id: &str, outcome: Outcome) -> Response {
    let mut accepted = false;
    shared.change(|book| {
        if book.handed_out.iter().any(|h| h == id) && !book.outcomes.contains_key(id) {
            book.outcomes.insert(id.to_owned(), outcome);
            accepted = true;
        }
    });
    if accepted {
        (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "errorMessage": format!("no invocation {id} awaits an answer"),
                "errorType": "InvalidRequestID"
            })),
        )
            .into_response()
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let outcome = Outcome::Response {
        body: json_body(&body),
        at_ms: now_ms(),
    };
    answer(&shared, &id, outcome)
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&shared, &id, Outcome::Error(reported(&headers, &body)))
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    shared.change(|book| book.init_errors.push(reported(&headers, &body)));
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"})))
}
