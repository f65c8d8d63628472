//! The worker loop: receive (in batches, for free slots) → dedupe → roll out → commit →
//! delete, with visibility heartbeats, retries, dead letters and liveness beats.
//!
//! Shared by `synthfleet run` (one campaign, local queue, stops when drained) and
//! `synthfleet worker` (any campaign on the queue, runs until told to stop).
//!
//! * [`receive`]: the receive loop — free slots, batches, back-off under pressure, and
//!   shutdown (stop: in-flight rollouts are handed back after their next step's checkpoint,
//!   or finish when their campaign turns resume off; interrupt: they are released at once).
//! * [`message`]: one delivery's handling — what its fate depends on, learned in order, the
//!   rollout under a lease heartbeat, the commit, and the fate carried out on the queue.
//! * [`disposition`]: that fate as a pure function of the facts, with its table test.
//! * [`fleet`]: the worker in its fleet — liveness heartbeats, rate-limit shares, dead
//!   workers' sandboxes and budget leases, rollouts in flight and scale-in protection.

mod disposition;
mod fleet;
mod message;
mod receive;

use crate::campaigns::CampaignSource;
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;
use synthfleet_core::message::ResultKey;
use synthfleet_core::metrics::{DataPoint, MetricSink};
use synthfleet_core::ports::{
    HostCapacity, MetadataStore, Queue, SandboxProvider, ScaleInProtection,
};
use synthfleet_core::sampling::RoundDecision;
use synthfleet_core::trajectory::{ExitStatus, RecordStatus};
use synthfleet_llm::{ModelGuards, Wallet};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker_id: String,
    /// Rollouts run at once.
    pub concurrency: usize,
    /// Visibility timeout of a received message; extended by a heartbeat while it runs.
    pub visibility: Duration,
    /// Attempts that failed on an infrastructure fault before a sample is dead-lettered
    /// (counted in the message; crashes and signals are not attempts).
    pub max_attempts: u32,
    /// Deliveries of one message to workers that never finished it (they crashed, were
    /// killed or lost the lease) before it is dead-lettered as a poison task, with its
    /// record, before the queue's redrive policy would move it silently.
    pub max_receives: u32,
    /// First delay before an infrastructure failure is retried (doubles per attempt).
    pub retry_backoff: Duration,
    /// Pause between polls of an empty queue.
    pub idle_poll: Duration,
    /// Return once the queue has nothing visible and nothing in flight.
    pub stop_when_drained: bool,
    /// Stop the whole worker when a campaign stops accepting work (the local runner);
    /// otherwise its messages are deferred by `defer_delay` and others are served.
    pub stop_when_campaign_stops: bool,
    pub defer_delay: Duration,
    /// How often the liveness item is written.
    pub heartbeat_every: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: "worker".into(),
            concurrency: 2,
            visibility: Duration::from_secs(300),
            max_attempts: 3,
            max_receives: 10,
            retry_backoff: Duration::from_secs(10),
            idle_poll: Duration::from_millis(500),
            stop_when_drained: true,
            stop_when_campaign_stops: true,
            defer_delay: Duration::from_secs(300),
            heartbeat_every: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub enum WorkerEvent {
    Started {
        key: ResultKey,
        attempt: u32,
    },
    Step {
        key: ResultKey,
        step: u32,
        action: Option<String>,
    },
    Finished {
        key: ResultKey,
        trajectory_id: String,
        status: RecordStatus,
        exit_status: ExitStatus,
        resolved: Option<bool>,
        cost_usd: f64,
    },
    /// The sample already had a result: the delivery was a duplicate.
    Duplicate {
        key: ResultKey,
    },
    Retrying {
        key: ResultKey,
        attempt: u32,
        error: String,
    },
    DeadLettered {
        key: Option<ResultKey>,
        reason: String,
    },
    /// A campaign stopped accepting work (budget exhausted, paused).
    CampaignStopped {
        reason: String,
    },
    /// Adaptive sampling decided a round of a task (this worker settled its last sample).
    RoundDecided {
        decision: RoundDecision,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub committed: u64,
    pub duplicates: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub deferred: u64,
    pub interrupted: bool,
    /// Set when the (local) campaign stopped accepting work.
    pub stop_reason: Option<String>,
}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    deferred: AtomicU64,
    in_flight: AtomicU32,
}

pub type EventSink = Arc<dyn Fn(WorkerEvent) + Send + Sync>;

pub struct Worker {
    campaigns: Arc<dyn CampaignSource>,
    queue: Arc<dyn Queue>,
    metadata: Arc<dyn MetadataStore>,
    wallet: Arc<Wallet>,
    config: WorkerConfig,
    reaper: Option<Arc<dyn SandboxProvider>>,
    protection: Option<Arc<dyn ScaleInProtection>>,
    guards: Option<ModelGuards>,
    capacity: Option<Arc<dyn HostCapacity>>,
    metrics: Option<Arc<dyn MetricSink>>,
}

/// What every in-flight message handler shares.
struct Shared {
    campaigns: Arc<dyn CampaignSource>,
    queue: Arc<dyn Queue>,
    metadata: Arc<dyn MetadataStore>,
    /// The budget slices the rollouts hold (the campaigns' `Rollouts` share it): renewed,
    /// and returned when idle, with every heartbeat; all returned when the worker stops.
    wallet: Arc<Wallet>,
    config: WorkerConfig,
    events: EventSink,
    counters: Counters,
    /// Stop receiving; in-flight rollouts are handed back after their next step's
    /// checkpoint (those of a campaign with `scaffold.resume = false` finish).
    stop: CancellationToken,
    /// Interrupt in-flight rollouts; their messages are released.
    interrupt: CancellationToken,
    stop_reason: std::sync::Mutex<Option<String>>,
    reaper: Option<Arc<dyn SandboxProvider>>,
    /// When a rollout last started or ended, or when the worker started (what the
    /// scaler's idle window counts from).
    last_active: std::sync::Mutex<chrono::DateTime<Utc>>,
    /// Wakes the heartbeat when the last rollout in flight ends, so the scaler sees the
    /// worker's last activity at once rather than up to a heartbeat later.
    went_idle: tokio::sync::Notify,
    protection: Option<Arc<dyn ScaleInProtection>>,
    /// The protection last set, and when (`None`: never).
    protected: tokio::sync::Mutex<Option<(bool, tokio::time::Instant)>>,
    guards: Option<ModelGuards>,
    /// Where the worker's data points go (`None`: nowhere).
    metrics: Option<Arc<dyn MetricSink>>,
}

impl Worker {
    /// A worker serving `queue`; `wallet` is the one its campaigns' rollouts hold their
    /// budget in.
    pub fn new(
        campaigns: Arc<dyn CampaignSource>,
        queue: Arc<dyn Queue>,
        metadata: Arc<dyn MetadataStore>,
        wallet: Arc<Wallet>,
        config: WorkerConfig,
    ) -> Worker {
        Worker {
            campaigns,
            queue,
            metadata,
            wallet,
            config,
            reaper: None,
            protection: None,
            guards: None,
            capacity: None,
            metrics: None,
        }
    }

    /// Publishes the worker's data points to `sink`: every committed trajectory, LLM call
    /// (its cost, its error), agent sandbox made, message received (its age) and heartbeat.
    pub fn publishing_metrics(mut self, sink: Arc<dyn MetricSink>) -> Worker {
        self.metrics = Some(sink);
        self
    }

    /// Takes no new work while `capacity` reports pressure (a filling disk): in-flight
    /// rollouts go on, and receiving resumes once there is room again.
    pub fn backing_off_under_pressure(mut self, capacity: Arc<dyn HostCapacity>) -> Worker {
        self.capacity = Some(capacity);
        self
    }

    /// With every heartbeat, counts the live workers of the fleet, so that each model's
    /// `requests_per_minute` holds for the fleet (`guards` are those of the campaigns'
    /// model pools).
    pub fn sharing_model_guards(mut self, guards: ModelGuards) -> Worker {
        self.guards = Some(guards);
        self
    }

    /// Keeps the host out of scale-ins while rollouts run (`protection`), and lets it go
    /// when none does.
    pub fn protecting_from_scale_in(mut self, protection: Arc<dyn ScaleInProtection>) -> Worker {
        self.protection = Some(protection);
        self
    }

    /// With every heartbeat, also remove the sandboxes on this host whose owner's
    /// heartbeat is stale (a worker killed for good, or restarted under a new id).
    pub fn reaping_dead_owners(mut self, sandboxes: Arc<dyn SandboxProvider>) -> Worker {
        self.reaper = Some(sandboxes);
        self
    }
}

impl Shared {
    fn emit(&self, event: WorkerEvent) {
        (self.events)(event);
    }

    fn publish(&self, point: DataPoint) {
        if let Some(sink) = &self.metrics {
            sink.publish(point);
        }
    }

    fn stop_all(&self, reason: String) {
        if let Ok(mut guard) = self.stop_reason.lock()
            && guard.is_none()
        {
            info!(%reason, "campaign stopped accepting work; draining");
            *guard = Some(reason);
        }
        self.stop.cancel();
    }
}
