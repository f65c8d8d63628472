//! ECS as synthfleet meets it, where moto falls short:
//! * [`FakeEcsAgent`]: the ECS agent's task-protection endpoint, as a worker running in an
//!   ECS task sees it at `$ECS_AGENT_URI`; records every protection state asked for.
//! * [`FakeEcsApi`]: ECS's `RunTask` (AWS JSON 1.1), as the finalize function calls it;
//!   records every request and answers with a task (the same one for a repeated client
//!   token, as ECS does). moto's own RunTask cannot serve here: its EC2 answer carries
//!   `cpu` as a number (the SDK rejects it) and its Fargate path fails.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::Value;
use std::sync::{Arc, Mutex};

pub struct FakeEcsAgent {
    /// What `ECS_AGENT_URI` is set to.
    pub uri: String,
    states: Arc<Mutex<Vec<bool>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeEcsAgent {
    pub fn start() -> FakeEcsAgent {
        let states = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/task-protection/v1/state", put(protect))
            .with_state(states.clone());
        let (addr, shutdown) = crate::serve(app);
        FakeEcsAgent {
            uri: format!("http://{addr}"),
            states,
            _shutdown: shutdown,
        }
    }

    /// The `ProtectionEnabled` values asked for, in order.
    pub fn states(&self) -> Vec<bool> {
        self.states.lock().expect("states").clone()
    }
}

async fn protect(
    State(states): State<Arc<Mutex<Vec<bool>>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let enabled = body["ProtectionEnabled"].as_bool().unwrap_or(false);
    states.lock().expect("states").push(enabled);
    Json(serde_json::json!({ "protection": { "ProtectionEnabled": enabled } }))
}

pub struct FakeEcsApi {
    /// The endpoint URL an ECS client is pointed at.
    pub url: String,
    runs: Arc<Mutex<Vec<Value>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeEcsApi {
    pub fn start() -> FakeEcsApi {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/", post(run_task))
            .with_state(runs.clone());
        let (addr, shutdown) = crate::serve(app);
        FakeEcsApi {
            url: format!("http://{addr}"),
            runs,
            _shutdown: shutdown,
        }
    }

    /// The `RunTask` requests received, in order.
    pub fn runs(&self) -> Vec<Value> {
        self.runs.lock().expect("runs").clone()
    }

    /// A client of this endpoint with dummy credentials.
    pub fn client(&self) -> aws_sdk_ecs::Client {
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ecs::config::Credentials::new(
                "test", "test", None, None, "fake",
            ))
            .endpoint_url(&self.url)
            .build();
        aws_sdk_ecs::Client::from_conf(config)
    }
}

async fn run_task(
    State(runs): State<Arc<Mutex<Vec<Value>>>>,
    headers: HeaderMap,
    // AWS JSON 1.1: `application/x-amz-json-1.1`, which axum's `Json` refuses.
    body: String,
) -> axum::response::Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target != "AmazonEC2ContainerServiceV20141113.RunTask" {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "__type": "InvalidParameterException",
                "message": format!("this fake serves RunTask only, not {target}"),
            })),
        )
            .into_response();
    }
    let mut runs = runs.lock().expect("runs");
    let token = body["clientToken"].as_str().map(str::to_owned);
    let first = runs
        .iter()
        .position(|r| token.is_some() && r["clientToken"].as_str() == token.as_deref())
        .unwrap_or(runs.len());
    runs.push(body);
    let task = serde_json::json!({
        "taskArn": format!("arn:aws:ecs:us-east-1:123456789012:task/jobs/{first:032x}"),
        "lastStatus": "PROVISIONING",
    });
    (
        [("content-type", "application/x-amz-json-1.1")],
        Json(serde_json::json!({ "tasks": [task], "failures": [] })),
    )
        .into_response()
}
