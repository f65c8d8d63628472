//! The `external` scaffold: an agent program of the image (or the task's setup) runs as one
//! command in the sandbox, and its model calls go to a metering gateway inside the sandbox
//! (`OPENAI_BASE_URL=http://127.0.0.1:{GATEWAY_PORT}/v1`, OpenAI's chat completions) that
//! the worker answers through the sandbox's own channel: the campaign's model pool with its
//! budget, rate limits, fallbacks and keys (no key enters the sandbox; `network = "none"`
//! still holds). Every call is recorded as a step — the conversation as the agent sent it,
//! the reply, tokens, cost and time — and the agent's exit and the workdir's diff are the
//! outcome, verified like any other.

use super::book::{CallTime, StepBook};
use super::{Ending, Interrupted, RolloutEvent, Rollouts};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use synthfleet_core::budget::Spend;
use synthfleet_core::metrics::ErrorClass;
use synthfleet_core::ports::{ChatRequest, Gateway, GatewayRequest, GatewayResponse, Sandbox};
use synthfleet_core::task::{Task, shell_quote};
use synthfleet_core::trajectory::{ChatMessage, ErrorKind, ExitStatus, TrajectoryRecord};
use synthfleet_core::{MicroUsd, error_chain};
use synthfleet_llm::{Meter, MeterError, Metered, MeteredRequest, PoolCompletion};
use tokio_util::sync::CancellationToken;

/// The port of the gateway inside the sandbox.
pub const GATEWAY_PORT: u16 = 8719;

/// The gateway of one rollout: meters and records each call.
struct Metering<'a> {
    rollouts: &'a Rollouts,
    task: &'a Task,
    cancel: &'a CancellationToken,
    events: &'a (dyn Fn(RolloutEvent) + Send + Sync),
    state: Mutex<State<'a>>,
}

/// What the calls so far left: the record and its books, and whether the budget refused.
struct State<'a> {
    record: &'a mut TrajectoryRecord,
    book: StepBook,
    refused: Option<String>,
}

fn error(status: u16, kind: &str, message: impl Into<String>) -> GatewayResponse {
    GatewayResponse {
        status,
        body: json!({"error": {"message": message.into(), "type": kind}}).to_string(),
    }
}

/// The request's messages in the record's form: OpenAI's, a list of text parts joined.
fn messages(body: &Value) -> Result<Vec<ChatMessage>, String> {
    let Some(list) = body.get("messages").and_then(Value::as_array) else {
        return Err("`messages` is missing or not a list".into());
    };
    list.iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(parts) = m.get("content").and_then(Value::as_array) {
                let text: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                m["content"] = json!(text.join("\n"));
            }
            serde_json::from_value(m).map_err(|e| format!("a message is not one of OpenAI's: {e}"))
        })
        .collect()
}

#[async_trait]
impl Gateway for Metering<'_> {
    async fn handle(&self, request: GatewayRequest) -> GatewayResponse {
        let path = request.path.split('?').next().unwrap_or_default();
        if request.method == "GET" && path.ends_with("/models") {
            let model = self.lock().record.model.clone();
            return GatewayResponse {
                status: 200,
                body: json!({"object": "list", "data": [{"id": model, "object": "model"}]})
                    .to_string(),
            };
        }
        if request.method != "POST" || !path.ends_with("/chat/completions") {
            return error(
                404,
                "not_found",
                format!(
                    "the synthfleet gateway serves POST /v1/chat/completions, not {} {path}",
                    request.method
                ),
            );
        }
        let body: Value = match serde_json::from_str(&request.body) {
            Ok(body) => body,
            Err(e) => {
                return error(
                    400,
                    "invalid_request_error",
                    format!("the body is not JSON: {e}"),
                );
            }
        };
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            return error(
                400,
                "invalid_request_error",
                "the synthfleet gateway does not stream: send `stream: false`",
            );
        }
        let messages = match messages(&body) {
            Ok(messages) => messages,
            Err(e) => return error(400, "invalid_request_error", e),
        };
        self.call(ChatRequest {
            messages,
            tools: body
                .get("tools")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            max_tokens: 0,
            temperature: body.get("temperature").and_then(Value::as_f64),
        })
        .await
    }
}

impl<'a> Metering<'a> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<'a>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One metered call of the agent's, recorded as a step.
    async fn call(&self, request: ChatRequest) -> GatewayResponse {
        let (campaign, model, index, limit) = {
            let mut state = self.lock();
            if let Some(reason) = &state.refused {
                return error(429, "insufficient_quota", reason.clone());
            }
            // The agent's new messages since the last call answer the last step.
            let seen = state.record.messages.len();
            if let Some(last) = state.record.steps.last_mut()
                && last.observation.is_empty()
            {
                last.observation = request
                    .messages
                    .get(seen..)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|m| m.content.as_deref())
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            let limit = state.book.limit_reached(tokio::time::Instant::now());
            (
                state.record.campaign.clone(),
                state.record.model.clone(),
                state.record.steps.len() as u32,
                limit,
            )
        };
        if let Some(limit) = limit {
            return error(
                429,
                "rollout_limit",
                format!("the rollout's limit is reached ({limit})"),
            );
        }
        let scaffold = &self.rollouts.campaign.config.scaffold;
        let meter = Meter {
            pool: &self.rollouts.pool,
            wallet: &self.rollouts.wallet,
            cancel: self.cancel,
        };
        let started = Instant::now();
        let metered = meter
            .call(&MeteredRequest {
                campaign: &campaign,
                spend: Spend::Rollout,
                model: &model,
                replay: &self.task.replay,
                request: &request,
                busy_patience: Duration::from_secs(scaffold.rollout_timeout_s),
            })
            .await;
        let elapsed = started.elapsed();
        let call = match metered {
            Ok(call) => call,
            Err(MeterError::Interrupted) => {
                return error(503, "server_error", "the rollout was stopped");
            }
            Err(e) => return error(500, "server_error", error_chain(&e)),
        };
        let time = CallTime {
            elapsed,
            budget_wait: call.waited,
        };
        let mut state = self.lock();
        let State {
            record,
            book,
            refused,
        } = &mut *state;
        match call.outcome {
            Metered::Refused(c) => {
                let reason = c
                    .state_reason
                    .clone()
                    .unwrap_or_else(|| "the campaign's budget is spent".into());
                *refused = Some(reason.clone());
                error(429, "insufficient_quota", reason)
            }
            Metered::Failed(e) => {
                (self.events)(RolloutEvent::LlmCall {
                    cost: e.billed(),
                    error: Some(ErrorClass::of(&e)),
                });
                StepBook::failed(&mut record.totals, &mut record.timings, time, e.billed());
                error(502, "server_error", e.to_string())
            }
            Metered::Completed { reply, cost } => {
                (self.events)(RolloutEvent::LlmCall { cost, error: None });
                let PoolCompletion {
                    completion,
                    served_by,
                    ..
                } = *reply;
                let mut step =
                    book.completed_step(record, time, &completion, cost, &served_by.name);
                let usage = completion.usage;
                // What the reply asks to run, read as the bash scaffold reads it.
                let action =
                    match crate::scaffold::scaffold("bash").map(|s| s.parse(&completion.message)) {
                        Some(crate::scaffold::Action::Invoke { input, .. }) => Some(input),
                        _ => None,
                    };
                step.action = action.clone();
                record.steps.push(step);
                record.messages = request.messages;
                record.messages.push(completion.message.clone());
                (self.events)(RolloutEvent::Step {
                    key: synthfleet_core::message::ResultKey {
                        campaign: record.campaign.clone(),
                        instance_id: record.instance_id.clone(),
                        sample_index: record.sample_index,
                    },
                    step: index,
                    action,
                });
                GatewayResponse {
                    status: 200,
                    body: json!({
                        "id": format!("chatcmpl-{}-{index}", record.trajectory_id),
                        "object": "chat.completion",
                        "created": chrono::Utc::now().timestamp(),
                        "model": served_by.model.clone().unwrap_or_else(|| served_by.name.clone()),
                        "choices": [{
                            "index": 0,
                            "message": completion.message,
                            "finish_reason": completion.finish_reason.unwrap_or_else(|| "stop".into()),
                        }],
                        "usage": {
                            "prompt_tokens": usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
                            "completion_tokens": usage.output_tokens,
                            "total_tokens": usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens + usage.output_tokens,
                        },
                    })
                    .to_string(),
                }
            }
        }
    }
}

impl Rollouts {
    /// Runs the campaign's external agent (`scaffold.command`) in `sandbox` with the
    /// metering gateway, until it exits or its time is up.
    pub(super) async fn external(
        &self,
        sandbox: &dyn Sandbox,
        task: &Task,
        record: &mut TrajectoryRecord,
        cancel: &CancellationToken,
        events: &(dyn Fn(RolloutEvent) + Send + Sync),
    ) -> Result<Ending, Interrupted> {
        let scaffold = &self.campaign.config.scaffold;
        let Some(command) = scaffold.command.as_deref() else {
            return Ok(Ending::error(
                ErrorKind::Internal,
                "scaffold.command is missing: an external scaffold runs it",
            ));
        };
        let limit = Duration::from_secs(task.timeout_s.unwrap_or(scaffold.rollout_timeout_s));
        let model = record.model.clone();
        let gateway = Metering {
            rollouts: self,
            task,
            cancel,
            events,
            state: Mutex::new(State {
                book: StepBook::new(
                    tokio::time::Instant::now() + limit,
                    scaffold.cost_limit_usd.map(MicroUsd::from_usd_ceil),
                    MicroUsd::ZERO,
                ),
                record,
                refused: None,
            }),
        };
        // The agent sees the task as its environment: the statement in a file and a
        // variable, the gateway as an OpenAI-compatible endpoint with a placeholder key.
        let script = format!(
            "export OPENAI_BASE_URL={url} OPENAI_API_BASE={url} OPENAI_API_KEY=synthfleet-gateway SYNTHFLEET_MODEL={model} SYNTHFLEET_PROBLEM_FILE=/tmp/.synthfleet-problem.md\n\
             cd {workdir} && {command}",
            url = shell_quote(&format!("http://127.0.0.1:{GATEWAY_PORT}/v1")),
            model = shell_quote(&model),
            workdir = shell_quote(&task.workdir),
        );
        let problem = sandbox
            .write_file(
                "/tmp/.synthfleet-problem.md",
                task.problem_statement.as_bytes(),
            )
            .await;
        if let Err(e) = problem {
            return Ok(Ending::error(ErrorKind::Sandbox, error_chain(&e)));
        }
        let ran = tokio::select! {
            ran = sandbox.exec_serving(&script, limit, GATEWAY_PORT, &gateway) => ran,
            _ = cancel.cancelled() => return Err(Interrupted),
        };
        let refused = gateway.lock().refused.clone();
        let output = match ran {
            Ok(output) => output,
            Err(e) => return Ok(Ending::error(ErrorKind::Sandbox, error_chain(&e))),
        };
        let state = gateway
            .state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.record.timings.sandbox_ms += output.duration.as_millis() as u64;
        Ok(match (refused, output.exit_code) {
            (Some(reason), _) => Ending {
                status: ExitStatus::BudgetExhausted,
                error: Some(reason),
            },
            _ if output.timed_out => Ending::ok(ExitStatus::Timeout),
            (None, Some(0)) => Ending::ok(ExitStatus::Submitted),
            (None, code) => Ending::error(
                ErrorKind::Sandbox,
                format!(
                    "the agent exited {}: {}",
                    code.map_or("without a code".into(), |c| c.to_string()),
                    crate::truncate_middle(&output.output, 2000).0
                ),
            ),
        })
    }
}
