//! Opening the embedded local backends of a campaign or a state directory.

use crate::BackendError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use synthfleet_core::campaign::{Campaign, StorageConfig};
use synthfleet_core::commits::{Commit, CommitCursor};
use synthfleet_core::ports::TrajectoryMeta;
use synthfleet_core::store::{self, TrajectoryStore, TrajectoryStoreError};
use synthfleet_core::trajectory::TrajectoryRecord;
use synthfleet_local::commit_log;
use synthfleet_local::{CommitLogReader, LocalMetadata, LocalObjectStore, LocalQueue, LocalState};

pub const DEFAULT_STATE_DIR: &str = ".synthfleet";

/// Attempts that fail on an infrastructure fault before a sample is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 3;

/// Deliveries of one message to runs that never finished it before it is dead-lettered
/// as a poison task (a crashed run's delivery is taken back at the next start anyway).
pub const MAX_RECEIVES: u32 = 10;

pub struct Local {
    pub state: LocalState,
    pub store: TrajectoryStore,
}

impl Local {
    pub fn open(dir: &Path) -> Result<Local, BackendError> {
        let state = LocalState::open(dir).map_err(|source| BackendError::Local {
            dir: dir.to_owned(),
            source,
        })?;
        let store =
            TrajectoryStore::new(Arc::new(objects(dir)), Arc::new(LocalMetadata::new(&state)));
        Ok(Local { state, store })
    }

    pub fn queue(&self, campaign: &str) -> LocalQueue {
        LocalQueue::new(&self.state, &queue_name(campaign), MAX_RECEIVES)
    }
}

/// The object store of the state in `dir` (plain files: no lock to take).
fn objects(dir: &Path) -> LocalObjectStore {
    LocalObjectStore::new(&dir.join("objects"))
}

/// A campaign's commits as a reader that must never hold the state reads them
/// (`synthfleet tail`, while a `synthfleet run` holds the database): from the campaign's
/// commit log, and its records from the object files. A state from before the logs is
/// opened once, which writes them.
pub struct LocalCommits {
    dir: PathBuf,
    campaign: String,
    log: CommitLogReader,
    objects: LocalObjectStore,
}

impl LocalCommits {
    /// Opens nothing yet.
    pub fn new(dir: &Path, campaign: &str) -> LocalCommits {
        LocalCommits {
            dir: dir.to_owned(),
            campaign: campaign.to_owned(),
            log: CommitLogReader::new(dir, campaign),
            objects: objects(dir),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Up to `limit` commits after `after`, in order; a poll after the last commit read
    /// reads only what was appended since. Fails with [`BackendError::NoState`] where there
    /// is no state, and with [`BackendError::Local`] when a state from before the logs is
    /// held by another process (try again once it lets go).
    pub fn after(
        &mut self,
        after: Option<&CommitCursor>,
        limit: usize,
    ) -> Result<Vec<Commit>, BackendError> {
        if !commit_log::kept(&self.dir) {
            if !self.dir.join("state.redb").exists() {
                return Err(BackendError::NoState {
                    dir: self.dir.clone(),
                });
            }
            // Opening it writes the logs; it is closed again at once.
            drop(Local::open(&self.dir)?);
        }
        self.log
            .read_after(after, limit)
            .map_err(|source| BackendError::CommitLog {
                campaign: self.campaign.clone(),
                dir: self.dir.clone(),
                source: Box::new(source),
            })
    }

    /// The record of `meta`, read and verified against its checksum (what
    /// [`TrajectoryStore::load`] does, without the database).
    pub async fn load(
        &self,
        meta: &TrajectoryMeta,
    ) -> Result<TrajectoryRecord, TrajectoryStoreError> {
        store::load_from(&self.objects, meta).await
    }
}

pub fn queue_name(campaign: &str) -> String {
    format!("tasks-{campaign}")
}

/// The state directory of a campaign (its `[storage]`), unless overridden.
pub fn state_dir(campaign: &Campaign, override_dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = override_dir {
        return dir.to_owned();
    }
    match &campaign.config.storage {
        StorageConfig::Local { dir } => campaign.resolve(dir),
    }
}

/// A worker id stable for one machine and state directory, so that the reaper of the next
/// run finds what a crashed run left behind, and two state directories never collide.
pub fn worker_id(state_dir: &Path) -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "host".into());
    // `absolute`, not `canonicalize`: the same before and after the directory exists.
    let absolute = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    let digest = Sha256::digest(absolute.to_string_lossy().as_bytes());
    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("local-{host}-{short}")
}
