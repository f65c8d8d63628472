//! Turning a campaign into queue messages: the one enqueue path, shared by the local
//! runner, `synthfleet submit` and the enqueue function.

use crate::campaign::{Campaign, CampaignConfig};
use crate::message::TaskMessage;
use crate::ports::ObjectStore;
use crate::ports::{MetadataStore, Queue, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueReport {
    /// Messages sent now.
    pub enqueued: u64,
    /// Samples that already have a committed result.
    pub already_done: u64,
    /// Samples whose message was sent before (re-submission of the same campaign).
    pub already_queued: u64,
}

/// Creates or updates the campaign item and enqueues every sample not yet done.
///
/// The campaign was fully validated when loaded, so no bad task can stop this half way.
/// Each sample is sent, then marked as enqueued: re-submitting skips marked samples, and a
/// crash between the two at worst sends a sample twice, which the conditional result
/// commit turns into one result. Nothing is lost and nothing is counted twice.
pub async fn enqueue_campaign(
    campaign: &Campaign,
    queue: &dyn Queue,
    metadata: &dyn MetadataStore,
) -> Result<EnqueueReport, StoreError> {
    let samples = campaign.config.samples_per_task;
    let total = campaign.tasks.len() as u64 * u64::from(samples);
    metadata
        .upsert_campaign(campaign.name(), campaign.budget(), total)
        .await?;
    let mut report = EnqueueReport::default();
    for task in &campaign.tasks {
        for sample_index in 0..samples {
            let message = TaskMessage::new(campaign.name(), task, sample_index);
            if metadata.result(&message.result_key()).await?.is_some() {
                report.already_done += 1;
                continue;
            }
            let key = message.result_key();
            if metadata.enqueued(&key).await? {
                report.already_queued += 1;
                continue;
            }
            queue
                .send(&message.to_body(), std::time::Duration::ZERO)
                .await?;
            metadata.mark_enqueued(&key).await?;
            report.enqueued += 1;
        }
    }
    if report.enqueued > 0 {
        metadata
            .add_enqueued(campaign.name(), report.enqueued)
            .await?;
    }
    Ok(report)
}

/// What a fleet worker needs to run a campaign's messages: the configuration and the
/// prompt-template overrides, stored at [`spec_key`] by `submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub config: CampaignConfig,
    /// Template file name → source, for the templates the campaign overrides.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
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
