//! Trajectory persistence over the object and metadata ports.
//!
//! **Invariant:** the object (and its [facts](crate::facts)) are written before its
//! metadata item, and the metadata commit is conditional on (campaign, instance, sample);
//! so a trajectory is either complete (object + item) or absent, and each sample has at
//! most one committed result.

use crate::codec::{self, CodecError};
use crate::facts::{TrajectoryFacts, facts_key};
use crate::message::ResultKey;
use crate::ports::{
    CommitEvents, CommitOutcome, MetadataStore, ObjectStore, StoreError, TrajectoryMeta,
    TrajectorySummary,
};
use crate::resume::Checkpoint;
use crate::trajectory::{RecordStatus, TrajectoryRecord, checkpoint_key, checkpoint_prefix};
use chrono::{Duration, Utc};
use std::sync::Arc;

/// Failed trajectories (and partial checkpoints) expire after this long.
pub const FAILED_RETENTION_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TrajectoryStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// A sample's latest checkpoint, as read.
#[derive(Debug)]
pub struct Found {
    /// Its object key (it ends in the trajectory id of the attempt that wrote it).
    pub key: String,
    pub checkpoint: Result<Checkpoint, TrajectoryStoreError>,
}

impl Found {
    /// The trajectory id of the attempt that wrote it, read from its key.
    pub fn trajectory_id(&self) -> &str {
        let name = self.key.rsplit('/').next().unwrap_or(&self.key);
        name.strip_suffix(".json.zst").unwrap_or(name)
    }
}

#[derive(Clone)]
pub struct TrajectoryStore {
    pub objects: Arc<dyn ObjectStore>,
    pub metadata: Arc<dyn MetadataStore>,
    /// Told of every result this store commits (`None`: nobody).
    events: Option<Arc<dyn CommitEvents>>,
}

impl TrajectoryStore {
    pub fn new(objects: Arc<dyn ObjectStore>, metadata: Arc<dyn MetadataStore>) -> TrajectoryStore {
        TrajectoryStore {
            objects,
            metadata,
            events: None,
        }
    }

    /// Stores the rollout as it stands at a step boundary under its sample's checkpoint
    /// prefix: if the worker dies, another attempt continues it
    /// ([`crate::resume`]); it stays until an attempt of the sample commits (or expires
    /// like any failure).
    pub async fn checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), TrajectoryStoreError> {
        let record = &checkpoint.record;
        let encoded = codec::encode_checkpoint(checkpoint)?;
        let key = checkpoint_key(
            &record.campaign,
            &record.instance_id,
            record.sample_index,
            &record.trajectory_id,
        );
        self.objects.put(&key, encoded.bytes).await?;
        Ok(())
    }

    /// The checkpoint an attempt of the sample continues: the newest attempt's
    /// ([`crate::resume::newest_first`]) that reads — an older one when the newest does not (cut
    /// off mid-write, corrupt) — or `None` when no attempt left one. Listing fails as a
    /// whole; when no checkpoint reads, [`Found`] names the newest and why.
    pub async fn latest_checkpoint(
        &self,
        key: &ResultKey,
    ) -> Result<Option<Found>, TrajectoryStoreError> {
        let prefix = checkpoint_prefix(&key.campaign, &key.instance_id, key.sample_index);
        let mut keys: Vec<String> = self
            .objects
            .list(&prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        crate::resume::newest_first(&mut keys);
        let mut newest_failure = None;
        for latest in keys {
            let checkpoint = match self.objects.get(&latest).await {
                Ok(bytes) => codec::decode_checkpoint(&latest, &bytes).map_err(Into::into),
                Err(e) => Err(e.into()),
            };
            match checkpoint {
                Ok(checkpoint) => {
                    return Ok(Some(Found {
                        key: latest,
                        checkpoint: Ok(checkpoint),
                    }));
                }
                Err(e) => {
                    newest_failure.get_or_insert(Found {
                        key: latest,
                        checkpoint: Err(e),
                    });
                }
            }
        }
        Ok(newest_failure)
    }

    /// Writes the finished record and commits its metadata item.
    pub async fn commit(
        &self,
        record: &TrajectoryRecord,
    ) -> Result<CommitOutcome, TrajectoryStoreError> {
        let encoded = codec::encode(record)?;
        let key = record.object_key();
        let size_bytes = encoded.bytes.len() as u64;
        let facts = TrajectoryFacts::of(record, &encoded.sha256);
        let facts_key = facts_key(&record.campaign, &record.trajectory_id);
        self.objects.put(&key, encoded.bytes).await?;
        self.objects.put(&facts_key, facts.to_json()).await?;
        let meta = summarize(record, key.clone(), encoded.sha256, size_bytes);
        let outcome = self.metadata.commit(&meta).await?;
        match (&outcome, &self.events) {
            (CommitOutcome::AlreadyCommitted(_), _) => {
                // Another attempt won: this one's object must not linger as a second result.
                self.objects.delete(&key).await?;
                self.objects.delete(&facts_key).await?;
            }
            (CommitOutcome::Committed, Some(events)) => events.committed(&meta).await,
            (CommitOutcome::Committed, None) => {}
        }
        Ok(outcome)
    }

    /// Removes the checkpoints of every attempt of the record's sample, once the sample
    /// has its result: no partial record is kept beside it. Housekeeping after a commit (a
    /// failure here leaves objects that expire on their own, never a wrong result).
    pub async fn discard_checkpoints(
        &self,
        record: &TrajectoryRecord,
    ) -> Result<(), TrajectoryStoreError> {
        let prefix = checkpoint_prefix(&record.campaign, &record.instance_id, record.sample_index);
        for stale in self.objects.list(&prefix).await? {
            self.objects.delete(&stale.key).await?;
        }
        Ok(())
    }

    /// Reads and verifies (checksum, schema) a committed record.
    pub async fn load(
        &self,
        meta: &TrajectoryMeta,
    ) -> Result<TrajectoryRecord, TrajectoryStoreError> {
        self.load_as(meta).await
    }

    /// Reads and verifies a record, parsed as `T`: the record or a view of it
    /// ([`codec::Stored`]).
    pub async fn load_as<T: codec::Stored>(
        &self,
        meta: &TrajectoryMeta,
    ) -> Result<T, TrajectoryStoreError> {
        load_from(self.objects.as_ref(), meta).await
    }

    /// Tells `events` of every result this store commits from now on (after the commit;
    /// a losing duplicate is not announced).
    pub fn announcing_commits(mut self, events: Arc<dyn CommitEvents>) -> TrajectoryStore {
        self.events = Some(events);
        self
    }
}

/// Reads and verifies the record of `meta` from `objects` alone, parsed as `T`: for a
/// reader that has no metadata store to hand (`synthfleet tail` on a state a run holds).
pub async fn load_from<T: codec::Stored>(
    objects: &dyn ObjectStore,
    meta: &TrajectoryMeta,
) -> Result<T, TrajectoryStoreError> {
    let bytes = objects.get(&meta.object_key).await?;
    Ok(codec::decode_as(&meta.object_key, &bytes, &meta.sha256)?)
}

/// The metadata item of a finished record.
pub fn summarize(
    record: &TrajectoryRecord,
    object_key: String,
    sha256: String,
    size_bytes: u64,
) -> TrajectoryMeta {
    let status = record.status();
    let created_at = record.timings.finished_at.unwrap_or_else(Utc::now);
    TrajectoryMeta {
        summary: TrajectorySummary::of(record, created_at),
        status,
        exit_status: record
            .exit_status
            .clone()
            .unwrap_or(crate::trajectory::ExitStatus::Error(
                crate::trajectory::ErrorKind::Internal,
            )),
        resolved: record.verification.as_ref().map(|v| v.resolved),
        reward: record.verification.as_ref().map(|v| v.reward),
        object_key,
        sha256,
        size_bytes,
        worker_id: record.worker_id.clone(),
        expires_at: (status == RecordStatus::Failed)
            .then(|| created_at + Duration::days(FAILED_RETENTION_DAYS)),
    }
}
