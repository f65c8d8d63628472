//! Commit order: a campaign's committed trajectories as a stream a reader can follow and
//! resume ([`crate::ports::MetadataStore::commits_after`], `synthfleet tail`).
//!
//! Every metadata store keeps a campaign's commits in an order of its own, named by a
//! *position* (the local store: a sequence number written in the commit's transaction;
//! DynamoDB: the time the rollout finished and its trajectory id). A [`CommitCursor`] is
//! one such position of one campaign; its text form ([`CommitCursor::encode`]) is opaque
//! to readers and stable: it means the same after a restart or an upgrade.

use crate::ports::TrajectoryMeta;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

/// The version tag of a cursor's text form.
const CURSOR_VERSION: &str = "c1";

/// A position in a campaign's commit order: what comes after it is what a reader has not
/// seen yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitCursor {
    campaign: String,
    position: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error(
        "`{cursor}` is not a commit cursor ({reason}); pass a `cursor` value `synthfleet tail` printed"
    )]
    Malformed {
        cursor: String,
        reason: &'static str,
    },
    #[error(
        "the cursor is a position in campaign `{found}`, not `{wanted}`; pass a cursor `synthfleet tail {wanted}` printed"
    )]
    OtherCampaign { found: String, wanted: String },
}

impl CommitCursor {
    /// The position `position` (a store's own order key) of `campaign`'s commits.
    pub fn new(campaign: &str, position: impl Into<String>) -> CommitCursor {
        CommitCursor {
            campaign: campaign.to_owned(),
            position: position.into(),
        }
    }

    pub fn campaign(&self) -> &str {
        &self.campaign
    }

    /// The store's order key: commits after this cursor have a greater one.
    pub fn position(&self) -> &str {
        &self.position
    }

    /// The text form: URL-safe base64 of the version, the campaign and the position.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{CURSOR_VERSION}\n{}\n{}",
            self.campaign, self.position
        ))
    }

    /// Reads a cursor's text form.
    pub fn decode(text: &str) -> Result<CommitCursor, CursorError> {
        let malformed = |reason| CursorError::Malformed {
            cursor: text.to_owned(),
            reason,
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| malformed("not URL-safe base64"))?;
        let text = String::from_utf8(bytes).map_err(|_| malformed("not UTF-8 inside"))?;
        let mut parts = text.splitn(3, '\n');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(CURSOR_VERSION), Some(campaign), Some(position))
                if !campaign.is_empty() && !position.is_empty() =>
            {
                Ok(CommitCursor::new(campaign, position))
            }
            (Some(CURSOR_VERSION), _, _) => Err(malformed("no campaign or position")),
            _ => Err(malformed("unknown version")),
        }
    }

    /// Reads a cursor that must be a position of `campaign`.
    pub fn decode_for(text: &str, campaign: &str) -> Result<CommitCursor, CursorError> {
        let cursor = CommitCursor::decode(text)?;
        if cursor.campaign != campaign {
            return Err(CursorError::OtherCampaign {
                found: cursor.campaign,
                wanted: campaign.to_owned(),
            });
        }
        Ok(cursor)
    }
}

impl std::fmt::Display for CommitCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

/// One committed trajectory at its place in the commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// Its position: pass it back to read what came after it.
    pub cursor: CommitCursor,
    /// The time its position orders it by: when it was committed (the local store), or
    /// when its rollout finished by its worker's clock (DynamoDB).
    pub ordered_at: DateTime<Utc>,
    pub meta: TrajectoryMeta,
}

/// Of `commits` (in commit order), the leading ones ordered before `horizon`: where a
/// commit can still appear before one already read (DynamoDB: order keys from the workers'
/// clocks, an index read eventually), a reader takes only commits older than a settle lag,
/// and stops at the first younger one so that nothing behind it is passed over.
pub fn settled(commits: Vec<Commit>, horizon: DateTime<Utc>) -> Vec<Commit> {
    commits
        .into_iter()
        .take_while(|commit| commit.ordered_at < horizon)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::TrajectorySummary;
    use crate::trajectory::{ExitStatus, RecordStatus};

    #[test]
    fn a_cursor_reads_back_from_its_text_and_names_its_campaign() {
        let cursor = CommitCursor::new("nightly-2026", "0001767225600000#01JTRAJ");
        let text = cursor.encode();
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{text}"
        );
        assert_eq!(CommitCursor::decode(&text), Ok(cursor.clone()));
        assert_eq!(
            CommitCursor::decode_for(&format!(" {text}\n"), "nightly-2026"),
            Ok(cursor)
        );
        assert_eq!(
            CommitCursor::decode_for(&text, "other"),
            Err(CursorError::OtherCampaign {
                found: "nightly-2026".into(),
                wanted: "other".into()
            })
        );
    }

    #[test]
    fn what_is_not_a_cursor_is_refused_with_the_reason() {
        let reason = |text: &str| match CommitCursor::decode(text) {
            Err(CursorError::Malformed { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason("not base64!"), "not URL-safe base64");
        assert_eq!(
            reason(&URL_SAFE_NO_PAD.encode("c9\nx\ny")),
            "unknown version"
        );
        assert_eq!(
            reason(&URL_SAFE_NO_PAD.encode("c1\ncampaign")),
            "no campaign or position"
        );
    }

    fn commit(at_ms: i64) -> Commit {
        let ordered_at = DateTime::from_timestamp_millis(at_ms).expect("a time");
        Commit {
            cursor: CommitCursor::new("c", format!("{at_ms:013}")),
            ordered_at,
            meta: TrajectoryMeta {
                summary: TrajectorySummary {
                    campaign: "c".into(),
                    trajectory_id: format!("t{at_ms}"),
                    instance_id: "i".into(),
                    sample_index: 0,
                    model: "m".into(),
                    provider: "p".into(),
                    cost_usd: 0.0,
                    input_tokens: 0,
                    output_tokens: 0,
                    cache_read_tokens: 0,
                    cache_write_tokens: 0,
                    n_steps: 0,
                    created_at: ordered_at,
                    variant: None,
                },
                status: RecordStatus::Success,
                exit_status: ExitStatus::Submitted,
                resolved: Some(true),
                reward: Some(1.0),
                object_key: "k".into(),
                sha256: "s".into(),
                size_bytes: 0,
                worker_id: "w".into(),
                expires_at: None,
            },
        }
    }

    #[test]
    fn a_reader_stops_at_the_first_commit_not_yet_settled() {
        let horizon = DateTime::from_timestamp_millis(2_000).expect("a time");
        let read = settled(vec![commit(1_000), commit(1_999), commit(2_000)], horizon);
        let ids: Vec<_> = read.iter().map(|c| c.cursor.position()).collect();
        assert_eq!(ids, ["0000000001000", "0000000001999"]);
        assert!(settled(vec![commit(2_500), commit(1_000)], horizon).is_empty());
    }
}
