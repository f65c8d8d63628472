//! Turning a campaign into queue messages: the one enqueue path, shared by the local
//! runner, `synthfleet submit` and the enqueue function.

use crate::campaign::Campaign;
use crate::message::TaskMessage;
use crate::ports::{MetadataStore, Queue, StoreError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueReport {
    /// Messages sent now.
    pub enqueued: u64,
    /// Samples that already have a committed result.
    pub already_done: u64,
    /// Samples whose message was sent before (re-submission of the same campaign).
    pub already_queued: u64,
}

/// Dedup id of a sample's message: re-submitting a campaign never enqueues it twice.
pub fn dedup_id(campaign: &str, instance_id: &str, sample_index: u32) -> String {
    format!("{campaign}/{instance_id}/{sample_index}")
}

/// Creates or updates the campaign item and enqueues every sample not yet done.
///
/// The campaign was fully validated when loaded, so no bad task can stop this half way;
/// a backend failure part way is safe to retry, because sends are deduplicated.
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
            let dedup = dedup_id(campaign.name(), &task.instance_id, sample_index);
            if queue.send(&message.to_body(), &dedup).await? {
                report.enqueued += 1;
            } else {
                report.already_queued += 1;
            }
        }
    }
    if report.enqueued > 0 {
        metadata
            .add_enqueued(campaign.name(), report.enqueued)
            .await?;
    }
    Ok(report)
}
