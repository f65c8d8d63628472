//! The DynamoDB metadata store. One table, single-table design (see docs/AWS.md, "DynamoDB: one table"):
//!
//! | item | pk | sk |
//! | --- | --- | --- |
//! | campaign (budget ledger, counts, state) | `CAMPAIGN#{name}` | `CAMPAIGN` |
//! | counter shard | `CAMPAIGN#{name}#COUNTS#{nn}` | `COUNTS` |
//! | trajectory summary | `CAMPAIGN#{name}#S{nn}` | `TRAJ#{trajectory_id}` |
//! | result index (one per sample) | `CAMPAIGN#{name}#S{nn}` | `RESULT#{instance}#{sample}` |
//! | enqueue marker | `CAMPAIGN#{name}#S{nn}` | `ENQ#{instance}#{sample}` |
//! | dead letter | `CAMPAIGN#{name}#S{nn}` | `DEAD#{instance}#{sample}` |
//! | budget slice (a lease) | `CAMPAIGN#{name}` | `LEASE#{id}` |
//! | worker heartbeat | `WORKER#{id}` | `HEARTBEAT` |
//!
//! Every invariant is guarded by a condition expression, never read-then-write: a result
//! commits in one transaction with `attribute_not_exists` on its result item, a
//! budget slice is granted by `committed <= budget - amount` on the campaign item in the
//! transaction that puts its lease, and a settle deletes the lease on `attribute_exists`
//! (and the amount it holds) in the transaction that books it (so a second settle books
//! nothing). Per-sample items spread over [`SAMPLE_PARTITIONS`] partition keys (`nn` from
//! the sample), counts over [`COUNTER_SHARDS`]; a campaign created before keeps every item
//! under `CAMPAIGN#{name}` ([`Layout`]).

use crate::aws_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, PutRequest, TransactWriteItem, Update,
    WriteRequest,
};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::{
    BudgetLease, CampaignRecord, CampaignState, Counts, Ledger, ReserveOutcome, Submitted,
};
use synthfleet_core::commits::{Commit, CommitCursor};
use synthfleet_core::lifecycle::Trigger;
use synthfleet_core::message::ResultKey;
use synthfleet_core::ports::{
    CommitOutcome, DeadLetter, Draw, MetadataStore, Reservation, StoreError, TrajectoryMeta,
    WorkerHeartbeat,
};
use synthfleet_core::sampling::{AdaptiveTally, Decided, RoundDecision, RoundKey, SamplePlan};
use synthfleet_core::trajectory::RecordStatus;
use tracing::error;

mod commits;
pub use commits::{commit_cursor, commit_order};

const BACKEND: &str = "DynamoDB";
const CAMPAIGN_SK: &str = "CAMPAIGN";
pub const INDEX_BY_KIND: &str = "by_kind";
pub const INDEX_BY_TRAJECTORY: &str = "by_trajectory";
pub const INDEX_BY_STATUS: &str = "by_status";
/// A campaign's commits in commit order ([`commits`]).
pub const INDEX_BY_COMMIT: &str = "by_commit";
/// Conditional updates lost to concurrent writers are retried this often.
const CONTENTION_RETRIES: usize = 8;

type Item = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct DynamoMetadata {
    client: Client,
    table: String,
    /// Each campaign's item layout, read once per process (it never changes).
    layouts: Arc<Mutex<HashMap<String, Layout>>>,
    /// Each campaign's commits from before the commit order was indexed ([`commits`]).
    unindexed: Arc<commits::Unindexed>,
}

/// Where a campaign's per-sample items (result index, trajectory, enqueue marker, dead
/// letter) live. Fixed when the campaign item is created, recorded in it (`layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Under the campaign's own partition key (campaigns created before layout 2).
    Single,
    /// Spread over [`SAMPLE_PARTITIONS`] partition keys by sample, so no partition takes
    /// more than a share of the commits.
    Spread,
}

/// The layout new campaign items are created with.
const LAYOUT_SPREAD: u8 = 2;

fn layout_v1() -> u8 {
    1
}

/// Partition keys a campaign's per-sample items spread over (layout 2).
pub const SAMPLE_PARTITIONS: u32 = 16;

/// The partition key of a sample's items.
fn sample_pk(layout: Layout, key: &ResultKey) -> String {
    match layout {
        Layout::Single => campaign_pk(&key.campaign),
        Layout::Spread => format!(
            "CAMPAIGN#{}#S{:02}",
            key.campaign,
            sample_hash(key) % SAMPLE_PARTITIONS
        ),
    }
}

/// Every partition key a campaign's per-sample items may be under.
fn sample_pks(layout: Layout, campaign: &str) -> Vec<String> {
    match layout {
        Layout::Single => vec![campaign_pk(campaign)],
        Layout::Spread => (0..SAMPLE_PARTITIONS)
            .map(|p| format!("CAMPAIGN#{campaign}#S{p:02}"))
            .collect(),
    }
}

fn campaign_pk(name: &str) -> String {
    format!("CAMPAIGN#{name}")
}

/// Counter shards per campaign: a result commit adds to its sample's shard, never to the
/// campaign item, so commits spread over this many partition keys.
pub const COUNTER_SHARDS: u32 = 16;
const COUNTER_SK: &str = "COUNTS";

/// The partition key of one of a campaign's counter shards.
fn counter_pk(campaign: &str, shard: u32) -> String {
    format!("CAMPAIGN#{campaign}#COUNTS#{shard:02}")
}

/// The counter shard of a sample.
fn counter_shard(key: &ResultKey) -> u32 {
    sample_hash(key) % COUNTER_SHARDS
}

/// FNV-1a of a sample's instance and index: the same on every build, so a sample's items
/// and counts are always found where they were put (a dead letter's count and its
/// clearing meet on one shard).
fn sample_hash(key: &ResultKey) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key
        .instance_id
        .bytes()
        .chain(key.sample_index.to_le_bytes())
    {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash
}

/// One counter shard's counts (absent attributes: nothing added yet). Signed: a count
/// taken on the campaign item before shards existed may be taken back on a shard.
#[derive(Debug, Default, Deserialize)]
struct ShardCounts {
    #[serde(default)]
    success: i64,
    #[serde(default)]
    failed: i64,
    #[serde(default)]
    dead_lettered: i64,
}

fn sample_sk(prefix: &str, key: &ResultKey) -> String {
    format!("{prefix}#{}#{:010}", key.instance_id, key.sample_index)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

#[derive(Debug, Serialize, Deserialize)]
struct CampaignItem {
    pk: String,
    sk: String,
    kind: String,
    name: String,
    budget: u64,
    spent: u64,
    reserved: u64,
    /// spent + reserved: what the cap is checked against in one condition.
    committed: u64,
    /// Ledger writes applied ([`Ledger::writes`]): every draw, settle and repair adds one.
    #[serde(default)]
    ledger_writes: u64,
    /// Where the campaign's per-sample items live ([`Layout`]): 2 for items created since
    /// they spread over partitions, absent (1) before.
    #[serde(default = "layout_v1")]
    layout: u8,
    state: CampaignState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state_reason: Option<String>,
    enqueued: u64,
    success: u64,
    failed: u64,
    dead_lettered: u64,
    total_samples: u64,
    /// Adaptive sampling's account (a map); absent for fixed sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    adaptive: Option<AdaptiveTally>,
    #[serde(default)]
    alerted_pct: u8,
    /// The last upload event or firing applied (a map), to tell its repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trigger: Option<Trigger>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&CampaignRecord> for CampaignItem {
    fn from(r: &CampaignRecord) -> CampaignItem {
        CampaignItem {
            pk: campaign_pk(&r.name),
            sk: CAMPAIGN_SK.into(),
            kind: "campaign".into(),
            name: r.name.clone(),
            budget: r.ledger.budget.0,
            spent: r.ledger.spent.0,
            reserved: r.ledger.reserved.0,
            committed: r.ledger.committed().0,
            ledger_writes: r.ledger.writes,
            // Only ever written whole when the item is created.
            layout: LAYOUT_SPREAD,
            state: r.state,
            state_reason: r.state_reason.clone(),
            enqueued: r.counts.enqueued,
            success: r.counts.success,
            failed: r.counts.failed,
            dead_lettered: r.counts.dead_lettered,
            total_samples: r.total_samples,
            adaptive: r.adaptive.clone(),
            alerted_pct: r.alerted_pct,
            trigger: r.trigger.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<CampaignItem> for CampaignRecord {
    fn from(i: CampaignItem) -> CampaignRecord {
        CampaignRecord {
            name: i.name,
            ledger: Ledger {
                budget: MicroUsd(i.budget),
                spent: MicroUsd(i.spent),
                reserved: MicroUsd(i.reserved),
                writes: i.ledger_writes,
            },
            state: i.state,
            state_reason: i.state_reason,
            counts: Counts {
                enqueued: i.enqueued,
                success: i.success,
                failed: i.failed,
                dead_lettered: i.dead_lettered,
            },
            total_samples: i.total_samples,
            adaptive: i.adaptive,
            alerted_pct: i.alerted_pct,
            trigger: i.trigger,
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TrajectoryItem {
    pk: String,
    sk: String,
    /// `{campaign}#{status}`, the hash key of the `by_status` index.
    campaign_status: String,
    /// Epoch seconds; DynamoDB's TTL removes failed items after 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    /// The range key of the `by_commit` index (absent in items committed before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    commit_order: Option<String>,
    #[serde(flatten)]
    meta: TrajectoryMeta,
}

#[derive(Debug, Serialize, Deserialize)]
struct DeadLetterItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    letter: DeadLetter,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    lease: BudgetLease,
}

fn lease_sk(lease: &BudgetLease) -> String {
    format!("LEASE#{}", lease.id)
}

#[derive(Debug, Serialize, Deserialize)]
struct HeartbeatItem {
    pk: String,
    sk: String,
    kind: String,
    ttl: i64,
    #[serde(flatten)]
    beat: WorkerHeartbeat,
}

fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::backend(BACKEND, "encoding an item", e))
}

fn from_item<T: for<'de> Deserialize<'de>>(what: &str, item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Why a transaction did not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancelled {
    /// A condition of ours failed: the answer to the question the write asked.
    Condition,
    /// Contention or throttling: nothing was decided, try again.
    Contention,
}

/// Classifies a failed `TransactWriteItems` by its cancellation reasons (DynamoDB names
/// one per item); `None` when it is not a cancellation or contention at all. A
/// cancellation without reasons is taken as a failed condition, as it always was.
fn cancelled(error: &TransactWriteItemsError) -> Option<Cancelled> {
    const CONTENTION: [&str; 5] = [
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
        "TransactionInProgress",
    ];
    match error {
        TransactWriteItemsError::TransactionCanceledException(e) => {
            let codes: Vec<&str> = e
                .cancellation_reasons()
                .iter()
                .filter_map(|r| r.code())
                .collect();
            if codes.contains(&"ConditionalCheckFailed") {
                Some(Cancelled::Condition)
            } else if codes.iter().any(|c| CONTENTION.contains(c)) {
                Some(Cancelled::Contention)
            } else {
                Some(Cancelled::Condition)
            }
        }
        TransactWriteItemsError::ProvisionedThroughputExceededException(_)
        | TransactWriteItemsError::RequestLimitExceeded(_)
        | TransactWriteItemsError::TransactionInProgressException(_) => Some(Cancelled::Contention),
        _ => None,
    }
}

/// Pause before retrying a transaction that lost to contention (doubles, from 20 ms).
fn contention_backoff(round: usize) -> std::time::Duration {
    std::time::Duration::from_millis(20u64 << round.min(6))
}

/// Whether a conditional write went through: `Ok(false)` when its condition failed.
fn written<O, E, R>(
    result: Result<O, SdkError<E, R>>,
    operation: impl FnOnce() -> String,
) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(|s| s.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(aws_error(BACKEND, operation(), e)),
    }
}

/// A timestamp exactly as the items store it (serde's RFC 3339 form), so conditions on
/// it compare equal.
fn tally_value(tally: &AdaptiveTally) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(tally)
        .map_err(|e| StoreError::backend(BACKEND, "encoding a sampling tally", e))
}

/// A round decision's item: under a partition of its campaign's per-sample items.
#[derive(Debug, Serialize, Deserialize)]
struct RoundItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    decision: RoundDecision,
}

fn round_sk(round: &RoundKey) -> String {
    format!("ROUND#{}#{:010}", round.instance_id, round.round)
}

fn ts(t: DateTime<Utc>) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(t)
        .map_err(|e| StoreError::backend(BACKEND, "encoding a timestamp", e))
}

fn status_str(state: CampaignState) -> AttributeValue {
    s(state.as_str())
}

/// `#state IN (:prefix0, ...)` and its values: a core rule's list of states as a condition.
fn state_in(prefix: &str, states: &[CampaignState]) -> (String, Vec<(String, AttributeValue)>) {
    let values: Vec<(String, AttributeValue)> = states
        .iter()
        .enumerate()
        .map(|(i, state)| (format!(":{prefix}{i}"), status_str(*state)))
        .collect();
    let names: Vec<&str> = values.iter().map(|(name, _)| name.as_str()).collect();
    (format!("#state IN ({})", names.join(", ")), values)
}

impl DynamoMetadata {
    /// Runs a transaction; again, after a short backoff, while it loses to contention (a
    /// bounded number of times). `Ok(false)` when one of its conditions failed.
    ///
    /// With a `token` (`ClientRequestToken`), a transaction the SDK sends again after it
    /// was applied (a timeout on the way back) is not applied twice.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        token: Option<String>,
        operation: impl Fn() -> String,
    ) -> Result<bool, StoreError> {
        let mut round = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .set_client_request_token(token.clone())
                .send()
                .await;
            let Err(e) = result else {
                return Ok(true);
            };
            match e.as_service_error().and_then(cancelled) {
                Some(Cancelled::Contention) if round < CONTENTION_RETRIES => {
                    tokio::time::sleep(contention_backoff(round)).await;
                    round += 1;
                }
                Some(Cancelled::Condition) => return Ok(false),
                _ => return Err(aws_error(BACKEND, operation(), e)),
            }
        }
    }

    pub fn new(client: Client, table: &str) -> DynamoMetadata {
        DynamoMetadata {
            client,
            table: table.to_owned(),
            layouts: Arc::default(),
            unindexed: Arc::default(),
        }
    }

    /// The layout of `campaign`'s per-sample items: read from its item once, then
    /// remembered. A campaign with no item yet gets the current layout (its item, when
    /// created, records it).
    async fn layout(&self, campaign: &str) -> Result<Layout, StoreError> {
        if let Some(layout) = self.cached_layout(campaign) {
            return Ok(layout);
        }
        let Some(item) = self.get(&campaign_pk(campaign), CAMPAIGN_SK).await? else {
            return Ok(Layout::Spread);
        };
        let version = match item.get("layout") {
            Some(AttributeValue::N(v)) => v.parse().unwrap_or_else(|_| layout_v1()),
            _ => layout_v1(),
        };
        let layout = if version >= LAYOUT_SPREAD {
            Layout::Spread
        } else {
            Layout::Single
        };
        self.layouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(campaign.to_owned(), layout);
        Ok(layout)
    }

    fn cached_layout(&self, campaign: &str) -> Option<Layout> {
        self.layouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(campaign)
            .copied()
    }

    /// The partition key of `key`'s items.
    async fn sample_pk(&self, key: &ResultKey) -> Result<String, StoreError> {
        Ok(sample_pk(self.layout(&key.campaign).await?, key))
    }

    /// A round's decision is spread over the partitions of its campaign's per-sample items
    /// like a sample's, the round number standing for the sample.
    async fn round_pk(&self, round: &RoundKey) -> Result<String, StoreError> {
        self.sample_pk(&ResultKey {
            campaign: round.campaign.clone(),
            instance_id: round.instance_id.clone(),
            sample_index: round.round,
        })
        .await
    }

    /// The campaign's per-sample items whose sort key starts with `prefix`, from every
    /// partition they spread over.
    async fn query_samples(&self, campaign: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        for pk in sample_pks(self.layout(campaign).await?, campaign) {
            out.extend(self.query_prefix(&pk, prefix).await?);
        }
        Ok(out)
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error(BACKEND, format!("reading {pk}/{sk} from {}", self.table), e))?;
        Ok(out.item)
    }

    async fn campaign_item(&self, name: &str) -> Result<Option<CampaignRecord>, StoreError> {
        self.get(&campaign_pk(name), CAMPAIGN_SK)
            .await?
            .map(|item| from_item::<CampaignItem>("campaign item", item).map(CampaignRecord::from))
            .transpose()
    }

    async fn require_campaign(&self, name: &str) -> Result<CampaignRecord, StoreError> {
        self.campaign_item(name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("campaign `{name}` in table {}", self.table),
            })
    }

    /// `record` (as its campaign item stores it) with the counts of its counter shards
    /// added: one consistent `BatchGetItem` of [`COUNTER_SHARDS`] keys.
    async fn with_counts(&self, mut record: CampaignRecord) -> Result<CampaignRecord, StoreError> {
        let operation = || format!("reading the counts of campaign `{}`", record.name);
        let mut keys: Vec<Item> = (0..COUNTER_SHARDS)
            .map(|shard| {
                HashMap::from([
                    ("pk".to_owned(), s(counter_pk(&record.name, shard))),
                    ("sk".to_owned(), s(COUNTER_SK)),
                ])
            })
            .collect();
        let mut shards = Vec::new();
        for round in 0..CONTENTION_RETRIES {
            if keys.is_empty() {
                break;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .consistent_read(true)
                .build()
                .map_err(|e| aws_error(BACKEND, operation(), e))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| aws_error(BACKEND, operation(), e))?;
            if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                shards.extend(items.iter().cloned());
            }
            // Keys DynamoDB left for later (throttling): asked again, after a pause.
            keys = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if !keys.is_empty() {
                tokio::time::sleep(contention_backoff(round)).await;
            }
        }
        if !keys.is_empty() {
            return Err(StoreError::backend(
                BACKEND,
                operation(),
                "DynamoDB kept throttling the counter shards; try again",
            ));
        }
        let mut sum = ShardCounts::default();
        for item in shards {
            let shard: ShardCounts = from_item("counter shard", item)?;
            sum.success += shard.success;
            sum.failed += shard.failed;
            sum.dead_lettered += shard.dead_lettered;
        }
        let add = |base: u64, delta: i64| base.saturating_add_signed(delta);
        record.counts.success = add(record.counts.success, sum.success);
        record.counts.failed = add(record.counts.failed, sum.failed);
        record.counts.dead_lettered = add(record.counts.dead_lettered, sum.dead_lettered);
        Ok(record)
    }

    /// Items of one partition whose sort key starts with `prefix`.
    async fn query_prefix(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| aws_error(BACKEND, format!("querying {pk}/{prefix}"), e))?;
            out.extend(page.items().iter().cloned());
        }
        Ok(out)
    }

    /// [`Self::query_samples`], each item decoded as a `T`.
    async fn query_decoded<T: for<'de> Deserialize<'de>>(
        &self,
        campaign: &str,
        prefix: &str,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.query_samples(campaign, prefix)
            .await?
            .into_iter()
            .map(|item| from_item(what, item))
            .collect()
    }

    async fn query_kind(&self, kind: &str) -> Result<Vec<Item>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX_BY_KIND)
            .key_condition_expression("kind = :kind")
            .expression_attribute_values(":kind", s(kind))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error(BACKEND, format!("listing {kind} items"), e))?;
            out.extend(page.items().iter().cloned());
        }
        Ok(out)
    }

    /// Marks a running campaign exhausted (a no-op if it already left `running`).
    async fn exhaust(&self, name: &str, reason: &str) -> Result<(), StoreError> {
        let result = self
            .update_campaign(name)
            .update_expression("SET #state = :exhausted, #reason = :reason, #updated = :now")
            .condition_expression("#state = :running")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#reason", "state_reason")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":exhausted", status_str(CampaignState::Exhausted))
            .expression_attribute_values(":running", status_str(CampaignState::Running))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", ts(Utc::now())?)
            .send()
            .await;
        // A failed condition means the campaign already left `running`: nothing to do.
        written(result, || format!("marking campaign `{name}` exhausted"))?;
        Ok(())
    }

    /// Marks the campaign exhausted if what was booked reached its cap (after a write that
    /// spent).
    async fn exhaust_if_spent(&self, name: &str) -> Result<(), StoreError> {
        let mut record = self.require_campaign(name).await?;
        let before = record.state;
        record.exhaust_if_spent();
        if record.state != before {
            self.exhaust(
                name,
                record
                    .state_reason
                    .as_deref()
                    .unwrap_or("budget cap reached"),
            )
            .await?;
        }
        Ok(())
    }

    /// An update of a campaign item.
    fn update_campaign(
        &self,
        name: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(campaign_pk(name)))
            .key("sk", s(CAMPAIGN_SK))
    }

    /// A delete that fails its condition when the item is gone already.
    fn delete_existing(&self, pk: &str, sk: &str) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| aws_error(BACKEND, "building a delete", e))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// A delete of the lease as the caller holds it: it fails its condition when the lease
    /// is gone, or holds another amount.
    fn delete_lease(&self, lease: &BudgetLease) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", s(campaign_pk(&lease.campaign)))
            .key("sk", s(lease_sk(lease)))
            .condition_expression("attribute_exists(pk) AND #amount = :amount")
            .expression_attribute_names("#amount", "amount")
            .expression_attribute_values(":amount", n(lease.amount.0))
            .build()
            .map_err(|e| aws_error(BACKEND, "building a delete", e))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(|e| aws_error(BACKEND, "building a put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// An update of the campaign item inside a transaction.
    fn ledger_update(
        &self,
        campaign: &str,
        expression: &str,
        condition: String,
        values: Vec<(String, AttributeValue)>,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(campaign_pk(campaign)))
            .key("sk", s(CAMPAIGN_SK))
            .update_expression(expression)
            .condition_expression(&condition)
            // DynamoDB refuses names an expression does not use.
            .set_expression_attribute_names(Some(
                [
                    ("#state", "state"),
                    ("#budget", "budget"),
                    ("#spent", "spent"),
                    ("#reserved", "reserved"),
                    ("#committed", "committed"),
                    ("#writes", "ledger_writes"),
                ]
                .into_iter()
                .filter(|(alias, _)| expression.contains(alias) || condition.contains(alias))
                .map(|(alias, name)| (alias.to_owned(), name.to_owned()))
                .collect(),
            ))
            .set_expression_attribute_values(Some(values.into_iter().collect()))
            .build()
            .map_err(|e| aws_error(BACKEND, "building a ledger update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Adds `delta` to one of the counts of `key`'s campaign, on the sample's counter
    /// shard, inside a transaction.
    fn count_update(
        &self,
        key: &ResultKey,
        counter: &str,
        delta: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(counter_pk(&key.campaign, counter_shard(key))))
            .key("sk", s(COUNTER_SK))
            .update_expression("ADD #counter :delta")
            .expression_attribute_names("#counter", counter)
            .expression_attribute_values(":delta", n(delta))
            .build()
            .map_err(|e| aws_error(BACKEND, "building an update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

#[async_trait]
impl MetadataStore for DynamoMetadata {
    async fn submit_campaign(
        &self,
        name: &str,
        budget: MicroUsd,
        plan: &SamplePlan,
        trigger: &Trigger,
    ) -> Result<(CampaignRecord, Submitted), StoreError> {
        for _ in 0..CONTENTION_RETRIES {
            let now = Utc::now();
            let Some(mut record) = self.campaign_item(name).await? else {
                let record = CampaignRecord::submitted(name, budget, plan, trigger, now);
                let result = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(to_item(&CampaignItem::from(&record))?))
                    .condition_expression("attribute_not_exists(pk)")
                    .send()
                    .await;
                if written(result, || format!("creating campaign `{name}`"))? {
                    return Ok((record, Submitted::Created));
                }
                continue;
            };
            let previous = record.updated_at;
            let submitted = record.resubmit(budget, plan, trigger);
            if submitted == Submitted::Repeated {
                // Read consistently: the trigger was applied by a write before this read.
                return Ok((self.with_counts(record).await?, submitted));
            }
            record.updated_at = now;
            let reason = record.state_reason.clone().unwrap_or_default();
            let mut set = "SET #budget = :budget, #total = :total, #state = :state, #reason = :reason, #alerted = :alerted, #updated = :now".to_owned();
            let mut update = self.update_campaign(name);
            if let Some(tally) = &record.adaptive {
                set.push_str(", #adaptive = :adaptive");
                update = update
                    .expression_attribute_names("#adaptive", "adaptive")
                    .expression_attribute_values(":adaptive", tally_value(tally)?);
            }
            if let Some(applied) = &record.trigger {
                set.push_str(", #trigger = :trigger");
                let value = serde_dynamo::to_attribute_value(applied)
                    .map_err(|e| StoreError::backend(BACKEND, "encoding a trigger", e))?;
                update = update
                    .expression_attribute_names("#trigger", "trigger")
                    .expression_attribute_values(":trigger", value);
            }
            let result = update
                .update_expression(set)
                .condition_expression("#updated = :previous")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#budget", "budget")
                .expression_attribute_names("#total", "total_samples")
                .expression_attribute_names("#reason", "state_reason")
                .expression_attribute_names("#alerted", "alerted_pct")
                .expression_attribute_names("#updated", "updated_at")
                .expression_attribute_values(":alerted", n(record.alerted_pct))
                .expression_attribute_values(":budget", n(budget.0))
                .expression_attribute_values(":total", n(record.total_samples))
                .expression_attribute_values(":state", status_str(record.state))
                .expression_attribute_values(":reason", s(reason))
                .expression_attribute_values(":now", ts(now)?)
                .expression_attribute_values(":previous", ts(previous)?)
                .send()
                .await;
            if written(result, || format!("updating campaign `{name}`"))? {
                return Ok((self.with_counts(record).await?, submitted));
            }
        }
        Err(StoreError::backend(
            BACKEND,
            format!("updating campaign `{name}`"),
            "too much contention on the campaign item; try again",
        ))
    }

    async fn campaign(&self, name: &str) -> Result<Option<CampaignRecord>, StoreError> {
        match self.campaign_item(name).await? {
            Some(record) => Ok(Some(self.with_counts(record).await?)),
            None => Ok(None),
        }
    }

    /// Every campaign item that decodes; one that does not is logged (naming it) and left
    /// out, so it holds no other campaign back.
    async fn campaigns(&self) -> Result<Vec<CampaignRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.query_kind("campaign").await? {
            let pk = match item.get("pk") {
                Some(AttributeValue::S(pk)) => pk.clone(),
                _ => "(no pk)".to_owned(),
            };
            match from_item::<CampaignItem>("campaign item", item) {
                Ok(campaign) => out.push(self.with_counts(CampaignRecord::from(campaign)).await?),
                Err(e) => error!(
                    table = %self.table,
                    pk = %pk,
                    sk = CAMPAIGN_SK,
                    error = %synthfleet_core::error_chain(&e),
                    "skipping a campaign item that does not decode; its campaign is left out until the item is fixed or removed"
                ),
            }
        }
        Ok(out)
    }

    async fn reserve(&self, draw: &Draw) -> Result<Reservation, StoreError> {
        let campaign = draw.lease.campaign.as_str();
        // The state condition of `Spend::allowed_in`, as DynamoDB checks it.
        let (state_condition, state_values) = state_in("state", draw.spend.allowed_states());
        for round in 0..CONTENTION_RETRIES {
            let record = self.require_campaign(campaign).await?;
            let mut probe = record.clone();
            let amount = match probe.draw(draw.size(), draw.spend) {
                Ok(amount) => amount,
                Err(ReserveOutcome::Busy) => return Ok(Reservation::Busy),
                Err(_) => {
                    if probe.state != record.state {
                        self.exhaust(
                            campaign,
                            probe
                                .state_reason
                                .as_deref()
                                .unwrap_or("budget cap reached"),
                        )
                        .await?;
                    }
                    return Ok(Reservation::Refused(Box::new(probe)));
                }
            };
            let Some(max) = record.ledger.max_committed_for(amount) else {
                continue;
            };
            let lease = draw.granted(amount);
            let mut values = state_values.clone();
            values.extend([
                (":amount".to_owned(), n(amount.0)),
                (":budget".to_owned(), n(record.ledger.budget.0)),
                (":max".to_owned(), n(max.0)),
                (":one".to_owned(), n(1)),
            ]);
            let items = vec![
                self.ledger_update(
                    campaign,
                    "SET #reserved = #reserved + :amount, #committed = #committed + :amount ADD #writes :one",
                    format!("{state_condition} AND #budget = :budget AND #committed <= :max"),
                    values,
                )?,
                self.put(
                    to_item(&LeaseItem {
                        pk: campaign_pk(campaign),
                        sk: lease_sk(&lease),
                        lease: lease.clone(),
                    })?,
                    Some("attribute_not_exists(pk)"),
                )?,
            ];
            // A failed condition means someone else moved the ledger: look again.
            if self
                .transact(items, Some(format!("{}-{round}", lease.id)), || {
                    format!("reserving budget of `{campaign}`")
                })
                .await?
            {
                return Ok(Reservation::Granted(lease));
            }
        }
        Ok(Reservation::Busy)
    }

    async fn settle(&self, lease: &BudgetLease, actual: MicroUsd) -> Result<bool, StoreError> {
        let campaign = lease.campaign.as_str();
        let delta = actual.0 as i128 - lease.amount.0 as i128;
        let items = vec![
            self.delete_lease(lease)?,
            self.ledger_update(
                campaign,
                "SET #spent = #spent + :actual, #reserved = #reserved - :reserved, #committed = #committed + :delta ADD #writes :one",
                "attribute_exists(pk)".to_owned(),
                vec![
                    (":actual".to_owned(), n(actual.0)),
                    (":reserved".to_owned(), n(lease.amount.0)),
                    (":delta".to_owned(), n(delta)),
                    (":one".to_owned(), n(1)),
                ],
            )?,
        ];
        // A failed condition: the lease is gone, settled or reclaimed before. Nothing booked.
        if !self
            .transact(items, None, || format!("settling budget of `{campaign}`"))
            .await?
        {
            return Ok(false);
        }
        // Only a settle that spent something can have reached the cap: released and failed
        // calls (most settles under faults) skip the read.
        if actual == MicroUsd::ZERO {
            return Ok(true);
        }
        self.exhaust_if_spent(campaign).await?;
        Ok(true)
    }

    async fn repair_ledger(
        &self,
        campaign: &str,
        seen: &Ledger,
        held: MicroUsd,
    ) -> Result<bool, StoreError> {
        let mut repaired = *seen;
        repaired.repair(held);
        // `ledger_writes` is absent on items no ledger write touched yet.
        let unchanged = if seen.writes == 0 {
            "(attribute_not_exists(#writes) OR #writes = :seen_writes)"
        } else {
            "#writes = :seen_writes"
        };
        let result = self
            .update_campaign(campaign)
            .update_expression(
                "SET #spent = :spent, #reserved = :reserved, #committed = :committed, #writes = :writes",
            )
            .condition_expression(format!(
                "{unchanged} AND #spent = :seen_spent AND #reserved = :seen_reserved"
            ))
            .expression_attribute_names("#spent", "spent")
            .expression_attribute_names("#reserved", "reserved")
            .expression_attribute_names("#committed", "committed")
            .expression_attribute_names("#writes", "ledger_writes")
            .expression_attribute_values(":spent", n(repaired.spent.0))
            .expression_attribute_values(":reserved", n(repaired.reserved.0))
            .expression_attribute_values(":committed", n(repaired.committed().0))
            .expression_attribute_values(":writes", n(repaired.writes))
            .expression_attribute_values(":seen_writes", n(seen.writes))
            .expression_attribute_values(":seen_spent", n(seen.spent.0))
            .expression_attribute_values(":seen_reserved", n(seen.reserved.0))
            .send()
            .await;
        if !written(result, || {
            format!("repairing the budget ledger of `{campaign}`")
        })? {
            return Ok(false);
        }
        self.exhaust_if_spent(campaign).await?;
        Ok(true)
    }

    async fn renew(&self, lease: &BudgetLease) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(campaign_pk(&lease.campaign)))
            .key("sk", s(lease_sk(lease)))
            .update_expression("SET #expires = :expires")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#expires", "expires_at")
            .expression_attribute_values(":expires", ts(lease.expires_at)?)
            .send()
            .await;
        written(result, || format!("renewing budget lease {}", lease.id))
    }

    async fn leases(&self, campaign: &str) -> Result<Vec<BudgetLease>, StoreError> {
        let items = self.query_prefix(&campaign_pk(campaign), "LEASE#").await?;
        let items: Vec<LeaseItem> = items
            .into_iter()
            .map(|item| from_item("lease item", item))
            .collect::<Result<_, _>>()?;
        Ok(items.into_iter().map(|l| l.lease).collect())
    }

    async fn set_state(
        &self,
        campaign: &str,
        state: CampaignState,
        reason: Option<String>,
    ) -> Result<bool, StoreError> {
        let (from, values) = state_in("from", state.reachable_from());
        let update = self
            .update_campaign(campaign)
            .update_expression("SET #state = :state, #reason = :reason, #updated = :now")
            .condition_expression(format!("attribute_exists(pk) AND {from}"))
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#reason", "state_reason")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":state", status_str(state))
            .expression_attribute_values(":reason", s(reason.unwrap_or_default()))
            .expression_attribute_values(":now", ts(Utc::now())?);
        let update = values.into_iter().fold(update, |u, (name, value)| {
            u.expression_attribute_values(name, value)
        });
        written(update.send().await, || {
            format!("setting the state of `{campaign}`")
        })
    }

    async fn claim_budget_alert(&self, campaign: &str, pct: u8) -> Result<bool, StoreError> {
        let result = self
            .update_campaign(campaign)
            .update_expression("SET #alerted = :pct")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(#alerted) OR #alerted < :pct)",
            )
            .expression_attribute_names("#alerted", "alerted_pct")
            .expression_attribute_values(":pct", n(pct))
            .send()
            .await;
        written(result, || {
            format!("claiming the {pct}% budget alert of `{campaign}`")
        })
    }

    async fn add_enqueued(&self, campaign: &str, count: u64) -> Result<(), StoreError> {
        self.update_campaign(campaign)
            .update_expression("ADD #enqueued :n")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#enqueued", "enqueued")
            .expression_attribute_values(":n", n(count))
            .send()
            .await
            .map_err(|e| {
                aws_error(
                    BACKEND,
                    format!("counting enqueued samples of `{campaign}`"),
                    e,
                )
            })?;
        Ok(())
    }

    async fn enqueued_samples(&self, campaign: &str) -> Result<Vec<ResultKey>, StoreError> {
        // The sort key alone names the sample (`ENQ#{instance}#{sample}`), in markers of
        // every version.
        self.query_samples(campaign, "ENQ#")
            .await?
            .into_iter()
            .map(|item| {
                let sk = match item.get("sk") {
                    Some(AttributeValue::S(sk)) => sk.as_str(),
                    _ => "",
                };
                sk.strip_prefix("ENQ#")
                    .and_then(|rest| rest.rsplit_once('#'))
                    .and_then(|(instance, sample)| {
                        Some(ResultKey {
                            campaign: campaign.to_owned(),
                            instance_id: instance.to_owned(),
                            sample_index: sample.parse().ok()?,
                        })
                    })
                    .ok_or_else(|| StoreError::Corrupt {
                        what: format!("enqueue marker of `{campaign}`"),
                        detail: format!("sort key {sk:?} is not ENQ#{{instance}}#{{sample}}"),
                    })
            })
            .collect()
    }

    async fn mark_enqueued(&self, keys: &[ResultKey]) -> Result<(), StoreError> {
        for chunk in keys.chunks(25) {
            let mut pks = Vec::with_capacity(chunk.len());
            for key in chunk {
                pks.push(self.sample_pk(key).await?);
            }
            let mut requests = chunk
                .iter()
                .zip(pks)
                .map(|(key, pk)| {
                    let put = PutRequest::builder()
                        .item("pk", s(pk))
                        .item("sk", s(sample_sk("ENQ", key)))
                        .build()
                        .map_err(|e| aws_error(BACKEND, "building an enqueue marker", e))?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            // What a batch leaves unprocessed (throttling) is written again.
            for round in 0..=CONTENTION_RETRIES {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| aws_error(BACKEND, "writing enqueue markers", e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut left| left.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if round == CONTENTION_RETRIES {
                    return Err(StoreError::backend(
                        BACKEND,
                        "writing enqueue markers",
                        format!("{} markers stayed unprocessed", requests.len()),
                    ));
                }
                tokio::time::sleep(contention_backoff(round)).await;
            }
        }
        Ok(())
    }

    async fn heartbeat(&self, beat: &WorkerHeartbeat) -> Result<(), StoreError> {
        let item = HeartbeatItem {
            pk: format!("WORKER#{}", beat.worker_id),
            sk: "HEARTBEAT".into(),
            kind: "worker".into(),
            ttl: (beat.at + ChronoDuration::days(1)).timestamp(),
            beat: beat.clone(),
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&item)?))
            .send()
            .await
            .map_err(|e| {
                aws_error(
                    BACKEND,
                    format!("writing the heartbeat of {}", beat.worker_id),
                    e,
                )
            })?;
        Ok(())
    }

    async fn heartbeats(&self) -> Result<Vec<WorkerHeartbeat>, StoreError> {
        self.query_kind("worker")
            .await?
            .into_iter()
            .map(|item| from_item::<HeartbeatItem>("heartbeat item", item).map(|h| h.beat))
            .collect()
    }

    async fn commit(&self, meta: &TrajectoryMeta) -> Result<CommitOutcome, StoreError> {
        let key = meta.result_key();
        let summary = &meta.summary;
        let pk = self.sample_pk(&key).await?;
        let mut result_item: Item = HashMap::new();
        result_item.insert("pk".into(), s(&pk));
        result_item.insert("sk".into(), s(sample_sk("RESULT", &key)));
        result_item.insert("result_of".into(), s(&summary.trajectory_id));
        // A failed result expires with its trajectory item (TTL removes both; until it has,
        // `result` reads an index whose trajectory is gone as no result).
        if let Some(expires_at) = meta.expires_at {
            result_item.insert("ttl".into(), n(expires_at.timestamp()));
        }
        let trajectory = TrajectoryItem {
            pk: pk.clone(),
            sk: format!("TRAJ#{}", summary.trajectory_id),
            campaign_status: format!("{}#{}", summary.campaign, meta.status.as_str()),
            ttl: meta.expires_at.map(|t| t.timestamp()),
            commit_order: Some(commit_order(meta)),
            meta: meta.clone(),
        };
        let counter = match meta.status {
            RecordStatus::Success => "success",
            RecordStatus::Failed => "failed",
        };
        let items = vec![
            self.put(result_item, Some("attribute_not_exists(pk)"))?,
            self.put(to_item(&trajectory)?, None)?,
            self.count_update(&key, counter, 1)?,
        ];
        // Contention is retried inside: a finished rollout is never thrown away (re-running
        // it would orphan its object).
        if self
            .transact(items, None, || format!("committing {key}"))
            .await?
        {
            return Ok(CommitOutcome::Committed);
        }
        match self.result(&key).await? {
            Some(existing) => Ok(CommitOutcome::AlreadyCommitted(Box::new(existing))),
            None => Err(StoreError::backend(
                BACKEND,
                format!("committing {key}"),
                std::io::Error::other("the transaction's condition failed but no result is stored"),
            )),
        }
    }

    async fn result(&self, key: &ResultKey) -> Result<Option<TrajectoryMeta>, StoreError> {
        let pk = self.sample_pk(key).await?;
        let Some(index) = self.get(&pk, &sample_sk("RESULT", key)).await? else {
            return Ok(None);
        };
        let Some(AttributeValue::S(id)) = index.get("result_of") else {
            return Err(StoreError::Corrupt {
                what: format!("result item of {key}"),
                detail: "no result_of attribute".into(),
            });
        };
        self.get(&pk, &format!("TRAJ#{id}"))
            .await?
            .map(|item| from_item::<TrajectoryItem>("trajectory item", item).map(|t| t.meta))
            .transpose()
    }

    async fn trajectory(&self, trajectory_id: &str) -> Result<Option<TrajectoryMeta>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX_BY_TRAJECTORY)
            .key_condition_expression("trajectory_id = :id")
            .expression_attribute_values(":id", s(trajectory_id))
            .send()
            .await
            .map_err(|e| aws_error(BACKEND, format!("looking up trajectory {trajectory_id}"), e))?;
        out.items()
            .first()
            .cloned()
            .map(|item| from_item::<TrajectoryItem>("trajectory item", item).map(|t| t.meta))
            .transpose()
    }

    async fn trajectories(&self, campaign: &str) -> Result<Vec<TrajectoryMeta>, StoreError> {
        let items: Vec<TrajectoryItem> = self
            .query_decoded(campaign, "TRAJ#", "trajectory item")
            .await?;
        Ok(items.into_iter().map(|t| t.meta).collect())
    }

    async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let pk = self.sample_pk(&letter.key).await?;
        let item = to_item(&DeadLetterItem {
            pk,
            sk: sample_sk("DEAD", &letter.key),
            letter: letter.clone(),
        })?;
        let items = vec![
            self.put(item, Some("attribute_not_exists(pk)"))?,
            self.count_update(&letter.key, "dead_lettered", 1)?,
        ];
        // Contention is retried inside, so the count stays exact. A failed condition: the
        // sample was dead-lettered before, and its first record (the worker's error) stays.
        self.transact(items, None, || {
            format!("recording the dead letter of {}", letter.key)
        })
        .await?;
        Ok(())
    }

    async fn clear_dead_letter(&self, key: &ResultKey) -> Result<Option<DeadLetter>, StoreError> {
        let pk = self.sample_pk(key).await?;
        let sk = sample_sk("DEAD", key);
        let Some(item) = self.get(&pk, &sk).await? else {
            return Ok(None);
        };
        let letter = from_item::<DeadLetterItem>("dead-letter item", item)?.letter;
        let items = vec![
            self.delete_existing(&pk, &sk)?,
            self.count_update(key, "dead_lettered", -1)?,
        ];
        // A failed condition: cleared meanwhile by another redrive.
        Ok(self
            .transact(items, None, || format!("clearing the dead letter of {key}"))
            .await?
            .then_some(letter))
    }

    async fn dead_letters(&self, campaign: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let items: Vec<DeadLetterItem> = self
            .query_decoded(campaign, "DEAD#", "dead-letter item")
            .await?;
        Ok(items.into_iter().map(|d| d.letter).collect())
    }

    async fn decide_round(&self, decision: &RoundDecision) -> Result<Decided, StoreError> {
        let round = &decision.round;
        let pk = self.round_pk(round).await?;
        let sk = round_sk(round);
        let existing = || async {
            self.get(&pk, &sk)
                .await?
                .map(|item| from_item::<RoundItem>("round decision", item).map(|r| r.decision))
                .transpose()
        };
        for round_trip in 0..CONTENTION_RETRIES {
            if round_trip > 0 {
                tokio::time::sleep(contention_backoff(round_trip - 1)).await;
            }
            if let Some(found) = existing().await? {
                return Ok(Decided::Existing(found));
            }
            let mut record = self.require_campaign(&round.campaign).await?;
            let previous = record.updated_at;
            let mut applied = decision.clone();
            let planned = &mut record.total_samples;
            applied.verdict = record
                .adaptive
                .get_or_insert_default()
                .plan(planned, decision.verdict);
            let tally = record.adaptive.as_ref().map(tally_value).transpose()?;
            let item = RoundItem {
                pk: pk.clone(),
                sk: sk.clone(),
                decision: applied.clone(),
            };
            // Conditional on the item as read: the pool is checked against what it holds.
            let campaign = Update::builder()
                .table_name(&self.table)
                .key("pk", s(campaign_pk(&round.campaign)))
                .key("sk", s(CAMPAIGN_SK))
                .update_expression("SET #adaptive = :adaptive, #total = :total, #updated = :now")
                .condition_expression("#updated = :previous")
                .expression_attribute_names("#adaptive", "adaptive")
                .expression_attribute_names("#total", "total_samples")
                .expression_attribute_names("#updated", "updated_at")
                .set_expression_attribute_values(Some(HashMap::from([
                    (
                        ":adaptive".to_owned(),
                        tally.unwrap_or(AttributeValue::Null(true)),
                    ),
                    (":total".to_owned(), n(record.total_samples)),
                    (":now".to_owned(), ts(Utc::now())?),
                    (":previous".to_owned(), ts(previous)?),
                ])))
                .build()
                .map_err(|e| aws_error(BACKEND, "building an update", e))?;
            let items = vec![
                self.put(to_item(&item)?, Some("attribute_not_exists(pk)"))?,
                TransactWriteItem::builder().update(campaign).build(),
            ];
            if self
                .transact(items, None, || format!("deciding {round}"))
                .await?
            {
                return Ok(Decided::Applied(applied));
            }
            // Decided by another meanwhile (read at the top), or the campaign item moved.
        }
        Err(StoreError::backend(
            BACKEND,
            format!("deciding {round}"),
            "too much contention on the campaign item; the decision is retried when the sample's message is redelivered",
        ))
    }

    async fn round_sent(&self, round: &RoundKey) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(self.round_pk(round).await?))
            .key("sk", s(round_sk(round)))
            .update_expression("SET #sent = :sent")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#sent", "sent")
            .expression_attribute_values(":sent", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(|e| aws_error(BACKEND, format!("marking {round} sent"), e))?;
        Ok(())
    }

    async fn commits_after(
        &self,
        campaign: &str,
        after: Option<&CommitCursor>,
        limit: usize,
    ) -> Result<Vec<Commit>, StoreError> {
        self.read_commits_after(campaign, after, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Cancelled, Item, TrajectoryItem, TransactWriteItemsError, cancelled, from_item, n, s,
        to_item,
    };
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
    use chrono::{DateTime, Utc};
    use synthfleet_core::trajectory::{ErrorKind, ExitStatus};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a timestamp")
            .with_timezone(&Utc)
    }

    /// A trajectory item as `commit` wrote it before the summary type existed: every
    /// attribute at the top level, numbers as `N`, absent options as `NULL`.
    fn old_item() -> Item {
        [
            ("pk", s("CAMPAIGN#c")),
            ("sk", s("TRAJ#01TFAILED")),
            ("campaign_status", s("c#failed")),
            ("ttl", n(1_717_243_200)),
            ("campaign", s("c")),
            ("trajectory_id", s("01TFAILED")),
            ("instance_id", s("task-1")),
            ("sample_index", n(2)),
            ("model", s("m")),
            ("provider", s("openai")),
            ("status", s("failed")),
            ("exit_status", s("error:sandbox")),
            ("resolved", AttributeValue::Null(true)),
            ("reward", AttributeValue::Null(true)),
            ("cost_usd", n("0.0125")),
            ("input_tokens", n(1200)),
            ("output_tokens", n(80)),
            ("cache_read_tokens", n(900)),
            ("cache_write_tokens", n(0)),
            ("n_steps", n(3)),
            (
                "object_key",
                s("trajectories/c/failed/task-1/01TFAILED.json.zst"),
            ),
            ("sha256", s("ab12")),
            ("size_bytes", n(4096)),
            ("worker_id", s("w-1")),
            ("created_at", s("2024-05-02T12:00:00Z")),
            ("expires_at", s("2024-06-01T12:00:00Z")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The summary is flattened twice (into the meta, the meta into the item), so serde
    /// buffers the item; numbers arrive as DynamoDB's `N` strings and must still read as
    /// `u32`, `u64` and `f64`, and `NULL` as `None`.
    #[test]
    fn a_trajectory_item_of_the_old_layout_reads_back_and_is_written_the_same() {
        let item: TrajectoryItem = from_item("trajectory item", old_item()).expect("reads");
        let (meta, summary) = (&item.meta, &item.meta.summary);
        assert_eq!(
            (summary.sample_index, summary.input_tokens, summary.cost_usd),
            (2, 1200, 0.0125)
        );
        assert_eq!(
            (summary.created_at, meta.expires_at),
            (at("2024-05-02T12:00:00Z"), Some(at("2024-06-01T12:00:00Z")))
        );
        assert_eq!((meta.resolved, meta.reward), (None, None));
        assert_eq!(meta.exit_status, ExitStatus::Error(ErrorKind::Sandbox));
        assert_eq!(item.ttl, Some(1_717_243_200));
        // Every attribute read is written back as it was: nothing dropped, nothing renamed.
        assert_eq!(to_item(&item).expect("encodes"), old_item());
    }

    #[test]
    fn an_item_from_before_cache_tokens_reads_them_as_zero() {
        let mut old = old_item();
        old.remove("cache_read_tokens");
        old.remove("cache_write_tokens");
        old.insert("resolved".into(), AttributeValue::Bool(true));
        old.insert("reward".into(), n(1));
        old.insert("cost_usd".into(), n(2));
        let item: TrajectoryItem = from_item("trajectory item", old).expect("reads");
        let summary = &item.meta.summary;
        assert_eq!(
            (summary.cache_read_tokens, summary.cache_write_tokens),
            (0, 0)
        );
        assert_eq!(
            (item.meta.resolved, item.meta.reward),
            (Some(true), Some(1.0))
        );
        assert_eq!(summary.cost_usd, 2.0, "an integral N reads as a float");
    }

    fn cancellation(codes: &[&str]) -> TransactWriteItemsError {
        let mut e = TransactionCanceledException::builder();
        for code in codes {
            e = e.cancellation_reasons(CancellationReason::builder().code(*code).build());
        }
        TransactWriteItemsError::TransactionCanceledException(e.build())
    }

    #[test]
    fn cancellations_are_told_apart_by_their_reasons() {
        assert_eq!(
            cancelled(&cancellation(&["ConditionalCheckFailed", "None"])),
            Some(Cancelled::Condition)
        );
        assert_eq!(
            cancelled(&cancellation(&["None", "TransactionConflict"])),
            Some(Cancelled::Contention)
        );
        assert_eq!(
            cancelled(&cancellation(&["ThrottlingError"])),
            Some(Cancelled::Contention)
        );
        assert_eq!(
            cancelled(&cancellation(&[])),
            Some(Cancelled::Condition),
            "no reasons: a failed condition, as before"
        );
    }
}
