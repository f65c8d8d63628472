//! One rollout: sandbox → agent loop → patch → verification → a finished record.

use crate::context;
use crate::protocol::{Action, parse_action, tool_schemas};
use crate::verify::Verifier;
use crate::{SCAFFOLD_VERSION, truncate_middle};
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthfleet_core::budget::Spend;
use synthfleet_core::campaign::{Campaign, Protocol};
use synthfleet_core::message::{ResultKey, TaskMessage};
use synthfleet_core::ports::{ChatCompletion, ChatRequest, Sandbox, SandboxProvider};
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::task::{Task, shell_quote};
use synthfleet_core::templates::Templates;
use synthfleet_core::trajectory::{
    ChatMessage, Environment, ErrorKind, ExitStatus, Role, SCHEMA_VERSION, ScaffoldInfo, Step,
    Timings, Totals, TrajectoryRecord, redact,
};
use synthfleet_core::{MicroUsd, error_chain};
use synthfleet_llm::{Meter, MeterError, Metered, MeteredRequest, ModelPool, PoolCompletion};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

/// Time allowed to read the final patch out of the sandbox.
const PATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The rollout was cancelled (shutdown); its sandbox is gone and nothing was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// Progress inside a rollout, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum RolloutEvent {
    Step {
        key: ResultKey,
        step: u32,
        action: Option<String>,
    },
}

/// Everything rollouts of one campaign share.
pub struct Rollouts {
    pub campaign: Arc<Campaign>,
    pub pool: Arc<ModelPool>,
    pub sandboxes: Arc<dyn SandboxProvider>,
    pub store: TrajectoryStore,
    pub templates: Arc<Templates>,
    pub worker_id: String,
    /// Secret values (API keys) scrubbed from every record before it is stored.
    pub secrets: Vec<String>,
}

/// How the agent loop ended.
struct Ending {
    status: ExitStatus,
    error: Option<String>,
}

impl Ending {
    fn ok(status: ExitStatus) -> Ending {
        Ending {
            status,
            error: None,
        }
    }

    fn error(kind: ErrorKind, error: impl Into<String>) -> Ending {
        Ending {
            status: ExitStatus::Error(kind),
            error: Some(error.into()),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Rollouts {
    /// Secret values of every key variable the campaign's models name.
    pub fn secrets_of(campaign: &Campaign) -> Vec<String> {
        campaign
            .config
            .models
            .iter()
            .filter_map(|m| m.api_key_env.as_deref())
            .filter_map(|var| std::env::var(var).ok())
            .filter(|v| !v.is_empty())
            .collect()
    }

    fn verifier(&self) -> Verifier<'_> {
        Verifier {
            campaign: &self.campaign,
            sandboxes: self.sandboxes.as_ref(),
        }
    }

    /// Runs one rollout to a finished (not yet committed) record. Only cancellation
    /// returns early; every failure is recorded in the record's exit status.
    pub async fn run(
        &self,
        message: &TaskMessage,
        cancel: &CancellationToken,
        events: &(dyn Fn(RolloutEvent) + Send + Sync),
    ) -> Result<TrajectoryRecord, Interrupted> {
        let key = message.result_key();
        let attempt = message.attempt();
        let task = &message.task;
        let (model, route) = self.campaign.model_for(task, message.sample_index);
        let trajectory_id = ulid::Ulid::new().to_string();
        let span = info_span!("rollout", campaign = %key.campaign, instance = %key.instance_id,
            sample = key.sample_index, trajectory = %trajectory_id, model = %model.name, attempt);
        async {
            let started = Instant::now();
            let scaffold = &self.campaign.config.scaffold;
            let mut record = TrajectoryRecord {
                schema_version: SCHEMA_VERSION,
                trajectory_id: trajectory_id.clone(),
                campaign: key.campaign.clone(),
                instance_id: key.instance_id.clone(),
                sample_index: key.sample_index,
                model: model.name.clone(),
                route: Some(route),
                provider: format!("{:?}", model.provider).to_lowercase(),
                scaffold: ScaffoldInfo {
                    name: scaffold.kind.clone(),
                    version: SCAFFOLD_VERSION.to_owned(),
                    protocol: scaffold.protocol,
                    template_hash: self.templates.hash().to_owned(),
                },
                messages: Vec::new(),
                tools: match scaffold.protocol {
                    Protocol::ToolCalls => tool_schemas(),
                    Protocol::Text => Vec::new(),
                },
                steps: Vec::new(),
                patch: String::new(),
                exit_status: None,
                error: None,
                verification: None,
                totals: Totals::default(),
                timings: Timings {
                    started_at: Utc::now(),
                    finished_at: None,
                    duration_ms: 0,
                    llm_ms: 0,
                    sandbox_ms: 0,
                    verification_ms: 0,
                    infra_wait_ms: 0,
                },
                image: task.image.clone(),
                image_digest: None,
                environment: None,
                worker_id: self.worker_id.clone(),
                attempt,
                tags: task.tags.clone().into_iter().collect(),
            };

            let verifier = self.verifier();
            // The verification sandbox is made while the agent works, so that submit →
            // verdict costs only applying the patch and running the eval. (A sandbox
            // dropped unused, on cancellation, goes with its tether.)
            let prepare = async {
                if !task.is_verifiable() {
                    return None;
                }
                tokio::select! {
                    made = verifier.create_sandbox(task) => Some(made),
                    _ = cancel.cancelled() => None,
                }
            };
            let work = async {
                let sandbox = tokio::select! {
                    created = verifier.create_agent_sandbox(task) => created,
                    _ = cancel.cancelled() => return Err(Interrupted),
                };
                let (sandbox, start) = match sandbox {
                    Err(error) => return Ok(Ending::error(ErrorKind::Sandbox, format!("sandbox setup failed: {error}"))),
                    Ok(made) => made,
                };
                record.image_digest = sandbox.image_digest().map(str::to_owned);
                record.environment = Some(Environment {
                    workdir: task.workdir.clone(),
                    start_commit: start.commit().map(str::to_owned),
                    harness_hash: task.harness_hash(),
                });
                let limit = Duration::from_secs(task.timeout_s.unwrap_or(scaffold.rollout_timeout_s));
                let deadline = tokio::time::Instant::now() + limit;
                let ending = self
                    .agent_loop(sandbox.as_ref(), task, &mut record, deadline, cancel, events)
                    .await;
                let Ok(ending) = ending else {
                    destroy(sandbox.as_ref()).await;
                    return Err(Interrupted);
                };
                // The answer is the diff of the workdir, at submit or at whatever limit ended the loop.
                let patch = read_patch(sandbox.as_ref(), &task.workdir, start.commit()).await;
                destroy(sandbox.as_ref()).await;
                Ok(match (patch, ending) {
                    (Ok(patch), ending) => {
                        record.patch = patch;
                        ending
                    }
                    (Err(e), Ending { status: ExitStatus::Error(kind), error }) => Ending {
                        status: ExitStatus::Error(kind),
                        error: Some(format!("{}; reading the patch failed too: {e}", error.unwrap_or_default())),
                    },
                    (Err(e), _) => Ending::error(ErrorKind::Sandbox, format!("reading the final patch failed: {e}")),
                })
            };
            let (ending, prepared) = tokio::join!(work, prepare);
            let ending = match ending {
                Ok(ending) => ending,
                Err(Interrupted) => {
                    if let Some(Ok(sandbox)) = prepared {
                        destroy(sandbox.as_ref()).await;
                    }
                    return Err(Interrupted);
                }
            };
            record.exit_status = Some(ending.status.clone());
            record.error = ending.error;

            let verifiable = !matches!(ending.status, ExitStatus::Error(_) | ExitStatus::BudgetExhausted);
            match prepared {
                Some(sandbox) if verifiable => {
                    let started = Instant::now();
                    let verified = tokio::select! {
                        v = verifier.verify_in(sandbox, task, &record.patch, started) => v,
                        _ = cancel.cancelled() => return Err(Interrupted),
                    };
                    record.timings.verification_ms = ms(started.elapsed());
                    match verified {
                        Ok(verification) => record.verification = Some(verification),
                        Err(error) => {
                            record.exit_status = Some(ExitStatus::Error(ErrorKind::Sandbox));
                            record.error = Some(format!("verification failed to run: {error}"));
                        }
                    }
                }
                Some(Ok(unused)) => destroy(unused.as_ref()).await,
                // No sandbox was prepared for a verifiable task only when cancelled.
                None if verifiable && task.is_verifiable() => return Err(Interrupted),
                Some(Err(_)) | None => {}
            }
            record.timings.finished_at = Some(Utc::now());
            record.timings.duration_ms = ms(started.elapsed());
            scrub(&mut record, &self.secrets);
            debug!(status = %record.exit_status.as_ref().map(ToString::to_string).unwrap_or_default(),
                resolved = ?record.verification.as_ref().map(|v| v.resolved), "rollout finished");
            Ok(record)
        }
        .instrument(span)
        .await
    }

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

    async fn agent_loop(
        &self,
        sandbox: &dyn Sandbox,
        task: &Task,
        record: &mut TrajectoryRecord,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
        events: &(dyn Fn(RolloutEvent) + Send + Sync),
    ) -> Result<Ending, Interrupted> {
        let key = &ResultKey {
            campaign: record.campaign.clone(),
            instance_id: record.instance_id.clone(),
            sample_index: record.sample_index,
        };
        let scaffold = &self.campaign.config.scaffold;
        let protocol = match scaffold.protocol {
            Protocol::ToolCalls => "tool_calls",
            Protocol::Text => "text",
        };
        let context = json!({
            "problem_statement": task.problem_statement,
            "workdir": task.workdir,
            "max_steps": scaffold.max_steps,
            "step_timeout_s": scaffold.step_timeout_s,
            "protocol": protocol,
        });
        let (system, instance) = match (
            self.templates.render("system.j2", context.clone()),
            self.templates.render("instance.j2", context),
        ) {
            (Ok(s), Ok(i)) => (s, i),
            (Err(e), _) | (_, Err(e)) => {
                return Ok(Ending::error(ErrorKind::Internal, error_chain(&e)));
            }
        };
        record
            .messages
            .push(ChatMessage::text(Role::System, system));
        record
            .messages
            .push(ChatMessage::text(Role::User, instance));
        let step_timeout = Duration::from_secs(scaffold.step_timeout_s);
        // How long a rollout waits for budget that other calls hold before it gives up as
        // an infrastructure failure (the sample is retried, never scored as a timeout).
        let busy_patience = Duration::from_secs(scaffold.rollout_timeout_s);
        let mut book = StepBook::new(
            deadline,
            scaffold.cost_limit_usd.map(MicroUsd::from_usd_ceil),
        );

        for index in 0..scaffold.max_steps {
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
                temperature: None,
            };
            // Budget: the worst case is reserved before the call, the real cost booked after.
            let meter = Meter {
                pool: &self.pool,
                metadata: self.store.metadata.as_ref(),
                owner: &self.worker_id,
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
            let (reply, cost) = match call.outcome {
                Metered::Completed { reply, cost } => (reply, cost),
                Metered::Refused(campaign) => {
                    return Ok(Ending {
                        status: ExitStatus::BudgetExhausted,
                        error: campaign.state_reason.clone(),
                    });
                }
                Metered::Failed(e) => {
                    StepBook::failed(
                        &mut record.totals,
                        &mut record.timings,
                        CallTime {
                            elapsed: llm_elapsed,
                            budget_wait: call.waited,
                        },
                        e.billed(),
                    );
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
            let llm_ms = book.completed(
                &mut record.totals,
                &mut record.timings,
                CallTime {
                    elapsed: llm_elapsed,
                    budget_wait: call.waited,
                },
                &completion,
                cost,
            );
            let usage = completion.usage;

            let action = parse_action(&completion.message);
            record.messages.push(completion.message);
            let mut step = Step {
                index,
                action: None,
                observation: String::new(),
                observation_truncated: false,
                exit_code: None,
                timed_out: false,
                duration_ms: 0,
                llm_duration_ms: llm_ms,
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cache_read_tokens: usage.cache_read_tokens,
                cache_write_tokens: usage.cache_write_tokens,
                cost_usd: cost.as_usd(),
                cost_estimated: usage.estimated,
                context_elided: elided,
                llm_retries: completion.retries,
                model: served_by.name.clone(),
                format_error: false,
            };
            let protocol_context = |extra: serde_json::Value| {
                let mut c =
                    json!({"protocol": protocol, "step_timeout_s": scaffold.step_timeout_s});
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
                Action::Run {
                    command,
                    tool_call_id,
                } => {
                    step.action = Some(command.clone());
                    let timeout = book.command_timeout(tokio::time::Instant::now(), step_timeout);
                    let exec = tokio::select! {
                        output = sandbox.exec(&command, timeout) => output,
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
                exit_code = ?step.exit_code,
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
                return Ok(Ending::ok(ExitStatus::Submitted));
            }
            // Keep the partial record: a crash from here on loses nothing already done.
            let mut checkpoint = record.clone();
            scrub(&mut checkpoint, &self.secrets);
            if let Err(e) = self.store.checkpoint(&checkpoint).await {
                warn!(error = %error_chain(&e), "writing the step checkpoint failed");
            }
        }
        Ok(Ending::ok(ExitStatus::StepLimit))
    }
}

/// The agent loop's books: the agent's deadline, pushed back by the time each call spent
/// waiting on the infrastructure, and the rollout's spend against its cost limit; each
/// call is booked into the record's totals and timings.
#[derive(Debug, Clone, PartialEq)]
struct StepBook {
    deadline: tokio::time::Instant,
    spent: MicroUsd,
    cost_limit: Option<MicroUsd>,
}

/// How long a metered call took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallTime {
    /// From the budget reservation to the reply (or the failure).
    elapsed: Duration,
    /// Of it, the wait for budget that other calls held.
    budget_wait: Duration,
}

impl StepBook {
    fn new(deadline: tokio::time::Instant, cost_limit: Option<MicroUsd>) -> StepBook {
        StepBook {
            deadline,
            spent: MicroUsd::ZERO,
            cost_limit,
        }
    }

    /// Why no further step may start at `now`: the agent's time is up, or else the
    /// rollout's cost limit is reached.
    fn limit_reached(&self, now: tokio::time::Instant) -> Option<ExitStatus> {
        if now >= self.deadline {
            return Some(ExitStatus::Timeout);
        }
        if self.cost_limit.is_some_and(|limit| self.spent >= limit) {
            return Some(ExitStatus::CostLimit);
        }
        None
    }

    /// How long a command started at `now` may run: a step's timeout, cut to the agent's
    /// time left, but at least a second.
    fn command_timeout(&self, now: tokio::time::Instant, step_timeout: Duration) -> Duration {
        step_timeout
            .min(self.deadline.saturating_duration_since(now))
            .max(Duration::from_secs(1))
    }

    /// Books a completed call of `cost`: its tokens, cost, retries and step into `totals`,
    /// its times into `timings`, its cost against the limit. Only the model's own time
    /// counts against the agent's deadline: budget waits, rate limits, failed attempts and
    /// backoff are the infrastructure's and push the deadline back. Returns the call's LLM
    /// time in milliseconds (budget waits excluded), the step's `llm_duration_ms`.
    fn completed(
        &mut self,
        totals: &mut Totals,
        timings: &mut Timings,
        time: CallTime,
        completion: &ChatCompletion,
        cost: MicroUsd,
    ) -> u64 {
        let waited = time.elapsed.saturating_sub(completion.generation);
        self.deadline += waited;
        timings.infra_wait_ms += ms(waited);
        let llm_ms = ms(time.elapsed.saturating_sub(time.budget_wait));
        timings.llm_ms += llm_ms;
        self.spent = self.spent.saturating_add(cost);
        let usage = completion.usage;
        totals.input_tokens += usage.input_tokens;
        totals.output_tokens += usage.output_tokens;
        totals.cache_read_tokens += usage.cache_read_tokens;
        totals.cache_write_tokens += usage.cache_write_tokens;
        totals.add_cost(cost);
        totals.llm_calls += 1;
        totals.llm_retries += completion.retries;
        totals.n_steps += 1;
        llm_ms
    }

    /// Books a call that failed (the rollout ends with it): a call, what the provider
    /// billed for it, its budget wait as the infrastructure's time and the rest as LLM time.
    fn failed(totals: &mut Totals, timings: &mut Timings, time: CallTime, billed: MicroUsd) {
        totals.llm_calls += 1;
        totals.add_cost(billed);
        timings.infra_wait_ms += ms(time.budget_wait);
        timings.llm_ms += ms(time.elapsed.saturating_sub(time.budget_wait));
    }
}

/// `git diff` of the workdir against the starting commit (so commits the agent made are
/// part of its answer), new files included; against HEAD when the start is unknown.
async fn read_patch(
    sandbox: &dyn Sandbox,
    workdir: &str,
    start: Option<&str>,
) -> Result<String, String> {
    let dir = shell_quote(workdir);
    let base = start.unwrap_or("HEAD");
    let command = format!(
        "git -c safe.directory='*' -C {dir} add -A >/dev/null && git -c safe.directory='*' -C {dir} diff --cached --binary {base}"
    );
    let out = sandbox
        .exec(&command, PATCH_TIMEOUT)
        .await
        .map_err(|e| error_chain(&e))?;
    match out.exit_code {
        Some(0) if !out.truncated => Ok(out.output),
        Some(0) => {
            Err("the patch is larger than the sandbox output cap (sandbox.max_output_bytes)".into())
        }
        code => Err(format!(
            "git diff in {workdir} exited with {code:?}: {}",
            truncate_middle(&out.output, 1000).0
        )),
    }
}

pub(crate) async fn destroy(sandbox: &dyn Sandbox) {
    if let Err(e) = sandbox.destroy().await {
        warn!(container = sandbox.id(), error = %error_chain(&e), "removing a sandbox failed; the reaper will remove it");
    }
}

fn scrub(record: &mut TrajectoryRecord, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    for m in &mut record.messages {
        for text in [&mut m.content, &mut m.reasoning_content]
            .into_iter()
            .flatten()
        {
            *text = redact(text, secrets);
        }
        for call in &mut m.tool_calls {
            call.function.arguments = redact(&call.function.arguments, secrets);
        }
    }
    for step in &mut record.steps {
        step.observation = redact(&step.observation, secrets);
        if let Some(action) = &mut step.action {
            *action = redact(action, secrets);
        }
    }
    if let Some(error) = &mut record.error {
        *error = redact(error, secrets);
    }
    record.patch = redact(&record.patch, secrets);
}

#[cfg(test)]
mod tests {
    use super::*;
    use synthfleet_core::ports::Usage;
    use tokio::time::Instant;

    fn completion(generation: Duration, retries: u32) -> ChatCompletion {
        ChatCompletion {
            message: ChatMessage::text(Role::Assistant, "ok"),
            usage: Usage {
                input_tokens: 1000,
                output_tokens: 200,
                cache_read_tokens: 30,
                cache_write_tokens: 4,
                estimated: false,
            },
            retries,
            finish_reason: None,
            generation,
        }
    }

    fn timings() -> Timings {
        Timings {
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: 0,
            llm_ms: 0,
            sandbox_ms: 0,
            verification_ms: 0,
            infra_wait_ms: 0,
        }
    }

    #[test]
    fn only_the_models_own_time_counts_against_the_agent() {
        let start = Instant::now();
        let mut book = StepBook::new(start + Duration::from_secs(60), None);
        let (mut totals, mut timings) = (Totals::default(), timings());
        // 10 s in all: 2 s waiting for budget, 5 s generating, 3 s of retries and backoff.
        let llm_ms = book.completed(
            &mut totals,
            &mut timings,
            CallTime {
                elapsed: Duration::from_secs(10),
                budget_wait: Duration::from_secs(2),
            },
            &completion(Duration::from_secs(5), 2),
            MicroUsd(1_500),
        );
        assert_eq!(llm_ms, 8_000, "the call, budget waits excluded");
        assert_eq!(timings.llm_ms, 8_000);
        assert_eq!(timings.infra_wait_ms, 5_000, "all but the generation");
        assert_eq!(
            book.deadline,
            start + Duration::from_secs(65),
            "the deadline moves by the infrastructure's time"
        );
        assert_eq!(
            totals,
            Totals {
                input_tokens: 1000,
                output_tokens: 200,
                cache_read_tokens: 30,
                cache_write_tokens: 4,
                cost_usd: 0.0015,
                llm_calls: 1,
                llm_retries: 2,
                n_steps: 1,
            }
        );
        book.completed(
            &mut totals,
            &mut timings,
            CallTime {
                elapsed: Duration::from_secs(1),
                budget_wait: Duration::ZERO,
            },
            &completion(Duration::from_secs(1), 0),
            MicroUsd(500),
        );
        assert_eq!((totals.n_steps, totals.llm_calls), (2, 2));
        assert_eq!(totals.cost_usd, 0.002);
        assert_eq!(book.spent, MicroUsd(2_000));
        assert_eq!(
            timings.infra_wait_ms, 5_000,
            "a call with no wait adds none"
        );
        assert_eq!(book.deadline, start + Duration::from_secs(65));
    }

    #[test]
    fn a_failed_call_is_booked_with_what_it_billed() {
        let (mut totals, mut timings) = (Totals::default(), timings());
        StepBook::failed(
            &mut totals,
            &mut timings,
            CallTime {
                elapsed: Duration::from_secs(7),
                budget_wait: Duration::from_secs(3),
            },
            MicroUsd(250),
        );
        assert_eq!(
            (totals.llm_calls, totals.n_steps, totals.cost_usd),
            (1, 0, 0.00025),
            "a call, but no step"
        );
        assert_eq!((timings.llm_ms, timings.infra_wait_ms), (4_000, 3_000));
    }

    #[test]
    fn steps_stop_at_the_deadline_first_then_at_the_cost_limit() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut book = StepBook::new(deadline, Some(MicroUsd(1_000)));
        assert_eq!(book.limit_reached(start), None);
        let call = CallTime {
            elapsed: Duration::from_secs(1),
            budget_wait: Duration::ZERO,
        };
        let (mut totals, mut timings) = (Totals::default(), timings());
        book.completed(
            &mut totals,
            &mut timings,
            call,
            &completion(Duration::from_secs(1), 0),
            MicroUsd(999),
        );
        assert_eq!(book.limit_reached(start), None, "just under the limit");
        book.completed(
            &mut totals,
            &mut timings,
            call,
            &completion(Duration::from_secs(1), 0),
            MicroUsd(1),
        );
        assert_eq!(book.limit_reached(start), Some(ExitStatus::CostLimit));
        assert_eq!(
            book.limit_reached(deadline),
            Some(ExitStatus::Timeout),
            "time is checked first"
        );
        let unlimited = StepBook::new(deadline, None);
        assert_eq!(unlimited.limit_reached(start), None);
    }

    #[test]
    fn a_command_gets_the_step_timeout_cut_to_the_time_left_but_a_second_at_least() {
        let start = Instant::now();
        let book = StepBook::new(start + Duration::from_secs(100), None);
        let step = Duration::from_secs(30);
        assert_eq!(book.command_timeout(start, step), step);
        assert_eq!(
            book.command_timeout(start + Duration::from_secs(90), step),
            Duration::from_secs(10)
        );
        assert_eq!(
            book.command_timeout(start + Duration::from_secs(200), step),
            Duration::from_secs(1)
        );
    }
}
