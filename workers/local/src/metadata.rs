//! The embedded metadata store: campaign items with the budget ledger, trajectory items,
//! and the (campaign, instance, sample) → trajectory index that makes commits idempotent.

use crate::commit_log::Logged;
use crate::db::{
    CAMPAIGNS, DEAD_LETTERS, ENQUEUED, HEARTBEATS, LEASES, LocalState, RESULTS, ROUNDS,
    TRAJECTORIES, TxError, from_json, to_json,
};
use async_trait::async_trait;
use chrono::Utc;
use redb::{ReadableTable, WriteTransaction};
use std::collections::BTreeSet;
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::{
    BudgetLease, CampaignRecord, CampaignState, Ledger, ReserveOutcome, Submitted,
};
use synthfleet_core::commits::{Commit, CommitCursor};
use synthfleet_core::lifecycle::Trigger;
use synthfleet_core::message::ResultKey;
use synthfleet_core::ports::{
    CommitOutcome, DeadLetter, Draw, MetadataStore, Reservation, StoreError, TrajectoryMeta,
    WorkerHeartbeat,
};
use synthfleet_core::sampling::{Decided, RoundDecision, RoundKey, SamplePlan};
use synthfleet_core::trajectory::RecordStatus;
use tracing::error;

#[derive(Clone)]
pub struct LocalMetadata {
    state: LocalState,
}

impl LocalMetadata {
    pub fn new(state: &LocalState) -> LocalMetadata {
        LocalMetadata {
            state: state.clone(),
        }
    }

    /// Removes the items of trajectories whose `expires_at` has passed (what DynamoDB's
    /// TTL does on AWS), with their result index entries, and rewrites the commit logs of
    /// their campaigns without them; returns the removed items so their objects can be
    /// deleted too. The campaign counts keep them: they happened.
    pub async fn expire(
        &self,
        now: chrono::DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Vec<TrajectoryMeta>, StoreError> {
        self.state
            .blocking(move |state| {
                // No commit between the removal and the rewrite of the logs.
                let log = state.log.clone();
                let mut appending = log.lock();
                let expired = state.write("expiring trajectory items", |tx| {
                    let mut results = tx.open_table(RESULTS)?;
                    let mut trajectories = tx.open_table(TRAJECTORIES)?;
                    let mut expired = Vec::new();
                    for item in trajectories.iter()? {
                        let (_, value) = item?;
                        let meta: TrajectoryMeta = from_json("trajectory item", value.value())?;
                        if meta.expires_at.is_some_and(|at| at <= now) {
                            expired.push(meta);
                        }
                    }
                    if !dry_run {
                        for meta in &expired {
                            trajectories.remove(meta.summary.trajectory_id.as_str())?;
                            let key = result_key(&meta.result_key());
                            let indexed = results.get(key.as_str())?.map(|v| v.value().to_owned());
                            if indexed.as_deref() == Some(meta.summary.trajectory_id.as_str()) {
                                results.remove(key.as_str())?;
                            }
                        }
                    }
                    Ok(expired)
                })?;
                if !dry_run {
                    // The logs must not serve the removed items any more.
                    let campaigns: BTreeSet<String> = expired
                        .iter()
                        .map(|meta| meta.summary.campaign.clone())
                        .collect();
                    appending.rewrite(&state, &campaigns)?;
                }
                Ok(expired)
            })
            .await
    }
}

fn round_key(key: &RoundKey) -> String {
    format!("{}\0{}\0{:010}", key.campaign, key.instance_id, key.round)
}

fn result_key(key: &ResultKey) -> String {
    format!(
        "{}\0{}\0{:010}",
        key.campaign, key.instance_id, key.sample_index
    )
}

/// The inverse of [`result_key`].
fn parse_result_key(key: &str) -> Result<ResultKey, StoreError> {
    let mut parts = key.split('\0');
    match (parts.next(), parts.next(), parts.next().map(str::parse)) {
        (Some(campaign), Some(instance_id), Some(Ok(sample_index))) => Ok(ResultKey {
            campaign: campaign.to_owned(),
            instance_id: instance_id.to_owned(),
            sample_index,
        }),
        _ => Err(StoreError::Corrupt {
            what: "enqueue marker".into(),
            detail: format!("key {key:?} is not campaign\\0instance\\0sample"),
        }),
    }
}

fn lease_key(lease: &BudgetLease) -> String {
    format!("{}\0{}", lease.campaign, lease.id)
}

fn campaign_range(campaign: &str) -> (String, String) {
    (format!("{campaign}\0"), format!("{campaign}\u{1}"))
}

fn load_campaign(tx: &WriteTransaction, name: &str) -> Result<CampaignRecord, TxError> {
    let table = tx.open_table(CAMPAIGNS)?;
    let value = table.get(name)?.ok_or_else(|| StoreError::NotFound {
        what: format!("campaign `{name}`"),
    })?;
    from_json("campaign item", value.value())
}

fn store_campaign(tx: &WriteTransaction, record: &mut CampaignRecord) -> Result<(), TxError> {
    record.updated_at = Utc::now();
    tx.open_table(CAMPAIGNS)?
        .insert(record.name.as_str(), to_json(record)?.as_slice())?;
    Ok(())
}

/// Read-modify-write of one campaign item inside one transaction.
fn update_campaign<T>(
    tx: &WriteTransaction,
    name: &str,
    f: impl FnOnce(&mut CampaignRecord) -> T,
) -> Result<T, TxError> {
    let mut record = load_campaign(tx, name)?;
    let out = f(&mut record);
    store_campaign(tx, &mut record)?;
    Ok(out)
}

/// Records a dead letter in `tx` and counts it on its campaign, once per sample (the first
/// record, the worker's with its error, wins): the one path for the worker's dead letters
/// and the queue's receive-count backstop alike.
pub(crate) fn record_dead_letter_in(
    tx: &WriteTransaction,
    letter: &DeadLetter,
) -> Result<(), TxError> {
    let key = result_key(&letter.key);
    let mut table = tx.open_table(DEAD_LETTERS)?;
    if table.get(key.as_str())?.is_some() {
        return Ok(());
    }
    table.insert(key.as_str(), to_json(letter)?.as_slice())?;
    drop(table);
    if tx
        .open_table(CAMPAIGNS)?
        .get(letter.key.campaign.as_str())?
        .is_some()
    {
        update_campaign(tx, &letter.key.campaign, |record| {
            record.counts.dead_lettered += 1
        })?;
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for LocalMetadata {
    async fn submit_campaign(
        &self,
        name: &str,
        budget: MicroUsd,
        plan: &SamplePlan,
        trigger: &Trigger,
    ) -> Result<(CampaignRecord, Submitted), StoreError> {
        let name = name.to_owned();
        let trigger = trigger.clone();
        let plan = *plan;
        self.state
            .blocking(move |state| {
                state.write("submitting a campaign", |tx| {
                    let existing = tx
                        .open_table(CAMPAIGNS)?
                        .get(name.as_str())?
                        .map(|v| from_json::<CampaignRecord>("campaign item", v.value()))
                        .transpose()?;
                    let (mut record, submitted) = match existing {
                        None => (
                            CampaignRecord::submitted(&name, budget, &plan, &trigger, Utc::now()),
                            Submitted::Created,
                        ),
                        Some(mut record) => {
                            let submitted = record.resubmit(budget, &plan, &trigger);
                            (record, submitted)
                        }
                    };
                    if submitted != Submitted::Repeated {
                        store_campaign(tx, &mut record)?;
                    }
                    Ok((record, submitted))
                })
            })
            .await
    }

    async fn campaign(&self, name: &str) -> Result<Option<CampaignRecord>, StoreError> {
        let name = name.to_owned();
        self.state
            .blocking(move |state| {
                state.read("reading a campaign", |tx| {
                    tx.open_table(CAMPAIGNS)?
                        .get(name.as_str())?
                        .map(|v| from_json("campaign item", v.value()))
                        .transpose()
                })
            })
            .await
    }

    /// Every campaign item that decodes; one that does not is logged (naming it) and left
    /// out, so it holds no other campaign back.
    async fn campaigns(&self) -> Result<Vec<CampaignRecord>, StoreError> {
        self.state
            .blocking(|state| {
                state.read("listing campaigns", |tx| {
                    let mut out = Vec::new();
                    for item in tx.open_table(CAMPAIGNS)?.iter()? {
                        let (key, value) = item?;
                        match serde_json::from_slice::<CampaignRecord>(value.value()) {
                            Ok(record) => out.push(record),
                            Err(e) => error!(
                                campaign = key.value(),
                                dir = %state.dir().display(),
                                error = %e,
                                "skipping a campaign item that does not decode; its campaign is left out until the item is fixed or removed"
                            ),
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }

    async fn reserve(&self, draw: &Draw) -> Result<Reservation, StoreError> {
        let draw = draw.clone();
        self.state
            .blocking(move |state| {
                state.write("reserving budget", |tx| {
                    let drawn = update_campaign(tx, &draw.lease.campaign, |record| {
                        record
                            .draw(draw.size(), draw.spend)
                            .map_err(|refused| (refused, Box::new(record.clone())))
                    })?;
                    Ok(match drawn {
                        Ok(amount) => {
                            let lease = draw.granted(amount);
                            tx.open_table(LEASES)?
                                .insert(lease_key(&lease).as_str(), to_json(&lease)?.as_slice())?;
                            Reservation::Granted(lease)
                        }
                        Err((ReserveOutcome::Busy, _)) => Reservation::Busy,
                        Err((_, record)) => Reservation::Refused(record),
                    })
                })
            })
            .await
    }

    async fn settle(&self, lease: &BudgetLease, actual: MicroUsd) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.state
            .blocking(move |state| {
                state.write("settling budget", |tx| {
                    let mut leases = tx.open_table(LEASES)?;
                    let key = lease_key(&lease);
                    // Only the lease as stored, with the amount it holds.
                    let stored: Option<BudgetLease> = match leases.get(key.as_str())? {
                        Some(value) => Some(from_json("budget lease", value.value())?),
                        None => None,
                    };
                    if stored.is_none_or(|stored| stored.amount != lease.amount) {
                        return Ok(false);
                    }
                    leases.remove(key.as_str())?;
                    drop(leases);
                    update_campaign(tx, &lease.campaign, |record| {
                        record.settle(lease.amount, actual)
                    })?;
                    Ok(true)
                })
            })
            .await
    }

    async fn repair_ledger(
        &self,
        campaign: &str,
        seen: &Ledger,
        held: MicroUsd,
    ) -> Result<bool, StoreError> {
        let (campaign, seen) = (campaign.to_owned(), *seen);
        self.state
            .blocking(move |state| {
                state.write("repairing a budget ledger", |tx| {
                    update_campaign(tx, &campaign, |record| {
                        let unchanged = record.ledger == seen;
                        if unchanged {
                            record.repair(held);
                        }
                        unchanged
                    })
                })
            })
            .await
    }

    async fn renew(&self, lease: &BudgetLease) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.state
            .blocking(move |state| {
                state.write("renewing a budget lease", |tx| {
                    let mut table = tx.open_table(LEASES)?;
                    let key = lease_key(&lease);
                    if table.get(key.as_str())?.is_none() {
                        return Ok(false);
                    }
                    table.insert(key.as_str(), to_json(&lease)?.as_slice())?;
                    Ok(true)
                })
            })
            .await
    }

    async fn leases(&self, campaign: &str) -> Result<Vec<BudgetLease>, StoreError> {
        let (start, end) = campaign_range(campaign);
        self.state
            .blocking(move |state| {
                state.read("listing budget leases", |tx| {
                    let mut out = Vec::new();
                    for item in tx.open_table(LEASES)?.range(start.as_str()..end.as_str())? {
                        let (_, value) = item?;
                        out.push(from_json("budget lease", value.value())?);
                    }
                    Ok(out)
                })
            })
            .await
    }

    async fn set_state(
        &self,
        campaign: &str,
        new: CampaignState,
        reason: Option<String>,
    ) -> Result<bool, StoreError> {
        let campaign = campaign.to_owned();
        self.state
            .blocking(move |state| {
                state.write("setting campaign state", |tx| {
                    if !new
                        .reachable_from()
                        .contains(&load_campaign(tx, &campaign)?.state)
                    {
                        return Ok(false);
                    }
                    update_campaign(tx, &campaign, |record| {
                        record.state = new;
                        record.state_reason = reason;
                    })?;
                    Ok(true)
                })
            })
            .await
    }

    async fn claim_budget_alert(&self, campaign: &str, pct: u8) -> Result<bool, StoreError> {
        let campaign = campaign.to_owned();
        self.state
            .blocking(move |state| {
                state.write("claiming a budget alert", |tx| {
                    update_campaign(tx, &campaign, |record| {
                        let claimed = record.alerted_pct < pct;
                        if claimed {
                            record.alerted_pct = pct;
                        }
                        claimed
                    })
                })
            })
            .await
    }

    async fn add_enqueued(&self, campaign: &str, n: u64) -> Result<(), StoreError> {
        let campaign = campaign.to_owned();
        self.state
            .blocking(move |state| {
                state.write("counting enqueued samples", |tx| {
                    update_campaign(tx, &campaign, |record| record.counts.enqueued += n)
                })
            })
            .await
    }

    async fn enqueued_samples(&self, campaign: &str) -> Result<Vec<ResultKey>, StoreError> {
        let (start, end) = campaign_range(campaign);
        self.state
            .blocking(move |state| {
                state.read("reading enqueue markers", |tx| {
                    let mut out = Vec::new();
                    for item in tx
                        .open_table(ENQUEUED)?
                        .range(start.as_str()..end.as_str())?
                    {
                        let (key, _) = item?;
                        out.push(parse_result_key(key.value())?);
                    }
                    Ok(out)
                })
            })
            .await
    }

    async fn mark_enqueued(&self, keys: &[ResultKey]) -> Result<(), StoreError> {
        let keys: Vec<String> = keys.iter().map(result_key).collect();
        self.state
            .blocking(move |state| {
                state.write("writing enqueue markers", |tx| {
                    let mut table = tx.open_table(ENQUEUED)?;
                    for key in &keys {
                        table.insert(key.as_str(), ())?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn heartbeat(&self, beat: &WorkerHeartbeat) -> Result<(), StoreError> {
        let beat = beat.clone();
        self.state
            .blocking(move |state| {
                state.write("writing a heartbeat", |tx| {
                    tx.open_table(HEARTBEATS)?
                        .insert(beat.worker_id.as_str(), to_json(&beat)?.as_slice())?;
                    Ok(())
                })
            })
            .await
    }

    async fn heartbeats(&self) -> Result<Vec<WorkerHeartbeat>, StoreError> {
        self.state
            .blocking(|state| {
                state.read("listing heartbeats", |tx| {
                    let mut out = Vec::new();
                    for item in tx.open_table(HEARTBEATS)?.iter()? {
                        let (_, value) = item?;
                        out.push(from_json("heartbeat", value.value())?);
                    }
                    Ok(out)
                })
            })
            .await
    }

    async fn commit(&self, meta: &TrajectoryMeta) -> Result<CommitOutcome, StoreError> {
        let meta = meta.clone();
        self.state
            .blocking(move |state| {
                // Held until the line is appended: lines go in the order of their numbers.
                let log = state.log.clone();
                let mut appending = log.lock();
                let committed_at = Utc::now();
                let (outcome, seq) = state.write("committing a trajectory", |tx| {
                    let key = result_key(&meta.result_key());
                    let mut results = tx.open_table(RESULTS)?;
                    let mut trajectories = tx.open_table(TRAJECTORIES)?;
                    let existing_id = results.get(key.as_str())?.map(|v| v.value().to_owned());
                    if let Some(existing_id) = existing_id {
                        let existing =
                            trajectories.get(existing_id.as_str())?.ok_or_else(|| {
                                StoreError::Corrupt {
                                    what: format!("result index for {}", meta.result_key()),
                                    detail: format!("points at missing trajectory {existing_id}"),
                                }
                            })?;
                        let existing: TrajectoryMeta =
                            from_json("trajectory item", existing.value())?;
                        return Ok((CommitOutcome::AlreadyCommitted(Box::new(existing)), None));
                    }
                    results.insert(key.as_str(), meta.summary.trajectory_id.as_str())?;
                    trajectories.insert(
                        meta.summary.trajectory_id.as_str(),
                        to_json(&meta)?.as_slice(),
                    )?;
                    drop((results, trajectories));
                    let seq = crate::commits::record(tx, &meta, committed_at)?;
                    update_campaign(tx, &meta.summary.campaign, |record| match meta.status {
                        RecordStatus::Success => record.counts.success += 1,
                        RecordStatus::Failed => record.counts.failed += 1,
                    })?;
                    Ok((CommitOutcome::Committed, Some(seq)))
                })?;
                if let Some(seq) = seq {
                    let campaign = meta.summary.campaign.clone();
                    let logged = Logged {
                        seq,
                        committed_at,
                        trajectory_id: meta.summary.trajectory_id.clone(),
                        meta: Some(meta),
                    };
                    appending.append(&state, &campaign, &logged);
                }
                Ok(outcome)
            })
            .await
    }

    async fn result(&self, key: &ResultKey) -> Result<Option<TrajectoryMeta>, StoreError> {
        let key = result_key(key);
        self.state
            .blocking(move |state| {
                state.read("reading a result", |tx| {
                    let Some(id) = tx
                        .open_table(RESULTS)?
                        .get(key.as_str())?
                        .map(|v| v.value().to_owned())
                    else {
                        return Ok(None);
                    };
                    tx.open_table(TRAJECTORIES)?
                        .get(id.as_str())?
                        .map(|v| from_json("trajectory item", v.value()))
                        .transpose()
                })
            })
            .await
    }

    async fn trajectory(&self, trajectory_id: &str) -> Result<Option<TrajectoryMeta>, StoreError> {
        let prefix = trajectory_id.to_owned();
        self.state
            .blocking(move |state| {
                state.read("looking up a trajectory", |tx| {
                    let table = tx.open_table(TRAJECTORIES)?;
                    let mut matches = Vec::new();
                    for item in table.range(prefix.as_str()..)? {
                        let (key, value) = item?;
                        if !key.value().starts_with(prefix.as_str()) || matches.len() > 1 {
                            break;
                        }
                        matches.push(from_json::<TrajectoryMeta>(
                            "trajectory item",
                            value.value(),
                        )?);
                    }
                    Ok(if matches.len() == 1 {
                        matches.pop()
                    } else {
                        None
                    })
                })
            })
            .await
    }

    async fn trajectories(&self, campaign: &str) -> Result<Vec<TrajectoryMeta>, StoreError> {
        let (start, end) = campaign_range(campaign);
        self.state
            .blocking(move |state| {
                state.read("listing trajectories", |tx| {
                    let results = tx.open_table(RESULTS)?;
                    let trajectories = tx.open_table(TRAJECTORIES)?;
                    let mut out = Vec::new();
                    for item in results.range(start.as_str()..end.as_str())? {
                        let (_, id) = item?;
                        if let Some(value) = trajectories.get(id.value())? {
                            out.push(from_json("trajectory item", value.value())?);
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }

    async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let letter = letter.clone();
        self.state
            .blocking(move |state| {
                state.write("recording a dead letter", |tx| {
                    record_dead_letter_in(tx, &letter)
                })
            })
            .await
    }

    async fn dead_letters(&self, campaign: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let (start, end) = campaign_range(campaign);
        self.state
            .blocking(move |state| {
                state.read("listing dead letters", |tx| {
                    let mut out = Vec::new();
                    for item in tx
                        .open_table(DEAD_LETTERS)?
                        .range(start.as_str()..end.as_str())?
                    {
                        let (_, value) = item?;
                        out.push(from_json("dead letter", value.value())?);
                    }
                    Ok(out)
                })
            })
            .await
    }

    async fn clear_dead_letter(&self, key: &ResultKey) -> Result<Option<DeadLetter>, StoreError> {
        let key = key.clone();
        self.state
            .blocking(move |state| {
                state.write("clearing a dead letter", |tx| {
                    let Some(letter) = tx
                        .open_table(DEAD_LETTERS)?
                        .remove(result_key(&key).as_str())?
                        .map(|v| from_json::<DeadLetter>("dead letter", v.value()))
                        .transpose()?
                    else {
                        return Ok(None);
                    };
                    update_campaign(tx, &key.campaign, |record| {
                        record.counts.dead_lettered = record.counts.dead_lettered.saturating_sub(1)
                    })?;
                    Ok(Some(letter))
                })
            })
            .await
    }

    async fn decide_round(&self, decision: &RoundDecision) -> Result<Decided, StoreError> {
        let mut decision = decision.clone();
        self.state
            .blocking(move |state| {
                state.write("deciding a sampling round", |tx| {
                    let key = round_key(&decision.round);
                    let mut rounds = tx.open_table(ROUNDS)?;
                    if let Some(existing) = rounds.get(key.as_str())? {
                        return Ok(Decided::Existing(from_json(
                            "round decision",
                            existing.value(),
                        )?));
                    }
                    decision.verdict = update_campaign(tx, &decision.round.campaign, |record| {
                        let planned = &mut record.total_samples;
                        record
                            .adaptive
                            .get_or_insert_default()
                            .plan(planned, decision.verdict)
                    })?;
                    rounds.insert(key.as_str(), to_json(&decision)?.as_slice())?;
                    Ok(Decided::Applied(decision))
                })
            })
            .await
    }

    async fn round_sent(&self, round: &RoundKey) -> Result<(), StoreError> {
        let key = round_key(round);
        self.state
            .blocking(move |state| {
                state.write("marking a sampling round sent", |tx| {
                    let mut rounds = tx.open_table(ROUNDS)?;
                    let Some(mut decision) = rounds
                        .get(key.as_str())?
                        .map(|v| from_json::<RoundDecision>("round decision", v.value()))
                        .transpose()?
                    else {
                        return Ok(());
                    };
                    decision.sent = true;
                    rounds.insert(key.as_str(), to_json(&decision)?.as_slice())?;
                    Ok(())
                })
            })
            .await
    }

    async fn commits_after(
        &self,
        campaign: &str,
        after: Option<&CommitCursor>,
        limit: usize,
    ) -> Result<Vec<Commit>, StoreError> {
        let (campaign, after) = (campaign.to_owned(), after.cloned());
        self.state
            .blocking(move |state| {
                state.read("reading the commit order", |tx| {
                    crate::commits::after(tx, &campaign, after.as_ref(), limit)
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_corrupt_campaign_item_is_skipped_and_the_others_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = LocalState::open(dir.path()).expect("open");
        let store = LocalMetadata::new(&state);
        for name in ["first", "last"] {
            store
                .upsert_campaign(name, MicroUsd(100), 1)
                .await
                .expect("create");
        }
        // An item no version of synthfleet can read (written by hand, or by a newer
        // version with a state this one does not know).
        state
            .write("corrupting an item", |tx| {
                tx.open_table(CAMPAIGNS)?.insert(
                    "broken",
                    br#"{"name": "broken", "state": "archived"}"#.as_slice(),
                )?;
                Ok(())
            })
            .expect("write");
        let mut names: Vec<String> = store
            .campaigns()
            .await
            .expect("the listing survives a corrupt item")
            .into_iter()
            .map(|c| c.name)
            .collect();
        names.sort();
        assert_eq!(names, ["first", "last"]);
        assert!(
            matches!(
                store.campaign("broken").await,
                Err(StoreError::Corrupt { .. })
            ),
            "asked for by name, the item is an error"
        );
    }
}
