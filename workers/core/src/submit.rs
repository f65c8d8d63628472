//! Turning a campaign into queue messages: the one enqueue path, shared by the local
//! runner, `synthfleet submit` and the enqueue function.

use crate::budget::{CampaignState, Submitted};
use crate::campaign::{Campaign, CampaignConfig};
use crate::gold::{self, GoldError};
use crate::lifecycle::Trigger;
use crate::message::{ResultKey, TaskMessage};
use crate::ports::ObjectStore;
use crate::ports::{MetadataStore, Queue, StoreError, TrajectoryMeta};
use crate::sampling::SamplePlan;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueReport {
    /// Samples of the campaign planned now (tasks left out excepted; with adaptive
    /// sampling, the first rounds).
    pub total: u64,
    /// Tasks left out because gold validation found them broken (`skip_broken_tasks`).
    pub excluded: Vec<String>,
    /// Messages sent now.
    pub enqueued: u64,
    /// Samples that already have a committed result.
    pub already_done: u64,
    /// Samples whose message was sent before (re-submission of the same campaign).
    pub already_queued: u64,
    /// The trigger was applied before (an S3 event delivered again, or an older one
    /// late; a firing retried): the campaign item was left as it was, and only samples
    /// never sent were sent — none when the campaign is `done`.
    pub redelivered: bool,
    /// The campaign was `done` and runs again (a new submission asked for it).
    pub reopened: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gold(#[from] GoldError),
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Messages sent (and marked) together: SQS's batch size.
const SEND_BATCH: usize = 10;

/// [`enqueue_triggered`] as a request (someone asked: `synthfleet run`, `submit`, a
/// test), which a `done` campaign takes as a reason to run again.
pub async fn enqueue_campaign(
    campaign: &Campaign,
    spec: &CampaignSpec,
    queue: &dyn Queue,
    metadata: &dyn MetadataStore,
    objects: &dyn ObjectStore,
) -> Result<EnqueueReport, EnqueueError> {
    enqueue_triggered(campaign, spec, &Trigger::Request, queue, metadata, objects).await
}

/// Creates or updates the campaign item for a submission started by `trigger`, stores the
/// campaign's spec and enqueues every sample not yet done. With `skip_broken_tasks`, the
/// tasks the stored gold report found broken are left out (and a task the report does not
/// cover is an error, before anything is written: validate again).
///
/// A trigger that repeats the one applied last ([`Trigger::repeats`]) leaves the campaign
/// item as it is: a `done` campaign stays done and nothing is sent; otherwise only the
/// samples never sent are (what a failed first delivery left).
///
/// The campaign was fully validated when loaded, so no bad task can stop this half way.
/// Each sample is sent, then marked as enqueued: re-submitting skips marked samples, and a
/// crash between the two at worst sends a sample twice, which the conditional result
/// commit turns into one result. Nothing is lost and nothing is counted twice.
pub async fn enqueue_triggered(
    campaign: &Campaign,
    spec: &CampaignSpec,
    trigger: &Trigger,
    queue: &dyn Queue,
    metadata: &dyn MetadataStore,
    objects: &dyn ObjectStore,
) -> Result<EnqueueReport, EnqueueError> {
    let mut report = EnqueueReport::default();
    let mut tasks: Vec<&crate::task::Task> = campaign.tasks.iter().collect();
    if campaign.config.skip_broken_tasks {
        let gold = gold::get_report(objects, campaign.name())
            .await?
            .ok_or_else(|| GoldError::NoReport {
                campaign: campaign.name().to_owned(),
            })?;
        let missing = gold.missing(&campaign.tasks);
        if !missing.is_empty() {
            return Err(GoldError::NotValidated {
                campaign: campaign.name().to_owned(),
                missing: missing.into_iter().map(str::to_owned).collect(),
            }
            .into());
        }
        let broken = gold.broken();
        tasks.retain(|t| !broken.contains(t.instance_id.as_str()));
        report.excluded = broken.into_iter().map(str::to_owned).collect();
    }
    // Every sample at once, or (adaptive sampling) each task's first round.
    let samples = campaign.config.first_samples_per_task();
    let plan = SamplePlan::of(&campaign.config, tasks.len() as u64);
    report.total = plan.samples;
    let (record, submitted) = metadata
        .submit_campaign(campaign.name(), campaign.budget(), &plan, trigger)
        .await?;
    match submitted {
        Submitted::Repeated => {
            report.redelivered = true;
            // Every sample has its outcome: nothing to finish, nothing to store again.
            if record.state == CampaignState::Done {
                return Ok(report);
            }
        }
        Submitted::Resubmitted { reopened } => report.reopened = reopened,
        Submitted::Created => {}
    }
    // Checked, so stored: workers read the spec of the messages they receive.
    put_spec(objects, spec).await?;
    // Two reads for the whole campaign, not two per sample.
    let done: BTreeSet<ResultKey> = metadata
        .trajectories(campaign.name())
        .await?
        .iter()
        .map(TrajectoryMeta::result_key)
        .collect();
    let queued: BTreeSet<ResultKey> = metadata
        .enqueued_samples(campaign.name())
        .await?
        .into_iter()
        .collect();
    let mut pending = Vec::new();
    for task in tasks {
        for sample_index in 0..samples {
            let message = TaskMessage::new(campaign.name(), task, sample_index);
            let key = message.result_key();
            if done.contains(&key) {
                report.already_done += 1;
            } else if queued.contains(&key) {
                report.already_queued += 1;
            } else {
                pending.push((key, message.to_body()));
            }
        }
    }
    report.enqueued = send_samples(queue, metadata, &pending).await?;
    if report.enqueued > 0 {
        metadata
            .add_enqueued(campaign.name(), report.enqueued)
            .await?;
    }
    Ok(report)
}

/// Sends the messages of `pending` samples (key, body) in batches, marking each batch as
/// enqueued once sent; returns how many were sent. The one way samples reach the queue: a
/// submission's and an adaptive campaign's next round ([`crate::sampling::after_outcome`]).
pub async fn send_samples(
    queue: &dyn Queue,
    metadata: &dyn MetadataStore,
    pending: &[(ResultKey, String)],
) -> Result<u64, StoreError> {
    let mut sent = 0;
    for chunk in pending.chunks(SEND_BATCH) {
        let bodies: Vec<String> = chunk.iter().map(|(_, body)| body.clone()).collect();
        queue.send_batch(&bodies).await?;
        let keys: Vec<ResultKey> = chunk.iter().map(|(key, _)| key.clone()).collect();
        metadata.mark_enqueued(&keys).await?;
        sent += keys.len() as u64;
    }
    Ok(sent)
}

/// What a fleet worker needs to run a campaign's messages: the configuration and the
/// prompt-template overrides, stored at [`spec_key`] by `submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub config: CampaignConfig,
    /// Template file name → source, for the templates the campaign overrides.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// An experiment arm's own overrides, by arm (`[[variants]] templates`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arm_templates: BTreeMap<String, BTreeMap<String, String>>,
}

impl CampaignSpec {
    /// Its prompt templates, compiled: every scaffold's built-ins, the campaign's overrides
    /// on its own scaffold and each arm's own set.
    pub fn compile_templates(
        &self,
    ) -> Result<crate::templates::Templates, crate::templates::TemplateError> {
        crate::templates::Templates::new(&self.config.scaffold.kind, &self.templates)?
            .with_arms(&self.config, &self.arm_templates)
    }
}

pub fn spec_key(campaign: &str) -> String {
    format!("campaigns/{campaign}/spec.json")
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("campaign spec {key} is not valid: {detail}; re-submit the campaign")]
    Invalid { key: String, detail: String },
}

pub async fn put_spec(objects: &dyn ObjectStore, spec: &CampaignSpec) -> Result<(), SpecError> {
    let key = spec_key(&spec.config.name);
    let bytes = serde_json::to_vec_pretty(spec).map_err(|e| SpecError::Invalid {
        key: key.clone(),
        detail: e.to_string(),
    })?;
    objects.put(&key, bytes).await?;
    Ok(())
}

pub async fn get_spec(
    objects: &dyn ObjectStore,
    campaign: &str,
) -> Result<CampaignSpec, SpecError> {
    let key = spec_key(campaign);
    let bytes = objects.get(&key).await?;
    serde_json::from_slice(&bytes).map_err(|e| SpecError::Invalid {
        key,
        detail: e.to_string(),
    })
}
