//! Opening the embedded local backends of a campaign or a state directory.

use crate::BackendError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use synthfleet_core::campaign::{Campaign, StorageConfig};
use synthfleet_core::store::TrajectoryStore;
use synthfleet_local::{LocalMetadata, LocalObjectStore, LocalQueue, LocalState};

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
        let store = TrajectoryStore::new(
            Arc::new(LocalObjectStore::new(&dir.join("objects"))),
            Arc::new(LocalMetadata::new(&state)),
        );
        Ok(Local { state, store })
    }

    pub fn queue(&self, campaign: &str) -> LocalQueue {
        LocalQueue::new(&self.state, &queue_name(campaign), MAX_RECEIVES)
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
