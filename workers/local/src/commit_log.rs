//! The commit log: beside the database, each campaign's commit order as a file of JSON
//! lines, `{state}/commits/{campaign}.jsonl`, so that a reader (`synthfleet tail`) follows
//! the commits of a running `synthfleet run` without opening the database, which is one
//! process's at a time.
//!
//! The log is a derived copy of the `commits` table ([`crate::commits`]); the database
//! stays the truth.
//!
//! * One line per entry of the sequence, numbers 1, 2, … without a hole: `{"seq": N,
//!   "committed_at": …, "trajectory_id": …, "meta": {…}}`, `meta` the trajectory's item as
//!   the database holds it (items are written once, at their commit), or `null` once
//!   `synthfleet gc` removed the item — a reader passes over such an entry, as the
//!   database's reader does.
//! * Appended right after the commit's transaction, in sequence order (one lock held across
//!   the transaction that takes the number and the append): one write of the whole line,
//!   `O_APPEND`, no fsync. A failed append is logged and costs the commit nothing; the
//!   campaign's log is then behind, and its next commit in this process repairs it first.
//! * Repaired when the state is opened: each campaign's log is made to hold exactly the
//!   database's entries — a partial last line (a crash mid-write) cut, the entries a crash
//!   kept from it appended, a log that is no copy of this database rewritten whole — by
//!   reading the file's tail only.
//! * `gc` rewrites the logs of the campaigns whose items it removed (a new file renamed
//!   over the old one).
//!
//! [`CommitLogReader`] reads complete lines only, in sequence: a line after a hole (a
//! commit whose append failed or a crash lost) is not read until a repair fills the hole —
//! the campaign's next commit in the same process after a failed append, the next process
//! that opens the state after a crash.

use crate::commits;
use crate::db::{BACKEND, LocalState, TxError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use synthfleet_core::commits::{Commit, CommitCursor};
use synthfleet_core::ports::{StoreError, TrajectoryMeta};
use tracing::warn;

/// The directory of the logs, in the state directory.
pub const DIR: &str = "commits";
const EXTENSION: &str = ".jsonl";
const TEMP_MARK: &str = ".tmp-";
/// File names longer than this (of campaign names with many encoded characters) end in a
/// hash instead (most filesystems allow 255 bytes).
const MAX_NAME: usize = 200;
/// Bytes read at a time when looking for the last line.
const CHUNK: u64 = 8 * 1024;

/// One line of a log: an entry of the sequence.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Logged {
    pub(crate) seq: u64,
    pub(crate) committed_at: DateTime<Utc>,
    pub(crate) trajectory_id: String,
    /// `None`: the item expired (`synthfleet gc`).
    pub(crate) meta: Option<TrajectoryMeta>,
}

/// What a line says of its place.
#[derive(Deserialize)]
struct Head {
    seq: u64,
    trajectory_id: String,
}

/// Whether `state_dir` keeps commit logs: its `commits/` directory exists (a state opened
/// by a version that keeps them; it creates the directory before the database).
pub fn kept(state_dir: &Path) -> bool {
    state_dir.join(DIR).is_dir()
}

/// Where `campaign`'s log is in `state_dir`.
pub fn path(state_dir: &Path, campaign: &str) -> PathBuf {
    state_dir.join(DIR).join(file_name(campaign))
}

/// The file name of `campaign`'s log: the name itself when it holds only lowercase ASCII
/// letters, digits, `-`, `_` and `.` (not first) — every valid campaign name without
/// capitals —, any other byte as `%XX`. Capitals are encoded too, so that two names that
/// differ in case only never share a file on a case-insensitive filesystem. A long
/// encoding is cut and ends in a hash of the name.
fn file_name(campaign: &str) -> String {
    let mut name = String::with_capacity(campaign.len());
    for (i, byte) in campaign.bytes().enumerate() {
        let plain = byte.is_ascii_lowercase()
            || byte.is_ascii_digit()
            || matches!(byte, b'-' | b'_')
            || (byte == b'.' && i > 0);
        if plain {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    if name.len() > MAX_NAME {
        // `~` is never plain: this name is no other's encoding.
        name.truncate(MAX_NAME - 17);
        name.push_str(&format!("~{:016x}", fnv1a(campaign.as_bytes())));
    }
    name + EXTENSION
}

/// FNV-1a, 64 bits: the same on every build and platform.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CommitLogError {
    #[error("reading the commit log {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the line at byte {offset} of the commit log {} is not a commit log entry; delete the file and open the state again (e.g. `synthfleet status --state-dir …`): the log is rebuilt from the database",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the line at byte {offset} of the commit log {} is a commit of campaign `{found}`, not `{wanted}`; delete the file and open the state again (e.g. `synthfleet status --state-dir …`): the log is rebuilt from the database",
        path.display()
    )]
    OtherCampaign {
        path: PathBuf,
        offset: u64,
        found: String,
        wanted: String,
    },
    #[error(
        "`{position}` is not a position of the local store's commit order (20 digits); pass a cursor `synthfleet tail` printed from a local state directory"
    )]
    Position { position: String },
}

/// The number of a local cursor's position (`{seq:020}`, [`crate::commits`]).
fn seq_of(cursor: &CommitCursor) -> Result<u64, CommitLogError> {
    let position = cursor.position();
    position
        .parse::<u64>()
        .ok()
        .filter(|_| position.len() == 20 && position.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| CommitLogError::Position {
            position: position.to_owned(),
        })
}

/// Up to `limit` of `campaign`'s commits after `after` in the log of `state_dir`, in
/// order: what [`crate::LocalMetadata`]'s `commits_after` reads from the database, without
/// opening it. A missing log is an empty one.
pub fn read_after(
    state_dir: &Path,
    campaign: &str,
    after: Option<&CommitCursor>,
    limit: usize,
) -> Result<Vec<Commit>, CommitLogError> {
    CommitLogReader::new(state_dir, campaign).read_after(after, limit)
}

/// A reader of one campaign's log that remembers where the lines it read end, so that the
/// next read after one of them reads only what was appended since. A log replaced since
/// (`gc`'s rewrite, a rebuild: another file, or a shorter one) is read from its start
/// again, passing over the lines up to the cursor.
#[derive(Debug, Clone)]
pub struct CommitLogReader {
    campaign: String,
    path: PathBuf,
    /// The file the marks are in.
    file: Option<FileId>,
    /// Where a read may start: after the line of each number.
    marks: Vec<Mark>,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    seq: u64,
    /// The byte after its line.
    offset: u64,
}

type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(metadata: &std::fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some((metadata.dev(), metadata.ino()))
}

/// Elsewhere a file cannot be told from its replacement: every read starts at the top.
#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<FileId> {
    None
}

impl CommitLogReader {
    pub fn new(state_dir: &Path, campaign: &str) -> CommitLogReader {
        CommitLogReader {
            campaign: campaign.to_owned(),
            path: path(state_dir, campaign),
            file: None,
            marks: Vec::new(),
        }
    }

    /// Up to `limit` commits after `after`, in order (see [`read_after`]). Only complete
    /// lines are read, and none past a hole in the sequence.
    pub fn read_after(
        &mut self,
        after: Option<&CommitCursor>,
        limit: usize,
    ) -> Result<Vec<Commit>, CommitLogError> {
        let after = after.map(seq_of).transpose()?.unwrap_or(0);
        let read = |e| CommitLogError::Read {
            path: self.path.clone(),
            source: e,
        };
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.file = None;
                self.marks.clear();
                return Ok(Vec::new());
            }
            Err(e) => return Err(read(e)),
        };
        let metadata = file.metadata().map_err(read)?;
        let id = file_id(&metadata);
        let resume = match id {
            Some(id) if self.file == Some(id) => self
                .marks
                .iter()
                .rev()
                .find(|mark| mark.seq == after && mark.offset <= metadata.len())
                .map(|mark| mark.offset),
            _ => None,
        };
        let resume = match resume {
            Some(offset) if offset > 0 && !ends_a_line(&mut file, offset).map_err(read)? => None,
            resume => resume,
        };
        let scanned = match resume {
            Some(offset) => match self.scan(&mut file, offset, after, limit) {
                // Not a line where the mark said: the file is not the one marked.
                Err(CommitLogError::Corrupt { .. }) => self.scan(&mut file, 0, after, limit),
                scanned => scanned,
            },
            None => self.scan(&mut file, 0, after, limit),
        };
        let (commits, marks) = scanned?;
        self.file = id;
        self.marks = marks;
        Ok(commits)
    }

    /// Reads from `offset` on, passing over lines numbered up to `after`.
    fn scan(
        &self,
        file: &mut File,
        mut offset: u64,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Commit>, Vec<Mark>), CommitLogError> {
        let read = |e| CommitLogError::Read {
            path: self.path.clone(),
            source: e,
        };
        let corrupt = |offset, e| CommitLogError::Corrupt {
            path: self.path.clone(),
            offset,
            source: e,
        };
        file.seek(SeekFrom::Start(offset)).map_err(read)?;
        let mut lines = BufReader::new(file);
        let mut marks = vec![Mark { seq: after, offset }];
        let mut commits = Vec::new();
        let mut last = after;
        let mut line = Vec::new();
        while commits.len() < limit {
            line.clear();
            let n = lines.read_until(b'\n', &mut line).map_err(read)?;
            if line.last() != Some(&b'\n') {
                // The end, or a line still being written.
                break;
            }
            let end = offset + n as u64;
            let head: Head = serde_json::from_slice(&line).map_err(|e| corrupt(offset, e))?;
            if head.seq <= last {
                if head.seq <= after {
                    marks[0].offset = end;
                }
                offset = end;
                continue;
            }
            if head.seq != last + 1 {
                // A hole: what follows waits for the repair.
                break;
            }
            let logged: Logged = serde_json::from_slice(&line).map_err(|e| corrupt(offset, e))?;
            if let Some(meta) = logged.meta {
                if meta.summary.campaign != self.campaign {
                    return Err(CommitLogError::OtherCampaign {
                        path: self.path.clone(),
                        offset,
                        found: meta.summary.campaign,
                        wanted: self.campaign.clone(),
                    });
                }
                commits.push(Commit {
                    cursor: CommitCursor::new(&self.campaign, commits::position(logged.seq)),
                    ordered_at: logged.committed_at,
                    meta,
                });
            }
            last = logged.seq;
            offset = end;
            marks.push(Mark { seq: last, offset });
        }
        Ok((commits, marks))
    }
}

/// Whether the byte before `offset` ends a line.
fn ends_a_line(file: &mut File, offset: u64) -> std::io::Result<bool> {
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset - 1))?;
    file.read_exact(&mut byte)?;
    Ok(byte[0] == b'\n')
}

/// The end of a file's complete lines, and the last of them.
struct Tail {
    complete: u64,
    last: Option<Vec<u8>>,
}

/// Reads a file backwards from its end, a chunk at a time, until the last complete line.
fn tail(file: &mut File) -> std::io::Result<Tail> {
    let mut start = file.metadata()?.len();
    // The bytes from `start` to the end.
    let mut bytes: Vec<u8> = Vec::new();
    loop {
        let mut newlines = bytes.iter().rposition(|b| *b == b'\n').map(|last| {
            let before = bytes[..last].iter().rposition(|b| *b == b'\n');
            (last, before)
        });
        if start > 0 && matches!(newlines, Some((_, None)) | None) {
            // The last line may begin before what was read.
            newlines = None;
        }
        match newlines {
            Some((last, before)) => {
                let first = before.map_or(0, |b| b + 1);
                return Ok(Tail {
                    complete: start + last as u64 + 1,
                    last: Some(bytes[first..last].to_vec()),
                });
            }
            None if start == 0 => {
                return Ok(Tail {
                    complete: 0,
                    last: None,
                });
            }
            None => {
                let step = CHUNK.min(start);
                start -= step;
                let mut chunk = vec![0u8; step as usize];
                file.seek(SeekFrom::Start(start))?;
                file.read_exact(&mut chunk)?;
                chunk.extend_from_slice(&bytes);
                bytes = chunk;
            }
        }
    }
}

/// An I/O failure on a log, as a store error naming it.
fn failed(
    operation: &str,
    path: &Path,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::backend(BACKEND, format!("{operation} {}", path.display()), e)
}

/// The line of `logged`, newline included.
fn line_of(logged: &Logged) -> Result<Vec<u8>, StoreError> {
    let mut line = serde_json::to_vec(logged)
        .map_err(|e| StoreError::backend(BACKEND, "encoding a commit log line", e))?;
    line.push(b'\n');
    Ok(line)
}

/// The writing side of a state's logs: its lock orders the appends as their commits, and
/// holds the campaigns whose logs fell behind (an append failed).
#[derive(Debug)]
pub(crate) struct CommitLogWriter {
    dir: PathBuf,
    behind: Mutex<BTreeSet<String>>,
}

/// The writer, locked.
pub(crate) struct Appending<'a> {
    dir: &'a Path,
    behind: MutexGuard<'a, BTreeSet<String>>,
}

impl CommitLogWriter {
    pub(crate) fn new(state_dir: &Path) -> CommitLogWriter {
        CommitLogWriter {
            dir: state_dir.join(DIR),
            behind: Mutex::new(BTreeSet::new()),
        }
    }

    /// Hold it across the transaction that takes a number and the append of its line.
    pub(crate) fn lock(&self) -> Appending<'_> {
        Appending {
            dir: &self.dir,
            // The set is right whatever a panicking holder did: at worst a log is repaired
            // once more than needed.
            behind: self.behind.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl Appending<'_> {
    /// After the transaction that committed `logged`: appends its line, or, when its log
    /// is behind, repairs it from `state` (which holds the entry now). A failure is logged,
    /// never returned: the database has the commit.
    pub(crate) fn append(&mut self, state: &LocalState, campaign: &str, logged: &Logged) {
        if self.behind.contains(campaign) {
            self.repair_logged(state, campaign);
            return;
        }
        let path = self.dir.join(file_name(campaign));
        let written = line_of(logged).and_then(|line| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .and_then(|mut file| file.write_all(&line))
                .map_err(|e| failed("appending to the commit log", &path, e))
        });
        if let Err(e) = written {
            warn!(
                campaign,
                seq = logged.seq,
                error = %synthfleet_core::error_chain(&e),
                "the commit is stored, but its line is not in the campaign's commit log; the log is repaired at the campaign's next commit or when the state is next opened, and `synthfleet tail` waits for it"
            );
            self.behind.insert(campaign.to_owned());
        }
    }

    /// Makes every campaign's log hold exactly `state`'s entries, and removes logs of
    /// campaigns without any (and temporary files a crash left). Failures are logged.
    pub(crate) fn repair_all(&mut self, state: &LocalState) {
        let campaigns = match state.read("listing the campaigns of the commit order", |tx| {
            commits::campaigns(tx)
        }) {
            Ok(campaigns) => campaigns,
            Err(e) => {
                warn!(error = %synthfleet_core::error_chain(&e), "the commit logs were not repaired; `synthfleet tail` may miss commits until the state is opened again");
                return;
            }
        };
        let expected: BTreeSet<String> = campaigns.iter().map(|(c, _)| file_name(c)).collect();
        for (campaign, last) in &campaigns {
            self.behind.insert(campaign.clone());
            if let Err(e) = self.repair(state, campaign, *last) {
                warn!(campaign, error = %synthfleet_core::error_chain(&e), "the campaign's commit log was not repaired; it is tried again at the campaign's next commit or when the state is next opened");
            } else {
                self.behind.remove(campaign);
            }
        }
        if let Err(e) = self.remove_strays(&expected) {
            warn!(error = %synthfleet_core::error_chain(&e), "a stray file in the commit log directory was not removed");
        }
    }

    /// Rewrites the logs of `campaigns` whole (after their items expired). A log that
    /// cannot be rewritten is removed instead (the next open rebuilds it); failing that,
    /// the error names it.
    pub(crate) fn rewrite(
        &mut self,
        state: &LocalState,
        campaigns: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        for campaign in campaigns {
            let Err(e) = self.rewrite_whole(state, campaign) else {
                continue;
            };
            let path = self.dir.join(file_name(campaign));
            warn!(
                campaign,
                error = %synthfleet_core::error_chain(&e),
                "the campaign's commit log was not rewritten after its expired items were removed; removing it (it is rebuilt when the state is next opened)"
            );
            self.behind.insert(campaign.clone());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(failed(
                        "removing the stale commit log (it still lists expired trajectories; delete it by hand and open the state again to rebuild it)",
                        &path,
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// [`Self::repair`] to the database's last entry of `campaign`, logged.
    fn repair_logged(&mut self, state: &LocalState, campaign: &str) {
        let last = state.read("reading the commit order", |tx| {
            commits::last_of(tx, campaign)
        });
        match last.and_then(|last| self.repair(state, campaign, last)) {
            Ok(()) => {
                self.behind.remove(campaign);
            }
            Err(e) => warn!(
                campaign,
                error = %synthfleet_core::error_chain(&e),
                "the campaign's commit log is still behind; it is tried again at the campaign's next commit or when the state is next opened"
            ),
        }
    }

    /// Makes `campaign`'s log hold exactly the entries up to `last` of `state`: a partial
    /// last line cut, what is missing appended; a log whose last line is not the
    /// database's entry of its number (or is past `last`) rewritten whole.
    fn repair(&mut self, state: &LocalState, campaign: &str, last: u64) -> Result<(), StoreError> {
        std::fs::create_dir_all(self.dir)
            .map_err(|e| failed("creating the commit log directory", self.dir, e))?;
        let path = self.dir.join(file_name(campaign));
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.append_from(state, campaign, 0);
            }
            Err(e) => return Err(failed("opening the commit log", &path, e)),
        };
        let Tail {
            complete,
            last: last_line,
        } = tail(&mut file).map_err(|e| failed("reading the end of the commit log", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| failed("reading the commit log", &path, e))?
            .len();
        if complete < len {
            file.set_len(complete)
                .map_err(|e| failed("cutting a partial line off the commit log", &path, e))?;
        }
        drop(file);
        let logged = match last_line {
            None => return self.append_from(state, campaign, 0),
            Some(line) => serde_json::from_slice::<Head>(&line).ok(),
        };
        let in_db = match &logged {
            Some(head) if head.seq <= last => state.read("reading the commit order", |tx| {
                commits::trajectory_at(tx, campaign, head.seq)
            })?,
            _ => None,
        };
        match logged {
            Some(head) if in_db.as_deref() == Some(head.trajectory_id.as_str()) => {
                if head.seq < last {
                    self.append_from(state, campaign, head.seq)
                } else {
                    Ok(())
                }
            }
            _ => {
                warn!(campaign, path = %path.display(), "the commit log is no copy of the database's commit order; rewriting it whole");
                self.rewrite_whole(state, campaign)
            }
        }
    }

    /// Appends `campaign`'s entries after `after` to its log.
    fn append_from(
        &mut self,
        state: &LocalState,
        campaign: &str,
        after: u64,
    ) -> Result<(), StoreError> {
        let path = self.dir.join(file_name(campaign));
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| failed("opening the commit log", &path, e))?;
        let mut out = BufWriter::new(file);
        state.read("copying the commit order to its log", |tx| {
            commits::each_logged_after(tx, campaign, after, |logged| {
                out.write_all(&line_of(&logged)?)
                    .map_err(|e| TxError::Store(failed("appending to the commit log", &path, e)))
            })
        })?;
        out.flush()
            .map_err(|e| failed("appending to the commit log", &path, e))
    }

    /// Writes `campaign`'s log anew from the database: a temporary file renamed over it.
    fn rewrite_whole(&mut self, state: &LocalState, campaign: &str) -> Result<(), StoreError> {
        let name = file_name(campaign);
        let path = self.dir.join(&name);
        let temp = self
            .dir
            .join(format!("{name}{TEMP_MARK}{}", ulid::Ulid::new()));
        let written = (|| {
            let file =
                File::create(&temp).map_err(|e| failed("writing the commit log", &temp, e))?;
            let mut out = BufWriter::new(file);
            state.read("copying the commit order to its log", |tx| {
                commits::each_logged_after(tx, campaign, 0, |logged| {
                    out.write_all(&line_of(&logged)?)
                        .map_err(|e| TxError::Store(failed("writing the commit log", &temp, e)))
                })
            })?;
            out.flush()
                .map_err(|e| failed("writing the commit log", &temp, e))?;
            std::fs::rename(&temp, &path).map_err(|e| failed("replacing the commit log", &path, e))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// Removes logs not `expected` and temporary files.
    fn remove_strays(&self, expected: &BTreeSet<String>) -> Result<(), StoreError> {
        let entries = std::fs::read_dir(self.dir)
            .map_err(|e| failed("listing the commit log directory", self.dir, e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| failed("listing the commit log directory", self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stray = name.contains(TEMP_MARK)
                || (name.ends_with(EXTENSION) && !expected.contains(&name));
            if stray {
                std::fs::remove_file(entry.path())
                    .map_err(|e| failed("removing a stray commit log", &entry.path(), e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalMetadata;
    use chrono::Duration;
    use synthfleet_core::MicroUsd;
    use synthfleet_core::message::ResultKey;
    use synthfleet_core::ports::MetadataStore;
    use synthfleet_core::testing::sample_meta;
    use synthfleet_core::trajectory::RecordStatus;

    const CAMPAIGN: &str = "nightly";

    fn meta(n: u32, expires_in_days: Option<i64>) -> TrajectoryMeta {
        let key = ResultKey {
            campaign: CAMPAIGN.into(),
            instance_id: format!("task-{n}"),
            sample_index: 0,
        };
        let mut meta = sample_meta(&key, &format!("01TRAJ{n:04}"));
        if let Some(days) = expires_in_days {
            meta.status = RecordStatus::Failed;
            meta.resolved = Some(false);
            meta.expires_at = Some(Utc::now() + Duration::days(days));
        }
        meta
    }

    /// A state whose campaign has `n` commits (those in `expiring` expire in a day).
    async fn state_with(dir: &Path, n: u32, expiring: &[u32]) -> (LocalState, LocalMetadata) {
        let state = LocalState::open(dir).expect("open");
        let store = LocalMetadata::new(&state);
        store
            .upsert_campaign(CAMPAIGN, MicroUsd(1_000_000), u64::from(n))
            .await
            .expect("campaign");
        for i in 1..=n {
            let expires = expiring.contains(&i).then_some(1);
            store.commit(&meta(i, expires)).await.expect("commit");
        }
        (state, store)
    }

    fn ids(commits: &[Commit]) -> Vec<String> {
        commits
            .iter()
            .map(|c| c.meta.summary.trajectory_id.clone())
            .collect()
    }

    fn seqs(commits: &[Commit]) -> Vec<u64> {
        commits
            .iter()
            .map(|c| c.cursor.position().parse().expect("a number"))
            .collect()
    }

    fn log_text(dir: &Path) -> String {
        std::fs::read_to_string(path(dir, CAMPAIGN)).expect("the log")
    }

    fn write_log(dir: &Path, text: &str) {
        std::fs::write(path(dir, CAMPAIGN), text).expect("write the log")
    }

    fn lines(text: &str) -> Vec<&str> {
        text.split_inclusive('\n').collect()
    }

    #[tokio::test]
    async fn commits_are_logged_in_order_and_read_after_a_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_state, _store) = state_with(dir.path(), 5, &[]).await;
        assert!(kept(dir.path()));
        let all = read_after(dir.path(), CAMPAIGN, None, 100).expect("read");
        assert_eq!(seqs(&all), [1, 2, 3, 4, 5]);
        assert_eq!(ids(&all)[0], "01TRAJ0001");
        assert_eq!(all[4].meta, meta_of(&all[4]));
        let rest = read_after(dir.path(), CAMPAIGN, Some(&all[1].cursor), 2).expect("read");
        assert_eq!(seqs(&rest), [3, 4]);
        assert!(
            read_after(dir.path(), CAMPAIGN, Some(&all[4].cursor), 10)
                .expect("read")
                .is_empty()
        );
        assert!(
            read_after(dir.path(), "another", None, 10)
                .expect("a campaign without commits")
                .is_empty()
        );
    }

    /// The meta as committed (`meta(n, None)` but for `created_at`).
    fn meta_of(commit: &Commit) -> TrajectoryMeta {
        let n = commit.meta.summary.trajectory_id[6..].parse().expect("n");
        let mut expected = meta(n, None);
        expected.summary.created_at = commit.meta.summary.created_at;
        expected
    }

    #[tokio::test]
    async fn a_follower_reads_what_was_appended_since_and_only_complete_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_state, store) = state_with(dir.path(), 2, &[]).await;
        let mut reader = CommitLogReader::new(dir.path(), CAMPAIGN);
        let first = reader.read_after(None, 100).expect("read");
        assert_eq!(seqs(&first), [1, 2]);
        store.commit(&meta(3, None)).await.expect("commit");
        // Line 4 being written: half of it is there.
        let whole = {
            let mut text = log_text(dir.path());
            store.commit(&meta(4, None)).await.expect("commit");
            let after = log_text(dir.path());
            let line = after[text.len()..].to_owned();
            text.push_str(&line[..line.len() / 2]);
            write_log(dir.path(), &text);
            after
        };
        let next = reader
            .read_after(Some(&first[1].cursor), 100)
            .expect("read");
        assert_eq!(seqs(&next), [3], "the partial line is not read");
        write_log(dir.path(), &whole);
        let last = reader.read_after(Some(&next[0].cursor), 100).expect("read");
        assert_eq!(seqs(&last), [4], "the line once complete");
        // A reader that did not keep up (its caller kept an earlier cursor) reads again.
        assert_eq!(
            seqs(
                &reader
                    .read_after(Some(&first[0].cursor), 100)
                    .expect("read")
            ),
            [2, 3, 4]
        );
    }

    #[tokio::test]
    async fn a_hole_in_the_sequence_stops_the_read_and_a_removed_log_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (_state, _store) = state_with(dir.path(), 4, &[]).await;
            // Line 3 missing, line 4 there (only made by hand: a lost append is at the end
            // of the log until the repair appends it, and a commit after a failed append
            // repairs the log first).
            let text = log_text(dir.path());
            let kept: Vec<&str> = lines(&text)
                .into_iter()
                .filter(|line| !line.starts_with("{\"seq\":3,"))
                .collect();
            assert_eq!(kept.len(), 3);
            write_log(dir.path(), &kept.concat());
            let read = read_after(dir.path(), CAMPAIGN, None, 100).expect("read");
            assert_eq!(seqs(&read), [1, 2], "nothing past the hole");
            // The repair reads the last line only (the database's here); a log removed is
            // rebuilt whole.
            std::fs::remove_file(path(dir.path(), CAMPAIGN)).expect("remove");
        }
        let _state = LocalState::open(dir.path()).expect("reopen");
        assert_eq!(
            seqs(&read_after(dir.path(), CAMPAIGN, None, 100).expect("read")),
            [1, 2, 3, 4]
        );
    }

    #[tokio::test]
    async fn lost_appends_and_a_partial_line_are_repaired_when_the_state_is_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let complete = {
            let (_state, _store) = state_with(dir.path(), 5, &[]).await;
            let complete = log_text(dir.path());
            // A crash after the commits of 4 and 5, in the middle of writing line 4.
            let lines = lines(&complete);
            let line4 = lines[3];
            write_log(
                dir.path(),
                &format!("{}{}", lines[..3].concat(), &line4[..line4.len() - 20]),
            );
            complete
        };
        assert_eq!(
            seqs(&read_after(dir.path(), CAMPAIGN, None, 100).expect("read")),
            [1, 2, 3]
        );
        let _state = LocalState::open(dir.path()).expect("reopen");
        assert_eq!(
            log_text(dir.path()),
            complete,
            "exactly the database's lines"
        );
        assert_eq!(
            seqs(&read_after(dir.path(), CAMPAIGN, None, 100).expect("read")),
            [1, 2, 3, 4, 5]
        );
    }

    #[tokio::test]
    async fn an_append_that_fails_is_repaired_by_the_next_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_state, store) = state_with(dir.path(), 1, &[]).await;
        let log = path(dir.path(), CAMPAIGN);
        // The log cannot be appended to: a directory stands in its place.
        std::fs::remove_file(&log).expect("remove");
        std::fs::create_dir(&log).expect("block the log");
        store
            .commit(&meta(2, None))
            .await
            .expect("the commit does not fail with its append");
        std::fs::remove_dir(&log).expect("unblock");
        store.commit(&meta(3, None)).await.expect("commit");
        assert_eq!(
            seqs(&read_after(dir.path(), CAMPAIGN, None, 100).expect("read")),
            [1, 2, 3]
        );
        assert_eq!(lines(&log_text(dir.path())).len(), 3, "each line once");
    }

    #[tokio::test]
    async fn a_state_from_before_the_logs_gets_them_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (_state, store) = state_with(dir.path(), 3, &[]).await;
            assert_eq!(
                store
                    .commits_after(CAMPAIGN, None, 10)
                    .await
                    .expect("db")
                    .len(),
                3
            );
        }
        let complete = log_text(dir.path());
        std::fs::remove_dir_all(dir.path().join(DIR)).expect("what an earlier version left");
        assert!(!kept(dir.path()));
        let _state = LocalState::open(dir.path()).expect("reopen");
        assert!(kept(dir.path()));
        assert_eq!(log_text(dir.path()), complete);
    }

    #[tokio::test]
    async fn a_log_that_is_no_copy_of_the_database_is_rewritten_and_strays_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let complete = {
            let (_state, _store) = state_with(dir.path(), 3, &[]).await;
            log_text(dir.path())
        };
        // Another database's log (other trajectories), a log of a campaign without
        // commits, and a temporary file of an interrupted rewrite.
        write_log(dir.path(), &complete.replace("01TRAJ", "01OTHR"));
        let stray = path(dir.path(), "gone");
        std::fs::write(&stray, "{}\n").expect("stray");
        let temp = dir.path().join(DIR).join("nightly.jsonl.tmp-01X");
        std::fs::write(&temp, "").expect("temp");
        let _state = LocalState::open(dir.path()).expect("reopen");
        assert_eq!(log_text(dir.path()), complete);
        assert!(!stray.exists() && !temp.exists());
    }

    #[tokio::test]
    async fn expired_trajectories_leave_the_log_as_they_leave_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_state, store) = state_with(dir.path(), 5, &[2, 4]).await;
        let mut follower = CommitLogReader::new(dir.path(), CAMPAIGN);
        let before = follower.read_after(None, 100).expect("read");
        assert_eq!(seqs(&before), [1, 2, 3, 4, 5]);
        let expired = store
            .expire(Utc::now() + Duration::days(2), false)
            .await
            .expect("expire");
        assert_eq!(expired.len(), 2);
        let after = read_after(dir.path(), CAMPAIGN, None, 100).expect("read");
        assert_eq!(seqs(&after), [1, 3, 5]);
        assert_eq!(
            after,
            store.commits_after(CAMPAIGN, None, 100).await.expect("db")
        );
        // The follower's file was replaced: it reads the new one, and nothing twice.
        store.commit(&meta(6, None)).await.expect("commit");
        assert_eq!(
            seqs(
                &follower
                    .read_after(Some(&before[4].cursor), 100)
                    .expect("read")
            ),
            [6]
        );
        // Entries of removed items keep their place in the log.
        assert_eq!(lines(&log_text(dir.path())).len(), 6);
    }

    #[tokio::test]
    async fn the_log_and_the_database_give_the_same_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_state, store) = state_with(dir.path(), 9, &[1, 4, 5, 9]).await;
        store
            .expire(Utc::now() + Duration::days(2), false)
            .await
            .expect("expire");
        let all = store.commits_after(CAMPAIGN, None, 100).await.expect("db");
        assert_eq!(all.len(), 5);
        let mut cursors: Vec<Option<CommitCursor>> = vec![None];
        cursors.extend(all.iter().map(|c| Some(c.cursor.clone())));
        // Positions of removed items too.
        cursors.push(Some(CommitCursor::new(CAMPAIGN, commits::position(4))));
        let mut follower = CommitLogReader::new(dir.path(), CAMPAIGN);
        for after in &cursors {
            for limit in [1, 2, 3, 100] {
                let db = store
                    .commits_after(CAMPAIGN, after.as_ref(), limit)
                    .await
                    .expect("db");
                assert_eq!(
                    read_after(dir.path(), CAMPAIGN, after.as_ref(), limit).expect("log"),
                    db,
                    "after {after:?}, limit {limit}"
                );
                assert_eq!(
                    follower.read_after(after.as_ref(), limit).expect("log"),
                    db,
                    "a reader with marks, after {after:?}, limit {limit}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_replaced_log_is_read_from_its_start_passing_over_what_was_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_state, _store) = state_with(dir.path(), 5, &[]).await;
        let text = log_text(dir.path());
        let all = lines(&text);
        let mut follower = CommitLogReader::new(dir.path(), CAMPAIGN);
        let read = follower.read_after(None, 3).expect("read");
        assert_eq!(seqs(&read), [1, 2, 3]);
        // Another file where the follower's place (the end of line 3) is the end of line
        // 4: resumed there, it would pass line 4 over.
        let pad = all[0].len() + all[1].len() - all[3].len();
        let replacement = format!("{}{}{}{}", " ".repeat(pad), all[2], all[3], all[4]);
        assert_eq!(
            replacement.len() - all[4].len(),
            all[..3].concat().len(),
            "the old place ends a line of the new file"
        );
        let temp = dir.path().join("replacement");
        std::fs::write(&temp, replacement).expect("write");
        std::fs::rename(&temp, path(dir.path(), CAMPAIGN)).expect("replace");
        assert_eq!(
            seqs(
                &follower
                    .read_after(Some(&read[2].cursor), 10)
                    .expect("read")
            ),
            [4, 5]
        );
    }

    #[test]
    fn a_cursor_of_another_store_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cursor = CommitCursor::new(CAMPAIGN, "0001767225600000#01JTRAJ");
        let refused = read_after(dir.path(), CAMPAIGN, Some(&cursor), 10);
        assert!(
            matches!(refused, Err(CommitLogError::Position { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn file_names_are_the_campaign_names_or_safe_encodings_of_them() {
        assert_eq!(file_name("nightly-2026_v1.2"), "nightly-2026_v1.2.jsonl");
        assert_eq!(file_name("Nightly"), "%4Eightly.jsonl");
        assert_ne!(file_name("Nightly"), file_name("nightly"));
        assert_eq!(file_name("../x/y"), "%2E.%2Fx%2Fy.jsonl");
        let long = file_name(&"N".repeat(128));
        assert!(long.len() <= 255 && long.ends_with(".jsonl"), "{long}");
        assert_ne!(long, file_name(&format!("{}M", "N".repeat(127))));
    }
}
