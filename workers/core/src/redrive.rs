//! `synthfleet redrive`: the samples a campaign gave up on get fresh attempts, with why
//! they died kept in their history. One path for the embedded queue and SQS.

use crate::budget::CampaignState;
use crate::message::{ResultKey, TaskMessage};
use crate::ports::{DeadLetter, MetadataStore, Queue, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, Default, PartialEq)]
pub struct Redriven {
    /// Samples moved back to the queue.
    pub moved: Vec<ResultKey>,
    /// Dead letters left as they were: their message is no longer in the dead-letter
    /// queue (SQS keeps messages 14 days at most).
    pub missing: Vec<DeadLetter>,
    /// The campaign was `done` and runs again.
    pub reopened: bool,
}

/// Moves the campaign's dead-lettered samples back to the queue.
///
/// The records are cleared first and the messages moved after, so a crash in between
/// leaves the campaign short of accounted samples (never `done` too early); running the
/// redrive again moves what is left. A record whose message is gone is restored.
pub async fn redrive(
    queue: &dyn Queue,
    metadata: &dyn MetadataStore,
    campaign: &str,
) -> Result<Redriven, StoreError> {
    let mut cleared: BTreeMap<ResultKey, DeadLetter> = BTreeMap::new();
    for letter in metadata.dead_letters(campaign).await? {
        if let Some(letter) = metadata.clear_dead_letter(&letter.key).await? {
            cleared.insert(letter.key.clone(), letter);
        }
    }
    let moved = Mutex::new(BTreeSet::new());
    let select = |body: &str| {
        let message = TaskMessage::parse(body).ok()?;
        if message.campaign != campaign {
            return None;
        }
        let key = message.result_key();
        let error = cleared.get(&key).map_or(
            "dead-lettered (its record was cleared by an interrupted redrive)",
            |letter| letter.error.as_str(),
        );
        let body = message.redriven(error).to_body();
        if let Ok(mut moved) = moved.lock() {
            moved.insert(key);
        }
        Some(body)
    };
    queue.redrive(&select).await?;
    let moved = moved.into_inner().unwrap_or_default();
    // A sample dead-lettered while this ran has a record that was not cleared above.
    for key in moved.iter().filter(|key| !cleared.contains_key(*key)) {
        metadata.clear_dead_letter(key).await?;
    }
    let mut missing = Vec::new();
    for (key, letter) in cleared {
        if !moved.contains(&key) {
            metadata.record_dead_letter(&letter).await?;
            missing.push(letter);
        }
    }
    let reopened = !moved.is_empty()
        && metadata
            .campaign(campaign)
            .await?
            .is_some_and(|c| c.state == CampaignState::Done)
        && metadata
            .set_state(campaign, CampaignState::Running, None)
            .await?;
    Ok(Redriven {
        moved: moved.into_iter().collect(),
        missing,
        reopened,
    })
}
