//! One rollout: sandbox → agent loop → patch → verification → a finished record.
//!
//! * this module: the rollout from start to finished record — the agent's sandbox and,
//!   made while the agent works, the verifier's; the record's fields; the verdict;
//! * [`agent`]: the agent loop — the model called through the budget meter, its actions
//!   run in the sandbox, each step recorded and checkpointed;
//! * [`book`]: the loop's bookkeeping (deadline, spend, totals and timings) as pure rules;
//! * [`external`]: the `external` scaffold — an agent program of the image, its model
//!   calls metered and recorded by a gateway inside the sandbox;
//! * [`resume`]: continuing an interrupted attempt from its checkpoint — the sandbox
//!   rebuilt by replay, or a clean restart with the reason;
//! * [`sandbox`]: reading the final patch out of the sandbox, and removing a sandbox.

mod agent;
mod book;
mod external;
mod resume;
mod sandbox;

pub(crate) use sandbox::destroy;

use crate::SCAFFOLD_VERSION;
use crate::scaffold::Scaffold;
use crate::verify::Verifier;
use chrono::Utc;
use sandbox::read_patch;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthfleet_core::campaign::{Campaign, Protocol};
use synthfleet_core::message::{ResultKey, TaskMessage};
use synthfleet_core::metrics::ErrorClass;
use synthfleet_core::ports::{Sandbox, SandboxProvider};
use synthfleet_core::start::Start;
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::task::Task;
use synthfleet_core::templates::Templates;
use synthfleet_core::trajectory::{
    Environment, ErrorKind, ExitStatus, SCHEMA_VERSION, ScaffoldInfo, Timings, Totals,
    TrajectoryRecord, redact,
};
use synthfleet_core::{MicroUsd, error_chain};
use synthfleet_llm::{ModelPool, Wallet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

/// The rollout was cancelled (shutdown); its sandbox is gone and nothing was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// Progress inside a rollout, for progress bars, logs and metrics.
#[derive(Debug, Clone)]
pub enum RolloutEvent {
    Step {
        key: ResultKey,
        step: u32,
        action: Option<String>,
    },
    /// The agent's sandbox was made, `took` after it was asked for.
    SandboxReady { took: Duration },
    /// An LLM call ended (one the budget refused is none): what it booked, and the class of
    /// its final error when it failed.
    LlmCall {
        cost: MicroUsd,
        error: Option<ErrorClass>,
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
    /// The worker's budget slices, shared by its rollouts of every campaign.
    pub wallet: Arc<Wallet>,
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

    /// The scaffold of `kind` (a record's), or why this worker has none (a campaign
    /// submitted by a newer synthfleet: upgrade the worker).
    fn scaffold(kind: &str) -> Result<&'static Scaffold, String> {
        crate::scaffold::scaffold(kind).ok_or_else(|| {
            format!(
                "this worker has no scaffold of kind `{kind}`; upgrade synthfleet on the worker"
            )
        })
    }

    fn verifier(&self) -> Verifier<'_> {
        Verifier {
            campaign: &self.campaign,
            sandboxes: self.sandboxes.as_ref(),
        }
    }

    /// Runs one rollout to a finished (not yet committed) record, continuing an earlier
    /// attempt's checkpoint when there is one (and `scaffold.resume` is on). Only
    /// `cancel`, at once, and `handback`, at the next step boundary once that step is
    /// checkpointed (with resume on), return early; every failure is recorded in the
    /// record's exit status.
    pub async fn run(
        &self,
        message: &TaskMessage,
        cancel: &CancellationToken,
        handback: &CancellationToken,
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
            let kind = self.campaign.scaffold_kind_for(key.sample_index);
            let variant = self
                .campaign
                .variant_for(key.sample_index)
                .map(|v| v.name.clone());
            let mut record = TrajectoryRecord {
                schema_version: SCHEMA_VERSION,
                trajectory_id: trajectory_id.clone(),
                campaign: key.campaign.clone(),
                instance_id: key.instance_id.clone(),
                sample_index: key.sample_index,
                model: model.name.clone(),
                route: Some(route),
                provider: model.provider.to_string(),
                scaffold: ScaffoldInfo {
                    name: kind.to_owned(),
                    version: SCAFFOLD_VERSION.to_owned(),
                    protocol: scaffold.protocol,
                    template_hash: self
                        .templates
                        .hash(&self.templates.set_for(kind, variant.as_deref()))
                        .to_owned(),
                },
                messages: Vec::new(),
                tools: match (scaffold.protocol, crate::scaffold::scaffold(kind)) {
                    (Protocol::ToolCalls, Some(scaffold)) => scaffold.tool_schemas(),
                    _ => Vec::new(),
                },
                steps: Vec::new(),
                patch: String::new(),
                exit_status: None,
                error: None,
                verification: None,
                totals: Totals::default(),
                timings: Timings::started(Utc::now()),
                image: task.image.clone(),
                image_digest: None,
                environment: None,
                worker_id: self.worker_id.clone(),
                attempt,
                tags: task.tags.clone().into_iter().collect(),
                resumed_from_step: None,
                resumes: Vec::new(),
                variant: variant.clone(),
            };
            let resuming = self.resuming(&key).await;

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
                let asked = Instant::now();
                let sandbox = tokio::select! {
                    created = verifier.create_agent_sandbox(task) => created,
                    _ = cancel.cancelled() => return Err(Interrupted),
                };
                let (sandbox, start) = match sandbox {
                    Err(error) => return Ok(Ending::error(ErrorKind::Sandbox, format!("sandbox setup failed: {}", error_chain(&error)))),
                    Ok(made) => made,
                };
                events(RolloutEvent::SandboxReady { took: asked.elapsed() });
                adopt(&mut record, task, sandbox.as_ref(), &start);
                let (sandbox, start) = match resuming {
                    None => (sandbox, start),
                    Some(resuming) => {
                        let rebuilt = tokio::select! {
                            rebuilt = self.rebuild(resuming, sandbox.as_ref(), &task.workdir, start.commit()) => rebuilt,
                            _ = cancel.cancelled() => {
                                destroy(sandbox.as_ref()).await;
                                return Err(Interrupted);
                            }
                        };
                        match rebuilt.earlier {
                            Some(earlier) => record.continue_from(earlier, rebuilt.resume),
                            None => record.resumes.push(rebuilt.resume),
                        }
                        if rebuilt.dirty {
                            // The replay left the sandbox part-way: the restart needs a clean one.
                            destroy(sandbox.as_ref()).await;
                            let asked = Instant::now();
                            let made = tokio::select! {
                                created = verifier.create_agent_sandbox(task) => created,
                                _ = cancel.cancelled() => return Err(Interrupted),
                            };
                            match made {
                                Err(error) => return Ok(Ending::error(ErrorKind::Sandbox, format!("sandbox setup failed: {}", error_chain(&error)))),
                                Ok((sandbox, start)) => {
                                    events(RolloutEvent::SandboxReady { took: asked.elapsed() });
                                    adopt(&mut record, task, sandbox.as_ref(), &start);
                                    (sandbox, start)
                                }
                            }
                        } else {
                            (sandbox, start)
                        }
                    }
                };
                let ending = if record.scaffold.name == "external" {
                    self.external(sandbox.as_ref(), task, &mut record, cancel, events).await
                } else {
                    self.agent_loop(sandbox.as_ref(), task, &mut record, cancel, handback, events)
                        .await
                };
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
                        error: Some(format!("{}; reading the patch failed too: {}", error.unwrap_or_default(), error_chain(&e))),
                    },
                    (Err(e), _) => Ending::error(ErrorKind::Sandbox, format!("reading the final patch failed: {}", error_chain(&e))),
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
                            record.error = Some(format!("verification failed to run: {}", error_chain(&error)));
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
                resolved = record.verification.as_ref().map(|v| v.resolved), "rollout finished");
            Ok(record)
        }
        .instrument(span)
        .await
    }
}

/// Records what the agent's sandbox is: its image digest, and the environment the agent
/// starts from.
fn adopt(record: &mut TrajectoryRecord, task: &Task, sandbox: &dyn Sandbox, start: &Start) {
    record.image_digest = sandbox.image_digest().map(str::to_owned);
    record.environment = Some(Environment {
        workdir: task.workdir.clone(),
        start_commit: start.commit().map(str::to_owned),
        harness_hash: task.harness_hash(),
    });
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
