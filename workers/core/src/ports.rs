//! The ports: traits the domain needs, implemented by adapter crates.
//!
//! Each trait is small and names only the operations the worker uses, so a local, an AWS
//! and a test implementation can all honour it exactly.

use crate::MicroUsd;
use crate::budget::{
    BudgetLease, CampaignRecord, CampaignState, Ledger, SliceSize, Spend, Submitted,
};
use crate::commits::{Commit, CommitCursor};
use crate::lifecycle::Trigger;
use crate::message::ResultKey;
use crate::trajectory::{ChatMessage, ExitStatus, RecordStatus, Role};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Errors of the storage and queue ports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error(
        "unknown or expired receipt handle {receipt}; the message was redelivered to another worker or deleted"
    )]
    StaleReceipt { receipt: String },
    #[error("{backend} failed during {operation}")]
    Backend {
        backend: &'static str,
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub fn backend(
        backend: &'static str,
        operation: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Backend {
            backend,
            operation: operation.into(),
            source: source.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queue

/// A received message. `receipt` identifies this delivery (not the message).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// 1 on first delivery.
    pub receive_count: u32,
    /// When the message was sent (its age is the `QueueAgeS` metric), if the queue says.
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub visible: u64,
    pub in_flight: u64,
    pub dead: u64,
}

/// A queue with SQS semantics: at-least-once delivery, visibility timeout, receive counts,
/// and a dead-letter queue that takes a message after `max_receives` deliveries.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Enqueues a message, visible after `delay`.
    async fn send(&self, body: &str, delay: Duration) -> Result<(), StoreError>;
    /// Enqueues messages, visible at once: all of them, or an error (some may have been
    /// sent: callers mark what they sent only after this returns). Backends send in
    /// batches where they can (SQS: 10 per request).
    async fn send_batch(&self, bodies: &[String]) -> Result<(), StoreError> {
        for body in bodies {
            self.send(body, Duration::ZERO).await?;
        }
        Ok(())
    }
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, StoreError>;
    /// Extends the visibility of an in-flight delivery (heartbeat).
    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), StoreError>;
    async fn delete(&self, receipt: &str) -> Result<(), StoreError>;
    /// Puts a delivered message back as `body`, visible after `delay`, without counting
    /// this delivery as a receive: a fresh copy replaces it (SQS cannot reset a receive
    /// count). For retries (the body carries the failure count) and deferrals.
    async fn requeue(
        &self,
        delivery: &Delivery,
        body: &str,
        delay: Duration,
    ) -> Result<(), StoreError>;
    /// Puts a delivered message back unchanged, visible after `delay`, without counting
    /// this delivery (campaigns paused or out of budget, a stopped worker).
    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<(), StoreError> {
        self.requeue(delivery, &delivery.body, delay).await
    }
    /// Moves the message to the dead-letter queue at once, with the reason.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), StoreError>;
    /// Moves the dead-letter queue's messages for which `select` returns a body back to
    /// the queue with that body, as fresh messages (receive count 0); leaves the others.
    /// Returns how many moved.
    async fn redrive(&self, select: &RedriveSelect<'_>) -> Result<u64, StoreError>;
    async fn stats(&self) -> Result<QueueStats, StoreError>;
}

// ---------------------------------------------------------------------------------------
// Object store

/// Flat key → bytes storage. Implementations store a SHA-256 with each object and verify
/// it on every read, and a `put` is atomic: the object is complete or absent.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Metadata store

/// What every summary of a committed trajectory says alike — its metadata item
/// ([`TrajectoryMeta`]), its facts ([`crate::facts::TrajectoryFacts`]) and its row in the
/// quality jobs' `trajectories` table — with the same keys, types and meaning. Each embeds
/// it with `#[serde(flatten)]`, so the stored forms keep these keys at their top level.
///
/// What the copies say differently stays with each: the item's `exit_status` is an
/// [`ExitStatus`] and its `resolved`/`reward` are absent before verification, while the
/// facts' are a string (`unfinished` too) and plain values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectorySummary {
    pub campaign: String,
    pub trajectory_id: String,
    pub instance_id: String,
    pub sample_index: u32,
    pub model: String,
    pub provider: String,
    /// LLM spend of the rollout (USD).
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens read from / written to the provider's cache (absent in items written
    /// before they were counted).
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    pub n_steps: u32,
    /// When the rollout finished.
    pub created_at: DateTime<Utc>,
    /// The experiment arm (`[[variants]]`) of the sample; absent outside experiments (so
    /// an item of a campaign without variants is written as before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl TrajectorySummary {
    /// The summary of a finished record (`created_at`: when it finished).
    pub fn of(record: &crate::trajectory::TrajectoryRecord, created_at: DateTime<Utc>) -> Self {
        TrajectorySummary {
            campaign: record.campaign.clone(),
            trajectory_id: record.trajectory_id.clone(),
            instance_id: record.instance_id.clone(),
            sample_index: record.sample_index,
            model: record.model.clone(),
            provider: record.provider.clone(),
            cost_usd: record.totals.cost_usd,
            input_tokens: record.totals.input_tokens,
            output_tokens: record.totals.output_tokens,
            cache_read_tokens: record.totals.cache_read_tokens,
            cache_write_tokens: record.totals.cache_write_tokens,
            n_steps: record.totals.n_steps,
            created_at,
            variant: record.variant.clone(),
        }
    }

    pub fn result_key(&self) -> ResultKey {
        ResultKey {
            campaign: self.campaign.clone(),
            instance_id: self.instance_id.clone(),
            sample_index: self.sample_index,
        }
    }
}

/// The summary item of one committed trajectory: the [`TrajectorySummary`] (flattened:
/// its keys are the item's) and where the record lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryMeta {
    #[serde(flatten)]
    pub summary: TrajectorySummary,
    pub status: RecordStatus,
    pub exit_status: ExitStatus,
    pub resolved: Option<bool>,
    pub reward: Option<f64>,
    pub object_key: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub worker_id: String,
    /// Failed items expire (30 days); successful ones are kept.
    pub expires_at: Option<DateTime<Utc>>,
}

impl TrajectoryMeta {
    pub fn result_key(&self) -> ResultKey {
        self.summary.result_key()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    Committed,
    /// Another attempt already committed this (campaign, instance, sample).
    AlreadyCommitted(Box<TrajectoryMeta>),
}

/// A request for a budget slice: `lease` names it (its `amount` is what it wants at most),
/// the rest says how small it may be and what it pays for.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    pub lease: BudgetLease,
    /// The least of any use (one call's worst case).
    pub minimum: MicroUsd,
    /// How many holders share the headroom ([`SliceSize::holders`]).
    pub holders: u32,
    pub spend: Spend,
}

impl Draw {
    /// A slice of exactly `lease.amount`, or nothing.
    pub fn exact(lease: BudgetLease, spend: Spend) -> Draw {
        Draw {
            minimum: lease.amount,
            holders: 1,
            lease,
            spend,
        }
    }

    pub fn size(&self) -> SliceSize {
        SliceSize {
            wanted: self.lease.amount,
            minimum: self.minimum,
            holders: self.holders,
        }
    }

    /// The lease as granted: `amount` of it.
    pub fn granted(&self, amount: MicroUsd) -> BudgetLease {
        BudgetLease {
            amount,
            ..self.lease.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// The lease as stored: its amount is what was granted.
    Granted(BudgetLease),
    /// Would fit once reservations in flight settle: ask again shortly.
    Busy,
    /// Refused; the campaign record as it stands (its state says why).
    Refused(Box<CampaignRecord>),
}

/// Chooses and rewrites the messages [`Queue::redrive`] moves back: the new body, or
/// `None` to leave a message where it is.
pub type RedriveSelect<'a> = dyn Fn(&str) -> Option<String> + Send + Sync + 'a;

/// A sample that could not be completed, kept with its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub key: ResultKey,
    pub attempts: u32,
    pub error: String,
    pub at: DateTime<Utc>,
    /// Why it died before earlier redrives (oldest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
}

impl DeadLetter {
    /// The dead letter of `message` after `attempts` deliveries, for `error`.
    pub fn of(message: &crate::message::TaskMessage, attempts: u32, error: &str) -> DeadLetter {
        DeadLetter {
            key: message.result_key(),
            attempts,
            error: error.to_owned(),
            at: Utc::now(),
            history: message.history.clone(),
        }
    }
}

/// A worker's liveness record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    pub worker_id: String,
    pub at: DateTime<Utc>,
    pub in_flight: u32,
    pub completed: u64,
    pub version: String,
    /// Seconds between this worker's beats (0 in beats from before it was recorded): the
    /// worker is dead once it missed a few ([`crate::liveness`]).
    #[serde(default)]
    pub interval_s: u64,
    /// When the worker last had a rollout in flight, or when it started if it has run
    /// none yet: what the scaler's idle window counts from (`None` in beats of workers from
    /// before it was kept: not known to be idle).
    #[serde(default)]
    pub last_active: Option<DateTime<Utc>>,
    /// Models whose circuit breaker is open on this worker (their calls go to fallbacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_breakers: Vec<String>,
}

/// Campaign items (with the budget ledger) and trajectory items. Every write that guards
/// an invariant is conditional and atomic in the implementation.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// Creates the campaign item, or applies [`CampaignRecord::resubmit`] to an existing
    /// one (keeping its spend), as a request: [`MetadataStore::submit_campaign`] with
    /// [`Trigger::Request`].
    async fn upsert_campaign(
        &self,
        name: &str,
        budget: MicroUsd,
        total_samples: u64,
    ) -> Result<CampaignRecord, StoreError> {
        let plan = crate::sampling::SamplePlan::fixed(total_samples);
        let (record, _) = self
            .submit_campaign(name, budget, &plan, &Trigger::Request)
            .await?;
        Ok(record)
    }
    /// Creates the campaign item ([`CampaignRecord::submitted`]), or applies
    /// [`CampaignRecord::resubmit`] to an existing one (keeping its spend), in one atomic
    /// write: a repeated trigger changes nothing, and of concurrent submissions each
    /// applies to what the one before left.
    async fn submit_campaign(
        &self,
        name: &str,
        budget: MicroUsd,
        plan: &crate::sampling::SamplePlan,
        trigger: &Trigger,
    ) -> Result<(CampaignRecord, Submitted), StoreError>;
    async fn campaign(&self, name: &str) -> Result<Option<CampaignRecord>, StoreError>;
    async fn campaigns(&self) -> Result<Vec<CampaignRecord>, StoreError>;
    /// Applies [`CampaignRecord::draw`] for the draw's size and stores the lease with the
    /// amount granted, in one atomic write; a refusal marks a running campaign `exhausted`
    /// with the reason.
    async fn reserve(&self, draw: &Draw) -> Result<Reservation, StoreError>;
    /// Removes the lease and books `actual` against it, in one atomic write. Idempotent:
    /// `Ok(false)` when the lease is gone already (settled, or reclaimed as dead) or holds
    /// another amount than `lease` says, and nothing is booked twice.
    async fn settle(&self, lease: &BudgetLease, actual: MicroUsd) -> Result<bool, StoreError>;
    /// Applies [`CampaignRecord::repair`] with `held` (what the leases hold) if the
    /// campaign's ledger is still `seen` (no ledger write since), atomically; `Ok(false)`
    /// when it moved.
    async fn repair_ledger(
        &self,
        campaign: &str,
        seen: &Ledger,
        held: MicroUsd,
    ) -> Result<bool, StoreError>;
    /// Moves the lease's expiry to `lease.expires_at` while its call runs; `Ok(false)` when
    /// it is gone (reclaimed: its settle will book nothing).
    async fn renew(&self, lease: &BudgetLease) -> Result<bool, StoreError>;
    /// The reservations the campaign's ledger holds right now.
    async fn leases(&self, campaign: &str) -> Result<Vec<BudgetLease>, StoreError>;
    /// Moves the campaign to `state` if its current state allows it
    /// ([`CampaignState::reachable_from`]), atomically; `Ok(false)` when it does not.
    async fn set_state(
        &self,
        campaign: &str,
        state: CampaignState,
        reason: Option<String>,
    ) -> Result<bool, StoreError>;
    /// Records that the budget alert of `pct` percent was sent, if no alert as high was
    /// (atomically: of concurrent claims, one wins); `Ok(false)` when one was.
    async fn claim_budget_alert(&self, campaign: &str, pct: u8) -> Result<bool, StoreError>;
    /// Adds to the campaign's enqueued count.
    async fn add_enqueued(&self, campaign: &str, n: u64) -> Result<(), StoreError>;
    /// The samples of the campaign a message was ever sent for.
    async fn enqueued_samples(&self, campaign: &str) -> Result<Vec<ResultKey>, StoreError>;
    /// Records that messages were sent for these samples (after the sends succeeded).
    async fn mark_enqueued(&self, keys: &[ResultKey]) -> Result<(), StoreError>;
    /// Records that a worker is alive (liveness; expires on its own).
    async fn heartbeat(&self, beat: &WorkerHeartbeat) -> Result<(), StoreError>;
    async fn heartbeats(&self) -> Result<Vec<WorkerHeartbeat>, StoreError>;
    /// Commits the item unless a result for its (campaign, instance, sample) exists;
    /// updates the campaign's counts in the same atomic write.
    async fn commit(&self, meta: &TrajectoryMeta) -> Result<CommitOutcome, StoreError>;
    async fn result(&self, key: &ResultKey) -> Result<Option<TrajectoryMeta>, StoreError>;
    /// Looks a trajectory up by id (or a unique prefix of it).
    async fn trajectory(&self, trajectory_id: &str) -> Result<Option<TrajectoryMeta>, StoreError>;
    async fn trajectories(&self, campaign: &str) -> Result<Vec<TrajectoryMeta>, StoreError>;
    /// Records a sample given up on, and counts it, once per sample: a second record
    /// (the queue's receive-count backstop after the worker's own) leaves the first.
    async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError>;
    async fn dead_letters(&self, campaign: &str) -> Result<Vec<DeadLetter>, StoreError>;
    /// Removes a sample's dead-letter record and uncounts it, atomically (a redrive gives
    /// the sample fresh attempts); `None` when there was none.
    async fn clear_dead_letter(&self, key: &ResultKey) -> Result<Option<DeadLetter>, StoreError>;
    /// Stores a round's decision unless the round has one, applying
    /// [`crate::sampling::AdaptiveTally::plan`] to the campaign item in the same atomic
    /// write (so the pool is shared exactly and the round closes once); the existing
    /// decision otherwise.
    async fn decide_round(
        &self,
        decision: &crate::sampling::RoundDecision,
    ) -> Result<crate::sampling::Decided, StoreError>;
    /// Marks a round's decision to continue as sent (the next round's messages are out).
    async fn round_sent(&self, round: &crate::sampling::RoundKey) -> Result<(), StoreError>;
    /// The campaign's committed trajectories in commit order ([`crate::commits`]): those
    /// after `after` (from the first without it), at most `limit`. Every commit is in the
    /// order exactly once. The local store's order is final when read; DynamoDB's keys
    /// come from the workers' clocks and its index is read eventually, so a commit may
    /// still appear before younger ones for a few seconds (readers take only what has
    /// settled: [`crate::commits::settled`]).
    async fn commits_after(
        &self,
        campaign: &str,
        after: Option<&CommitCursor>,
        limit: usize,
    ) -> Result<Vec<Commit>, StoreError>;
}

/// Tells subscribers (a trainer, a dashboard) of each trajectory committed, after its
/// commit: [`crate::store::TrajectoryStore::commit`] calls it for a result it committed,
/// never for a losing duplicate. Best effort: an announcement that cannot be sent is the
/// adapter's to log, never a failure of the commit and never retried; the reliable way
/// to read every commit is [`MetadataStore::commits_after`].
#[async_trait]
pub trait CommitEvents: Send + Sync {
    async fn committed(&self, meta: &TrajectoryMeta);
}

/// Keeps a busy worker's host out of a scale-in (an Auto Scaling group's instance
/// protection): set while rollouts run, cleared when the worker is idle.
#[async_trait]
pub trait ScaleInProtection: Send + Sync {
    async fn set_protected(&self, protected: bool) -> Result<(), StoreError>;
}

/// Whether the host has room for more work (disk, above all): asked before each receive.
#[async_trait]
pub trait HostCapacity: Send + Sync {
    /// `None`: take work. `Some(reason)`: take none now (in-flight work goes on); the
    /// worker asks again after a pause.
    async fn pressure(&self) -> Option<String>;
}

// ---------------------------------------------------------------------------------------
// Sandbox

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "image `{image}` is not available locally; build it (see examples/quickstart/build-image.sh) or pull it from your registry"
    )]
    ImageMissing { image: String },
    #[error("sandbox {container}: {operation} failed")]
    Docker {
        container: String,
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("sandbox {container} stopped answering; it was killed and removed")]
    Unresponsive { container: String },
    #[error(
        "sandbox runtime `{runtime}` is not registered with this Docker engine (it has: {available}); install it and add it to the daemon's `runtimes` (docs/SANDBOX.md), or remove `sandbox.runtime`"
    )]
    RuntimeMissing { runtime: String, available: String },
}

/// What the sandbox is made from and how it is bounded.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub image: String,
    pub workdir: String,
    /// Labels put on the container; the provider adds its own management labels.
    pub labels: BTreeMap<String, String>,
    pub limits: crate::campaign::SandboxConfig,
}

/// An HTTP request made inside a sandbox to its gateway ([`Sandbox::exec_serving`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRequest {
    pub method: String,
    /// The path and query, as requested (`/v1/chat/completions`).
    pub path: String,
    pub body: String,
}

/// The gateway's answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayResponse {
    pub status: u16,
    pub body: String,
}

/// What answers a sandbox's requests to its gateway.
#[async_trait]
pub trait Gateway: Send + Sync {
    async fn handle(&self, request: GatewayRequest) -> GatewayResponse;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i64>,
    /// stdout and stderr, interleaved as produced, lossily decoded as UTF-8.
    pub output: String,
    /// Output beyond the cap was dropped.
    pub truncated: bool,
    pub timed_out: bool,
    pub duration: Duration,
}

#[async_trait]
pub trait Sandbox: Send + Sync {
    fn id(&self) -> &str;
    fn image_digest(&self) -> Option<&str>;
    /// Runs `command` with `bash -c` in the workdir, as the sandbox user, killed after `timeout`.
    async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SandboxError>;
    /// Runs `command` as root (setup, patch application): still without capabilities.
    async fn exec_root(&self, command: &str, timeout: Duration)
    -> Result<ExecOutput, SandboxError>;
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError>;
    /// Runs `command` like [`Sandbox::exec`] while answering, with `gateway`, the HTTP
    /// requests made inside the sandbox to `127.0.0.1:{port}` — through the sandbox's own
    /// channel, so no network is opened (`network = "none"` still holds). Needs `python3`
    /// in the image (the in-sandbox end of the channel).
    async fn exec_serving(
        &self,
        command: &str,
        timeout: Duration,
        port: u16,
        gateway: &dyn Gateway,
    ) -> Result<ExecOutput, SandboxError>;
    /// Kills and removes the sandbox. Always called, on every path.
    async fn destroy(&self) -> Result<(), SandboxError>;
}

#[async_trait]
pub trait SandboxProvider: Send + Sync {
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError>;
    /// Removes every sandbox left behind by this worker (after a crash); returns how many.
    async fn reap(&self) -> Result<usize, SandboxError>;
    /// The workers that own sandboxes on this host, any of them.
    async fn owners(&self) -> Result<Vec<String>, SandboxError>;
    /// Removes every sandbox of `owner` on this host (a dead worker's); returns how many.
    async fn reap_owner(&self, owner: &str) -> Result<usize, SandboxError>;
}

// ---------------------------------------------------------------------------------------
// LLM

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// OpenAI tool schemas; empty for text mode.
    pub tools: Vec<serde_json::Value>,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
}

impl ChatRequest {
    /// The turn the model is asked for, from 0: the assistant messages so far.
    pub fn turn(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count()
    }
}

/// What a call used, as the provider reports it (or estimated, and marked so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens billed at the input price (cached ones excluded).
    pub input_tokens: u64,
    /// Completion tokens, reasoning included.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_tokens: u64,
    /// The provider reported no usage: counted from everything sent and received.
    pub estimated: bool,
}

impl Usage {
    /// Adds another call's (or attempt's) usage; estimated if either is.
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.estimated |= other.estimated;
    }

    /// No token reported at all.
    pub fn is_empty(&self) -> bool {
        self.input_tokens == 0
            && self.output_tokens == 0
            && self.cache_read_tokens == 0
            && self.cache_write_tokens == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletion {
    pub message: ChatMessage,
    pub usage: Usage,
    /// Attempts beyond the first.
    pub retries: u32,
    pub finish_reason: Option<String>,
    /// How long the request that succeeded took: the model's own time. Everything else a
    /// call spends (rate-limiter waits, failed attempts, backoff, fallbacks) is the
    /// infrastructure's, and is not counted against the agent's time.
    pub generation: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{endpoint} unavailable after {attempts} attempts: {last}")]
    Unavailable {
        endpoint: String,
        attempts: u32,
        last: String,
        /// What the provider billed for attempts it answered with a broken body.
        billed: MicroUsd,
    },
    #[error("{endpoint} returned a malformed completion: {detail}")]
    Malformed {
        endpoint: String,
        detail: String,
        /// What the provider billed: every attempt it answered (200) with a broken body.
        billed: MicroUsd,
    },
    /// The conversation no longer fits the model's context window: deterministic, so not
    /// retried; the rollout ends with its own outcome.
    #[error("{endpoint} refused the request as longer than the model's context window: {detail}")]
    ContextExceeded {
        endpoint: String,
        detail: String,
        /// Billed by earlier, broken attempts of the call.
        billed: MicroUsd,
    },
    #[error("{endpoint} rejected the request ({status}): {detail}")]
    Rejected {
        endpoint: String,
        status: u16,
        detail: String,
        /// Billed by earlier, broken attempts of the call.
        billed: MicroUsd,
    },
    #[error("model configuration: {0}")]
    Config(String),
}

impl LlmError {
    /// What the provider billed for a call that failed (its answered but unreadable
    /// attempts, estimated at the model's prices); booked like any spend.
    pub fn billed(&self) -> MicroUsd {
        match self {
            LlmError::Unavailable { billed, .. }
            | LlmError::Malformed { billed, .. }
            | LlmError::ContextExceeded { billed, .. }
            | LlmError::Rejected { billed, .. } => *billed,
            LlmError::Config(_) => MicroUsd::ZERO,
        }
    }

    /// The error, with `extra` more billed (earlier attempts, earlier models of a chain).
    pub fn with_billed(mut self, extra: MicroUsd) -> LlmError {
        match &mut self {
            LlmError::Unavailable { billed, .. }
            | LlmError::Malformed { billed, .. }
            | LlmError::ContextExceeded { billed, .. }
            | LlmError::Rejected { billed, .. } => *billed = billed.saturating_add(extra),
            LlmError::Config(_) => {}
        }
        self
    }

    pub fn exit_status(&self) -> ExitStatus {
        use crate::trajectory::ErrorKind;
        match self {
            LlmError::ContextExceeded { .. } => ExitStatus::ContextExceeded,
            LlmError::Unavailable { .. } => ExitStatus::Error(ErrorKind::LlmUnavailable),
            LlmError::Malformed { .. } => ExitStatus::Error(ErrorKind::LlmMalformed),
            LlmError::Rejected { .. } | LlmError::Config(_) => {
                ExitStatus::Error(ErrorKind::LlmRejected)
            }
        }
    }
}

/// One model behind one API. Retries of transient failures happen inside.
#[async_trait]
pub trait ChatModel: Send + Sync {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatCompletion, LlmError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectory::ErrorKind;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a timestamp")
            .with_timezone(&Utc)
    }

    /// A metadata item as the local store wrote it before [`TrajectorySummary`] existed
    /// (every field at the top level, in the old order).
    fn old_item() -> serde_json::Value {
        json!({
            "campaign": "c",
            "trajectory_id": "01TFAILED",
            "instance_id": "task-1",
            "sample_index": 2,
            "model": "m",
            "provider": "openai",
            "status": "failed",
            "exit_status": "error:sandbox",
            "resolved": null,
            "reward": null,
            "cost_usd": 0.0125,
            "input_tokens": 1200,
            "output_tokens": 80,
            "cache_read_tokens": 900,
            "cache_write_tokens": 0,
            "n_steps": 3,
            "object_key": "trajectories/c/failed/task-1/01TFAILED.json.zst",
            "sha256": "ab12",
            "size_bytes": 4096,
            "worker_id": "w-1",
            "created_at": "2024-05-02T12:00:00Z",
            "expires_at": "2024-06-01T12:00:00Z"
        })
    }

    fn old_meta() -> TrajectoryMeta {
        TrajectoryMeta {
            summary: TrajectorySummary {
                campaign: "c".into(),
                trajectory_id: "01TFAILED".into(),
                instance_id: "task-1".into(),
                sample_index: 2,
                model: "m".into(),
                provider: "openai".into(),
                cost_usd: 0.0125,
                input_tokens: 1200,
                output_tokens: 80,
                cache_read_tokens: 900,
                cache_write_tokens: 0,
                n_steps: 3,
                created_at: at("2024-05-02T12:00:00Z"),
                variant: None,
            },
            status: RecordStatus::Failed,
            exit_status: ExitStatus::Error(ErrorKind::Sandbox),
            resolved: None,
            reward: None,
            object_key: "trajectories/c/failed/task-1/01TFAILED.json.zst".into(),
            sha256: "ab12".into(),
            size_bytes: 4096,
            worker_id: "w-1".into(),
            expires_at: Some(at("2024-06-01T12:00:00Z")),
        }
    }

    #[test]
    fn a_metadata_item_of_the_old_layout_reads_back_and_is_written_the_same() {
        let bytes = serde_json::to_vec(&old_item()).expect("encode");
        let meta: TrajectoryMeta = serde_json::from_slice(&bytes).expect("the old item reads");
        assert_eq!(meta, old_meta());
        // Written again: the same keys and values (JSON objects have no order).
        assert_eq!(
            serde_json::to_value(&meta).expect("encode"),
            old_item(),
            "the summary's keys stay at the item's top level"
        );
    }

    #[test]
    fn a_metadata_item_from_before_cache_tokens_reads_them_as_zero() {
        let mut item = old_item();
        let fields = item.as_object_mut().expect("an object");
        fields.remove("cache_read_tokens");
        fields.remove("cache_write_tokens");
        fields.insert("resolved".into(), json!(true));
        fields.insert("reward".into(), json!(1.0));
        let meta: TrajectoryMeta = serde_json::from_value(item).expect("reads");
        assert_eq!(meta.summary.cache_read_tokens, 0);
        assert_eq!(meta.summary.cache_write_tokens, 0);
        assert_eq!((meta.resolved, meta.reward), (Some(true), Some(1.0)));
    }
}
