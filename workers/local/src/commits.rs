//! The commit order of the embedded store: each commit takes the next number of its
//! campaign's sequence in the transaction that commits it (`commits` table, by
//! `{campaign}\0{seq:020}`), so the order is exactly the order of the commits and final
//! as soon as a reader sees it.

use crate::commit_log::Logged;
use crate::db::{COMMITS, RESULTS, TRAJECTORIES, TxError, from_json, to_json};
use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;
use synthfleet_core::commits::{Commit, CommitCursor};
use synthfleet_core::ports::{StoreError, TrajectoryMeta};

/// One entry of the sequence.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    trajectory_id: String,
    committed_at: DateTime<Utc>,
}

fn key(campaign: &str, position: &str) -> String {
    format!("{campaign}\0{position}")
}

/// The first key after every key of `campaign`'s.
fn campaign_end(campaign: &str) -> String {
    format!("{campaign}\u{1}")
}

pub(crate) fn position(seq: u64) -> String {
    format!("{seq:020}")
}

/// The campaign and the number of a key of the sequence.
fn parse_key(key: &str) -> Result<(&str, u64), TxError> {
    key.rsplit_once('\0')
        .and_then(|(campaign, seq)| Some((campaign, seq.parse::<u64>().ok()?)))
        .ok_or_else(|| {
            TxError::Store(StoreError::Corrupt {
                what: "commit sequence".into(),
                detail: format!("key {key:?} is not a campaign and a number"),
            })
        })
}

/// The last number of `campaign`'s sequence (0 before its first commit).
fn last_seq(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    campaign: &str,
) -> Result<u64, TxError> {
    let (start, end) = (key(campaign, ""), campaign_end(campaign));
    let last = table
        .range(start.as_str()..end.as_str())?
        .next_back()
        .transpose()?;
    match last {
        Some((last, _)) => Ok(parse_key(last.value())?.1),
        None => Ok(0),
    }
}

/// Puts `meta` at the end of its campaign's commit order (in the commit's transaction);
/// returns its number.
pub(crate) fn record(
    tx: &WriteTransaction,
    meta: &TrajectoryMeta,
    committed_at: DateTime<Utc>,
) -> Result<u64, TxError> {
    let campaign = &meta.summary.campaign;
    let seq = last_seq(&tx.open_table(COMMITS)?, campaign)? + 1;
    let entry = Entry {
        trajectory_id: meta.summary.trajectory_id.clone(),
        committed_at,
    };
    tx.open_table(COMMITS)?.insert(
        key(campaign, &position(seq)).as_str(),
        to_json(&entry)?.as_slice(),
    )?;
    Ok(seq)
}

/// Gives the trajectories committed before the sequence existed (a state directory of an
/// earlier version: trajectories but no sequence) their places, by the time each rollout
/// finished, then trajectory id. Runs once: afterwards every commit writes its entry.
pub(crate) fn backfill(tx: &WriteTransaction) -> Result<(), TxError> {
    if !tx.open_table(COMMITS)?.is_empty()? || tx.open_table(TRAJECTORIES)?.is_empty()? {
        return Ok(());
    }
    let mut by_campaign: BTreeMap<String, Vec<TrajectoryMeta>> = BTreeMap::new();
    {
        let results = tx.open_table(RESULTS)?;
        let trajectories = tx.open_table(TRAJECTORIES)?;
        for item in results.iter()? {
            let (_, id) = item?;
            if let Some(value) = trajectories.get(id.value())? {
                let meta: TrajectoryMeta = from_json("trajectory item", value.value())?;
                by_campaign
                    .entry(meta.summary.campaign.clone())
                    .or_default()
                    .push(meta);
            }
        }
    }
    for (_, mut metas) in by_campaign {
        metas.sort_by(|a, b| {
            (a.summary.created_at, &a.summary.trajectory_id)
                .cmp(&(b.summary.created_at, &b.summary.trajectory_id))
        });
        for meta in &metas {
            record(tx, meta, meta.summary.created_at)?;
        }
    }
    Ok(())
}

/// Up to `limit` of `campaign`'s commits after `after`, in order. An entry whose
/// trajectory item expired (`synthfleet gc`) is passed over.
pub(crate) fn after(
    tx: &ReadTransaction,
    campaign: &str,
    after: Option<&CommitCursor>,
    limit: usize,
) -> Result<Vec<Commit>, TxError> {
    let start = match after {
        Some(cursor) => Bound::Excluded(key(campaign, cursor.position())),
        None => Bound::Included(key(campaign, "")),
    };
    let end = Bound::Excluded(campaign_end(campaign));
    let commits = tx.open_table(COMMITS)?;
    let trajectories = tx.open_table(TRAJECTORIES)?;
    let mut out = Vec::new();
    for item in commits.range::<&str>((
        start.as_ref().map(String::as_str),
        end.as_ref().map(String::as_str),
    ))? {
        if out.len() >= limit {
            break;
        }
        let (key, value) = item?;
        let entry: Entry = from_json("commit sequence entry", value.value())?;
        let Some(item) = trajectories.get(entry.trajectory_id.as_str())? else {
            continue;
        };
        let position = key
            .value()
            .rsplit('\0')
            .next()
            .unwrap_or_default()
            .to_owned();
        out.push(Commit {
            cursor: CommitCursor::new(campaign, position),
            ordered_at: entry.committed_at,
            meta: from_json("trajectory item", item.value())?,
        });
    }
    Ok(out)
}

/// Every campaign of the sequence, with its last number.
pub(crate) fn campaigns(tx: &ReadTransaction) -> Result<Vec<(String, u64)>, TxError> {
    let table = tx.open_table(COMMITS)?;
    let mut out = Vec::new();
    let mut from = String::new();
    loop {
        let first = table.range(from.as_str()..)?.next().transpose()?;
        let Some((first, _)) = first else {
            return Ok(out);
        };
        let campaign = parse_key(first.value())?.0.to_owned();
        let last = last_seq(&table, &campaign)?;
        from = campaign_end(&campaign);
        out.push((campaign, last));
    }
}

/// The last number of `campaign`'s sequence (0 before its first commit).
pub(crate) fn last_of(tx: &ReadTransaction, campaign: &str) -> Result<u64, TxError> {
    last_seq(&tx.open_table(COMMITS)?, campaign)
}

/// The trajectory id of `campaign`'s entry `seq`, if there is one.
pub(crate) fn trajectory_at(
    tx: &ReadTransaction,
    campaign: &str,
    seq: u64,
) -> Result<Option<String>, TxError> {
    let table = tx.open_table(COMMITS)?;
    let Some(value) = table.get(key(campaign, &position(seq)).as_str())? else {
        return Ok(None);
    };
    let entry: Entry = from_json("commit sequence entry", value.value())?;
    Ok(Some(entry.trajectory_id))
}

/// `campaign`'s entries numbered after `after`, in order, as lines of its commit log (each
/// with its trajectory's item, `None` once the item expired), passed to `f`.
pub(crate) fn each_logged_after(
    tx: &ReadTransaction,
    campaign: &str,
    after: u64,
    mut f: impl FnMut(Logged) -> Result<(), TxError>,
) -> Result<(), TxError> {
    let (start, end) = (key(campaign, &position(after)), campaign_end(campaign));
    let commits = tx.open_table(COMMITS)?;
    let trajectories = tx.open_table(TRAJECTORIES)?;
    for item in commits.range::<&str>((
        Bound::Excluded(start.as_str()),
        Bound::Excluded(end.as_str()),
    ))? {
        let (key, value) = item?;
        let seq = parse_key(key.value())?.1;
        let entry: Entry = from_json("commit sequence entry", value.value())?;
        let meta = trajectories
            .get(entry.trajectory_id.as_str())?
            .map(|item| from_json("trajectory item", item.value()))
            .transpose()?;
        f(Logged {
            seq,
            committed_at: entry.committed_at,
            trajectory_id: entry.trajectory_id,
            meta,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{LocalMetadata, LocalState};
    use chrono::{Duration, Utc};
    use synthfleet_core::MicroUsd;
    use synthfleet_core::message::ResultKey;
    use synthfleet_core::ports::{MetadataStore, TrajectoryMeta};
    use synthfleet_core::testing::sample_meta;

    fn meta(instance: &str, id: &str, finished_ago_s: i64) -> TrajectoryMeta {
        let key = ResultKey {
            campaign: "old".into(),
            instance_id: instance.into(),
            sample_index: 0,
        };
        let mut meta = sample_meta(&key, id);
        meta.summary.created_at = Utc::now() - Duration::seconds(finished_ago_s);
        meta
    }

    #[tokio::test]
    async fn a_state_from_before_the_sequence_gets_its_commits_in_the_order_they_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let state = LocalState::open(dir.path()).expect("open");
            let store = LocalMetadata::new(&state);
            store
                .upsert_campaign("old", MicroUsd(100), 3)
                .await
                .expect("create");
            // Committed in another order than they finished.
            for (instance, id, ago) in [("b", "01B", 20), ("a", "01A", 30), ("c", "01C", 10)] {
                store
                    .commit(&meta(instance, id, ago))
                    .await
                    .expect("commit");
            }
            // What an earlier version left: no sequence.
            state
                .write("dropping the sequence", |tx| {
                    tx.delete_table(super::COMMITS)?;
                    Ok(())
                })
                .expect("drop");
        }
        let state = LocalState::open(dir.path()).expect("reopen");
        let store = LocalMetadata::new(&state);
        let ids = |commits: Vec<synthfleet_core::commits::Commit>| -> Vec<String> {
            commits
                .into_iter()
                .map(|c| c.meta.summary.trajectory_id)
                .collect()
        };
        let all = store.commits_after("old", None, 10).await.expect("read");
        let first = all[0].cursor.clone();
        assert_eq!(ids(all), ["01A", "01B", "01C"]);
        // New commits come after them.
        let mut late = meta("d", "01D", 60);
        late.summary.sample_index = 1;
        store.commit(&late).await.expect("commit");
        assert_eq!(
            ids(store
                .commits_after("old", Some(&first), 10)
                .await
                .expect("read")),
            ["01B", "01C", "01D"]
        );
    }
}
