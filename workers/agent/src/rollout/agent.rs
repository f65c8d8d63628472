//! The agent loop: the model, called through the budget meter on the conversation fitted to
//! its context window; its actions run in the sandbox; each step recorded, booked and
//! checkpointed, until it submits or a limit ends it.

use super::book::{CallTime, StepBook};
use super::sandbox::workdir_digest;
use super::{Ending, Interrupted, RolloutEvent, Rollouts, ms, scrub};
use crate::context;
use crate::scaffold::Action;
use crate::truncate_middle;
use serde_json::json;
use std::time::{Duration, Instant};
use synthfleet_core::budget::Spend;
use synthfleet_core::message::ResultKey;
use synthfleet_core::metrics::ErrorClass;
use synthfleet_core::ports::{ChatRequest, Sandbox};
use synthfleet_core::resume::Checkpoint;
use synthfleet_core::task::Task;
use synthfleet_core::trajectory::{ChatMessage, ErrorKind, ExitStatus, Role, TrajectoryRecord};
use synthfleet_core::{MicroUsd, error_chain};
use synthfleet_llm::{Meter, MeterError, Metered, MeteredRequest, PoolCompletion};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

impl Rollouts {
    /// The record's conversation as the routed model can take it: within its
    /// `context_window` (less `max_tokens` for the reply), by the scaffold's context policy.
    /// Returns the messages and the indices of those elided.
    fn fit_context(&self, record: &TrajectoryRecord) -> (Vec<ChatMessage>, Vec<usize>) {
        let window = self
            .campaign
            .model(&record.model)
            .and_then(|m| m.context_window.map(|w| (w, m.max_tokens)));
        let Some((window, max_tokens)) = window else {
            return (record.messages.clone(), Vec::new());
        };
        let budget = window
            .saturating_sub(u64::from(max_tokens))
            .saturating_sub(synthfleet_llm::estimate_tools_tokens(&record.tools));
        let keep = self.campaign.config.scaffold.keep_recent_observations as usize;
        let fitted = context::fit(&record.messages, budget, keep, |m| {
            synthfleet_llm::estimate_messages_tokens(m)
        });
        (fitted.messages, fitted.elided)
    }

    /// Runs the agent from where `record` stands (step 0, or the steps a resumed attempt
    /// carried over) until it submits or a limit ends it; `cancel` cuts it off at once,
    /// `handback` (with resume on) after the next step's checkpoint.
    pub(super) async fn agent_loop(
        &self,
        sandbox: &dyn Sandbox,
        task: &Task,
        record: &mut TrajectoryRecord,
        cancel: &CancellationToken,
        handback: &CancellationToken,
        events: &(dyn Fn(RolloutEvent) + Send + Sync),
    ) -> Result<Ending, Interrupted> {
        let key = &ResultKey {
            campaign: record.campaign.clone(),
            instance_id: record.instance_id.clone(),
            sample_index: record.sample_index,
        };
        let scaffold = &self.campaign.config.scaffold;
        let tools = match Rollouts::scaffold(&record.scaffold.name) {
            Ok(tools) => tools,
            Err(e) => return Ok(Ending::error(ErrorKind::Internal, e)),
        };
        // The prompts: the sample's arm's own templates, when it has them, else its scaffold's.
        let kind = self
            .templates
            .set_for(&record.scaffold.name, record.variant.as_deref());
        let context = json!({
            "problem_statement": task.problem_statement,
            "workdir": task.workdir,
            "max_steps": scaffold.max_steps,
            "step_timeout_s": scaffold.step_timeout_s,
            "protocol": scaffold.protocol.to_string(),
        });
        let (system, instance) = match (
            self.templates.render(&kind, "system.j2", context.clone()),
            self.templates.render(&kind, "instance.j2", context),
        ) {
            (Ok(s), Ok(i)) => (s, i),
            (Err(e), _) | (_, Err(e)) => {
                return Ok(Ending::error(ErrorKind::Internal, error_chain(&e)));
            }
        };
        if record.messages.is_empty() {
            record
                .messages
                .push(ChatMessage::text(Role::System, system));
            record
                .messages
                .push(ChatMessage::text(Role::User, instance));
        }
        // A resumed rollout whose agent had submitted: verification is what is left.
        if record.exit_status == Some(ExitStatus::Submitted) {
            return Ok(Ending::ok(ExitStatus::Submitted));
        }
        // The agent's time: what the task or the scaffold allows, less what the steps
        // carried over from an interrupted attempt took.
        let limit = Duration::from_secs(task.timeout_s.unwrap_or(scaffold.rollout_timeout_s));
        let used = Duration::from_millis(record.timings.agent_ms);
        let deadline = tokio::time::Instant::now() + limit.saturating_sub(used);
        let step_timeout = Duration::from_secs(scaffold.step_timeout_s);
        // How long a rollout waits for budget that other calls hold before it gives up as
        // an infrastructure failure (the sample is retried, never scored as a timeout).
        let busy_patience = Duration::from_secs(scaffold.rollout_timeout_s);
        let mut book = StepBook::new(
            deadline,
            scaffold.cost_limit_usd.map(MicroUsd::from_usd_ceil),
            record
                .steps
                .iter()
                .map(|s| MicroUsd::from_usd_ceil(s.cost_usd))
                .fold(MicroUsd::ZERO, MicroUsd::saturating_add),
        );

        for index in record.steps.len() as u32..scaffold.max_steps {
            if cancel.is_cancelled() {
                return Err(Interrupted);
            }
            if let Some(limit) = book.limit_reached(tokio::time::Instant::now()) {
                return Ok(Ending::ok(limit));
            }
            // What the model sees: the conversation, trimmed to its context window.
            let (messages, elided) = self.fit_context(record);
            let request = ChatRequest {
                messages,
                tools: record.tools.clone(),
                max_tokens: 0,
                // An experiment's arm may set it; else the model's.
                temperature: self
                    .campaign
                    .variant_for(record.sample_index)
                    .and_then(|v| v.temperature),
            };
            // Budget: the worst case is held on a slice before the call, the real cost booked after.
            let meter = Meter {
                pool: &self.pool,
                wallet: &self.wallet,
                cancel,
            };
            let llm_started = Instant::now();
            let metered = meter
                .call(&MeteredRequest {
                    campaign: &key.campaign,
                    spend: Spend::Rollout,
                    model: &record.model,
                    replay: &task.replay,
                    request: &request,
                    busy_patience,
                })
                .await;
            let llm_elapsed = llm_started.elapsed();
            let call = match metered {
                Ok(call) => call,
                Err(MeterError::Interrupted) => return Err(Interrupted),
                Err(MeterError::Cost(e)) => {
                    return Ok(Ending::error(ErrorKind::LlmRejected, e.to_string()));
                }
                Err(e) => return Ok(Ending::error(ErrorKind::Internal, error_chain(&e))),
            };
            let called = |cost, error| events(RolloutEvent::LlmCall { cost, error });
            let (reply, cost) = match call.outcome {
                Metered::Completed { reply, cost } => {
                    called(cost, None);
                    (reply, cost)
                }
                Metered::Refused(campaign) => {
                    return Ok(Ending {
                        status: ExitStatus::BudgetExhausted,
                        error: campaign.state_reason.clone(),
                    });
                }
                Metered::Failed(e) => {
                    called(e.billed(), Some(ErrorClass::of(&e)));
                    StepBook::failed(
                        &mut record.totals,
                        &mut record.timings,
                        CallTime {
                            elapsed: llm_elapsed,
                            budget_wait: call.waited,
                        },
                        e.billed(),
                    );
                    // The sandbox is as the last checkpoint left it: this one adds the
                    // failed call's spend, which a retry that resumes carries on.
                    self.checkpoint(sandbox, record, &mut book, limit).await;
                    return Ok(Ending {
                        status: e.exit_status(),
                        error: Some(e.to_string()),
                    });
                }
            };
            let PoolCompletion {
                completion,
                served_by,
                ..
            } = *reply;
            let time = CallTime {
                elapsed: llm_elapsed,
                budget_wait: call.waited,
            };
            let mut step = book.completed_step(record, time, &completion, cost, &served_by.name);
            let action = tools.parse(&completion.message);
            step.context_elided = elided;
            record.messages.push(completion.message);
            let protocol_context = |extra: serde_json::Value| {
                let mut c = json!({"protocol": scaffold.protocol.to_string(), "step_timeout_s": scaffold.step_timeout_s});
                if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
                    c.extend(extra.clone());
                }
                c
            };
            let submitted = match action {
                Action::Submit { tool_call_id } => {
                    step.observation = "submitted".into();
                    if let Some(id) = tool_call_id {
                        record
                            .messages
                            .push(ChatMessage::tool_result(id, "submitted"));
                    }
                    true
                }
                Action::FormatError {
                    reason,
                    tool_call_ids,
                } => {
                    step.format_error = true;
                    let text = match self.templates.render(
                        &kind,
                        "format_error.j2",
                        protocol_context(json!({"reason": reason})),
                    ) {
                        Ok(text) => text,
                        Err(e) => return Ok(Ending::error(ErrorKind::Internal, error_chain(&e))),
                    };
                    step.observation = text.clone();
                    if tool_call_ids.is_empty() {
                        record.messages.push(ChatMessage::text(Role::User, text));
                    } else {
                        for id in tool_call_ids {
                            record
                                .messages
                                .push(ChatMessage::tool_result(id, text.clone()));
                        }
                    }
                    false
                }
                Action::Invoke {
                    tool,
                    input,
                    tool_call_id,
                } => {
                    step.action = Some(input.clone());
                    step.tool = (tool != "bash").then(|| tool.clone());
                    let timeout = book.command_timeout(tokio::time::Instant::now(), step_timeout);
                    let exec = tokio::select! {
                        output = tools.run(sandbox, Some(&tool), &input, timeout) => output,
                        _ = cancel.cancelled() => return Err(Interrupted),
                    };
                    let output = match exec {
                        Ok(output) => output,
                        Err(e) => {
                            record.steps.push(step);
                            return Ok(Ending::error(ErrorKind::Sandbox, error_chain(&e)));
                        }
                    };
                    record.timings.sandbox_ms += ms(output.duration);
                    let (kept, cut) =
                        truncate_middle(&output.output, scaffold.max_observation_chars);
                    let text = match self.templates.render(
                        &kind,
                        "observation.j2",
                        protocol_context(json!({
                            "timed_out": output.timed_out,
                            "exit_code": output.exit_code,
                            "output": kept,
                            "truncated": cut || output.truncated,
                        })),
                    ) {
                        Ok(text) => text,
                        Err(e) => return Ok(Ending::error(ErrorKind::Internal, error_chain(&e))),
                    };
                    step.exit_code = output.exit_code;
                    step.timed_out = output.timed_out;
                    step.duration_ms = ms(output.duration);
                    step.observation_truncated = cut || output.truncated;
                    step.observation = text.clone();
                    record.messages.push(match tool_call_id {
                        Some(id) => ChatMessage::tool_result(id, text),
                        None => ChatMessage::text(Role::User, text),
                    });
                    false
                }
            };
            info!(
                step = index,
                model = %step.model,
                exit_code = step.exit_code,
                timed_out = step.timed_out,
                format_error = step.format_error,
                duration_ms = step.duration_ms,
                llm_ms = step.llm_duration_ms,
                tokens_in = step.input_tokens,
                tokens_out = step.output_tokens,
                llm_retries = step.llm_retries,
                "step"
            );
            events(RolloutEvent::Step {
                key: key.clone(),
                step: index,
                action: step.action.clone(),
            });
            record.steps.push(step);
            if submitted {
                // Verification may take minutes: a crash during it resumes at the submit,
                // never asking the model for its last answer again.
                record.exit_status = Some(ExitStatus::Submitted);
                self.checkpoint(sandbox, record, &mut book, limit).await;
                return Ok(Ending::ok(ExitStatus::Submitted));
            }
            // Keep the partial record: a crash from here on loses nothing already done,
            // and (with resume on) another attempt continues from here.
            self.checkpoint(sandbox, record, &mut book, limit).await;
            if scaffold.resume && handback.is_cancelled() {
                info!(
                    step = index,
                    "handing the rollout back at its step boundary"
                );
                return Err(Interrupted);
            }
        }
        Ok(Ending::ok(ExitStatus::StepLimit))
    }

    /// Writes the record as it stands, scrubbed, with the agent's time used of `limit` and
    /// (resume on) its workdir's digest, for a replay to be checked against. The time it
    /// takes is the infrastructure's: the deadline moves back by it. A failed write is
    /// logged: the rollout goes on.
    async fn checkpoint(
        &self,
        sandbox: &dyn Sandbox,
        record: &mut TrajectoryRecord,
        book: &mut StepBook,
        limit: Duration,
    ) {
        let started = tokio::time::Instant::now();
        record.timings.agent_ms = ms(book.used(started, limit));
        let workdir_digest = match (&record.environment, self.campaign.config.scaffold.resume) {
            (Some(env), true) => {
                workdir_digest(sandbox, &env.workdir, env.start_commit.as_deref()).await
            }
            _ => None,
        };
        let mut checkpoint = Checkpoint {
            record: record.clone(),
            workdir_digest,
        };
        scrub(&mut checkpoint.record, &self.secrets);
        if let Err(e) = self.store.checkpoint(&checkpoint).await {
            warn!(error = %error_chain(&e), "writing the step checkpoint failed");
        }
        book.pause(started.elapsed());
    }
}
