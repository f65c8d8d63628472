//! A campaign's life: what (re)starts it — a [`Trigger`], and when a trigger only repeats
//! one already applied — and the one rule for when it is `done`, applied by the local
//! runner when its queue drains and by the fleet's finalize function on a schedule.
//!
//! `done` goes back to `running` only by intent: a submission whose trigger is not a
//! repeat ([`crate::budget::CampaignRecord::resubmit`]) or a redrive of dead letters
//! ([`crate::redrive`]). Both are conditional writes of the store.

use crate::budget::{CampaignRecord, CampaignState};
use crate::ports::{MetadataStore, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// What asked for a campaign to be submitted: tells a repeat of the same request (an S3
/// event delivered again, a firing retried) from a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// Someone asked (`synthfleet submit` or `run`, a direct invocation): each one is meant.
    Request,
    /// An S3 `ObjectCreated` event of the campaign file (S3 delivers at least once).
    Upload(Upload),
    /// A schedule's firing, its own run (a scheduler and Lambda retry it).
    Firing { scheduled_time: DateTime<Utc> },
}

/// The object an S3 event is about, as the event names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub bucket: String,
    pub key: String,
    /// The object's version, in a bucket with versioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// S3's order of the events of one key (hexadecimal; a later event's is greater).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
}

impl Trigger {
    /// Whether this trigger repeats `applied`, the last upload or firing applied to the
    /// campaign: the same firing, or an upload event of the same object that is the same
    /// event or an older one. A request never repeats anything.
    pub fn repeats(&self, applied: Option<&Trigger>) -> bool {
        match (self, applied) {
            (Trigger::Upload(new), Some(Trigger::Upload(old))) => new.repeats(old),
            (
                Trigger::Firing { scheduled_time },
                Some(Trigger::Firing {
                    scheduled_time: old,
                }),
            ) => scheduled_time == old,
            _ => false,
        }
    }

    /// Whether the campaign item keeps this trigger, to tell its repeats later (a request
    /// has none).
    pub fn is_recorded(&self) -> bool {
        !matches!(self, Trigger::Request)
    }
}

impl Upload {
    /// The same object's event again, or an earlier one: by its sequencer (S3's order of a
    /// key's events) when both events carry one, else by version id, else by eTag.
    fn repeats(&self, applied: &Upload) -> bool {
        if (&self.bucket, &self.key) != (&applied.bucket, &applied.key) {
            return false;
        }
        if let (Some(new), Some(old)) = (&self.sequencer, &applied.sequencer) {
            return sequencer_order(new, old) != Ordering::Greater;
        }
        if let (Some(new), Some(old)) = (&self.version_id, &applied.version_id) {
            return new == old;
        }
        matches!((&self.etag, &applied.etag), (Some(new), Some(old)) if new == old)
    }
}

/// S3's order of two sequencers of one key: the shorter right-padded with zeros, then
/// compared as text (hexadecimal digits, case ignored).
fn sequencer_order(a: &str, b: &str) -> Ordering {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{:0<width$}", s.to_ascii_uppercase());
    pad(a).cmp(&pad(b))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(etag: &str, sequencer: Option<&str>, version: Option<&str>) -> Trigger {
        Trigger::Upload(Upload {
            bucket: "b".into(),
            key: "campaigns/c.toml".into(),
            version_id: version.map(str::to_owned),
            etag: Some(etag.into()),
            sequencer: sequencer.map(str::to_owned),
        })
    }

    #[test]
    fn a_repeated_event_is_told_from_a_new_upload() {
        let applied = upload("e1", Some("0062E99A88DC407460"), None);
        assert!(applied.repeats(Some(&applied)), "the same event again");
        assert!(
            !upload("e1", Some("0062E99A88DC4074A1"), None).repeats(Some(&applied)),
            "the same bytes uploaded again: a later sequencer"
        );
        assert!(
            upload("e0", Some("0062E99A88DC4074"), None).repeats(Some(&applied)),
            "an older event, delivered late (a shorter sequencer, padded on the right)"
        );
        assert!(
            !upload("e2", Some("0062e99a88dc4074a1"), None).repeats(Some(&applied)),
            "case does not matter"
        );
        let versioned = upload("e1", None, Some("v1"));
        assert!(versioned.repeats(Some(&versioned)));
        assert!(!upload("e1", None, Some("v2")).repeats(Some(&versioned)));
        let bare = upload("e1", None, None);
        assert!(bare.repeats(Some(&bare)), "only an eTag: the same content");
        assert!(!upload("e2", None, None).repeats(Some(&bare)));
        let mut elsewhere = upload("e1", Some("0062E99A88DC407460"), None);
        if let Trigger::Upload(u) = &mut elsewhere {
            u.key = "campaigns/other.toml".into();
        }
        assert!(!elsewhere.repeats(Some(&applied)), "another object");
        assert!(!applied.repeats(None));
        assert!(
            !Trigger::Request.repeats(Some(&Trigger::Request)),
            "a request is always meant"
        );
        let at = DateTime::parse_from_rfc3339("2026-11-28T05:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        let firing = Trigger::Firing { scheduled_time: at };
        assert!(firing.repeats(Some(&firing)), "a firing retried");
        assert!(!firing.repeats(Some(&applied)));
        // Kept on the campaign item as JSON (and DynamoDB attributes): it reads back.
        for trigger in [applied, versioned, firing] {
            let json = serde_json::to_string(&trigger).expect("encode");
            assert_eq!(
                serde_json::from_str::<Trigger>(&json).expect("decode"),
                trigger
            );
        }
    }
}
