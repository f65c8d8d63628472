//! The ECS agent's task-protection endpoint, as a worker running in an ECS task sees it at
//! `$ECS_AGENT_URI`: records every protection state it is asked for.

use axum::extract::State;
use axum::routing::put;
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
