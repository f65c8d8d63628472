//! The end of a campaign: the one rule for when a campaign is `done`, applied by the local
//! runner when its queue drains and by the fleet's finalize function on a schedule.

use crate::budget::{CampaignRecord, CampaignState};
use crate::ports::{MetadataStore, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Marked `done` now: every sample has a result or a dead letter.
    Done(Box<CampaignRecord>),
    /// Still running: samples without an outcome remain (in the queue, in flight, or lost
    /// to something a redrive or a re-submission must fix).
    Incomplete { accounted: u64, total: u64 },
    /// Not running (paused, exhausted, already done, or absent): nothing to do.
    NotRunning,
}

/// Marks the campaign `done` if it runs and every sample it asks for is accounted for. The
/// change is conditional, so a pause or an exhaustion that happened meanwhile wins.
pub async fn finish(metadata: &dyn MetadataStore, campaign: &str) -> Result<Finish, StoreError> {
    let Some(record) = metadata.campaign(campaign).await? else {
        return Ok(Finish::NotRunning);
    };
    if record.state != CampaignState::Running {
        return Ok(Finish::NotRunning);
    }
    if !record.is_finished() {
        return Ok(Finish::Incomplete {
            accounted: record.accounted(),
            total: record.total_samples,
        });
    }
    if !metadata
        .set_state(campaign, CampaignState::Done, None)
        .await?
    {
        return Ok(Finish::NotRunning);
    }
    let mut done = record;
    done.state = CampaignState::Done;
    Ok(Finish::Done(Box::new(done)))
}
