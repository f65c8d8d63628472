use crate::commit_log::CommitLogWriter;
use redb::{Database, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthfleet_core::ports::StoreError;

pub(crate) const BACKEND: &str = "local store";

pub(crate) const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_messages");
pub(crate) const ENQUEUED: TableDefinition<&str, ()> = TableDefinition::new("enqueued");
pub(crate) const HEARTBEATS: TableDefinition<&str, &[u8]> = TableDefinition::new("heartbeats");
pub(crate) const DEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_dead");
pub(crate) const CAMPAIGNS: TableDefinition<&str, &[u8]> = TableDefinition::new("campaigns");
pub(crate) const TRAJECTORIES: TableDefinition<&str, &[u8]> = TableDefinition::new("trajectories");
pub(crate) const RESULTS: TableDefinition<&str, &str> = TableDefinition::new("results");
pub(crate) const DEAD_LETTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("dead_letters");
/// Adaptive sampling's round decisions, by campaign, instance and round.
pub(crate) const ROUNDS: TableDefinition<&str, &[u8]> = TableDefinition::new("sampling_rounds");
/// Each campaign's commit order, by `{campaign}\0{seq:020}` ([`crate::commits`]).
pub(crate) const COMMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("commits");
/// Budget leases, by `{campaign}\0{lease id}`.
pub(crate) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("budget_leases");

/// How long opening a state waits while another process holds it. Short-lived readers
/// hold it for a moment (a `status --watch` redraw, `show`, `gc`): a `synthfleet run`
/// started at that instant waits for them instead of failing.
const LOCKED_WAIT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) the database at `path`, waiting up to [`LOCKED_WAIT`] while
/// another process holds it.
fn create_waiting(path: &Path) -> Result<Database, redb::DatabaseError> {
    let deadline = Instant::now() + LOCKED_WAIT;
    loop {
        match Database::create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            opened => return opened,
        }
    }
}

/// One local state directory: `state.redb`, `objects/` and `commits/` (the commit logs,
/// [`crate::commit_log`]).
#[derive(Clone)]
pub struct LocalState {
    pub(crate) db: Arc<Database>,
    /// Held across a commit's transaction and the append of its commit log line.
    pub(crate) log: Arc<CommitLogWriter>,
    dir: PathBuf,
}

impl LocalState {
    /// Opens (creating if needed) the state in `dir`, and repairs its commit logs. Fails if
    /// another process holds it for longer than a few seconds.
    pub fn open(dir: &Path) -> Result<LocalState, StoreError> {
        // `commits/` before the database: a reader that finds it reads the logs and never
        // opens the database, even of a state being created right now.
        let logs = dir.join(crate::commit_log::DIR);
        std::fs::create_dir_all(&logs).map_err(|e| {
            StoreError::backend(
                BACKEND,
                format!("creating state directory {}", logs.display()),
                e,
            )
        })?;
        let path = dir.join("state.redb");
        let db = create_waiting(&path).map_err(|e| {
            StoreError::backend(
                BACKEND,
                format!(
                    "opening {} (is another synthfleet process using this state directory? waited {} s for it to let go)",
                    path.display(),
                    LOCKED_WAIT.as_secs()
                ),
                e,
            )
        })?;
        let state = LocalState {
            db: Arc::new(db),
            log: Arc::new(CommitLogWriter::new(dir)),
            dir: dir.to_owned(),
        };
        state.write("creating tables", |tx| {
            tx.open_table(MESSAGES)?;
            tx.open_table(ENQUEUED)?;
            tx.open_table(HEARTBEATS)?;
            tx.open_table(DEAD)?;
            tx.open_table(CAMPAIGNS)?;
            tx.open_table(TRAJECTORIES)?;
            tx.open_table(RESULTS)?;
            tx.open_table(DEAD_LETTERS)?;
            tx.open_table(LEASES)?;
            tx.open_table(COMMITS)?;
            crate::commits::backfill(tx)?;
            Ok(())
        })?;
        state.log.lock().repair_all(&state);
        Ok(state)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` in one write transaction, committed only if `f` succeeds.
    pub(crate) fn write<T>(
        &self,
        operation: &str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| StoreError::backend(BACKEND, operation, e))?;
        let value = f(&tx).map_err(|e| e.into_store(operation))?;
        tx.commit()
            .map_err(|e| StoreError::backend(BACKEND, operation, e))?;
        Ok(value)
    }

    pub(crate) fn read<T>(
        &self,
        operation: &str,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, TxError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| StoreError::backend(BACKEND, operation, e))?;
        f(&tx).map_err(|e| e.into_store(operation))
    }

    /// Runs blocking database work off the async runtime.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(LocalState) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(state))
            .await
            .map_err(|e| StoreError::backend(BACKEND, "joining a blocking task", e))?
    }
}

/// Errors inside a transaction closure.
#[derive(Debug)]
pub(crate) enum TxError {
    Db(Box<redb::Error>),
    Store(StoreError),
}

impl TxError {
    fn into_store(self, operation: &str) -> StoreError {
        match self {
            TxError::Db(e) => StoreError::backend(BACKEND, operation, *e),
            TxError::Store(e) => e,
        }
    }
}

impl From<redb::TableError> for TxError {
    fn from(e: redb::TableError) -> TxError {
        TxError::Db(Box::new(e.into()))
    }
}

impl From<redb::StorageError> for TxError {
    fn from(e: redb::StorageError) -> TxError {
        TxError::Db(Box::new(e.into()))
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> TxError {
        TxError::Store(e)
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, TxError> {
    serde_json::to_vec(value)
        .map_err(|e| TxError::Store(StoreError::backend(BACKEND, "encoding an item", e)))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, TxError> {
    serde_json::from_slice(bytes).map_err(|e| {
        TxError::Store(StoreError::Corrupt {
            what: what.to_owned(),
            detail: e.to_string(),
        })
    })
}

pub(crate) fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process's short read (a `status --watch` redraw) does not refuse a run that
    /// starts meanwhile; a state held for longer is refused with what to check.
    #[test]
    fn a_state_held_for_a_moment_is_waited_for_and_one_held_longer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = LocalState::open(dir.path()).expect("open");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let opened = LocalState::open(dir.path()).expect("opened once the other let go");
        releaser.join().expect("the releaser");
        let started = Instant::now();
        let refused = LocalState::open(dir.path()).err().expect("held throughout");
        assert!(started.elapsed() >= LOCKED_WAIT);
        assert!(
            refused
                .to_string()
                .contains("is another synthfleet process using this state directory"),
            "{refused}"
        );
        drop(opened);
    }
}
