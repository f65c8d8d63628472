//! The worker loop: receive (in batches, for free slots) → dedupe → roll out → commit →
//! delete, with visibility heartbeats, retries, dead letters and liveness beats.
//!
//! Shared by `synthfleet run` (one campaign, local queue, stops when drained) and
//! `synthfleet worker` (any campaign on the queue, runs until told to stop).

use crate::campaigns::{CampaignSource, ResolveError};
use crate::rollout::{Interrupted, RolloutEvent, Rollouts};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use synthfleet_core::budget::{CampaignRecord, CampaignState};
use synthfleet_core::error_chain;
use synthfleet_core::liveness::{self, Reclaim};
use synthfleet_core::message::{ResultKey, TaskMessage};
use synthfleet_core::ports::{
    CommitOutcome, DeadLetter, Delivery, HostCapacity, MetadataStore, Queue, SandboxProvider,
    ScaleInProtection, WorkerHeartbeat,
};
use synthfleet_core::trajectory::{ExitStatus, RecordStatus, TrajectoryRecord};
use synthfleet_llm::ModelGuards;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// Most messages one receive asks for (SQS's limit).
const MAX_BATCH: usize = 10;

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
    config: WorkerConfig,
    reaper: Option<Arc<dyn SandboxProvider>>,
    protection: Option<Arc<dyn ScaleInProtection>>,
    guards: Option<ModelGuards>,
    capacity: Option<Arc<dyn HostCapacity>>,
}

/// How often a busy worker asks again for scale-in protection that expires.
const PROTECTION_RENEWAL: Duration = Duration::from_secs(30 * 60);

/// What every in-flight message handler shares.
struct Shared {
    campaigns: Arc<dyn CampaignSource>,
    queue: Arc<dyn Queue>,
    metadata: Arc<dyn MetadataStore>,
    config: WorkerConfig,
    events: EventSink,
    counters: Counters,
    /// Stop receiving; in-flight rollouts finish.
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
}

impl Worker {
    pub fn new(
        campaigns: Arc<dyn CampaignSource>,
        queue: Arc<dyn Queue>,
        metadata: Arc<dyn MetadataStore>,
        config: WorkerConfig,
    ) -> Worker {
        Worker {
            campaigns,
            queue,
            metadata,
            config,
            reaper: None,
            protection: None,
            guards: None,
            capacity: None,
        }
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

    /// Runs until `stop` (no new work; in-flight work finishes) or `interrupt` (in-flight
    /// work is released) fires, or, with `stop_when_drained`, the queue is idle.
    pub async fn run(
        &self,
        stop: CancellationToken,
        interrupt: CancellationToken,
        events: EventSink,
    ) -> WorkerSummary {
        let shared = Arc::new(Shared {
            campaigns: self.campaigns.clone(),
            queue: self.queue.clone(),
            metadata: self.metadata.clone(),
            config: self.config.clone(),
            events,
            counters: Counters::default(),
            stop: stop.child_token(),
            interrupt: interrupt.clone(),
            stop_reason: std::sync::Mutex::new(None),
            last_active: std::sync::Mutex::new(Utc::now()),
            went_idle: tokio::sync::Notify::new(),
            protection: self.protection.clone(),
            protected: tokio::sync::Mutex::new(None),
            reaper: self.reaper.clone(),
            guards: self.guards.clone(),
        });
        let beating = tokio::spawn(heartbeats(shared.clone()));
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut handlers = tokio::task::JoinSet::new();
        loop {
            while let Some(joined) = handlers.try_join_next() {
                if let Err(e) = joined {
                    error!(error = %e, "a message handler panicked");
                }
            }
            let Some(permits) = shared.free_slots(&slots).await else {
                break;
            };
            if let Some(capacity) = &self.capacity
                && let Some(reason) = capacity.pressure().await
            {
                drop(permits);
                warn!(%reason, in_flight = handlers.len(), "taking no new work");
                shared.pause().await;
                continue;
            }
            let received = tokio::select! {
                r = shared.queue.receive(permits.len(), shared.config.visibility) => r,
                _ = shared.stop.cancelled() => break,
                _ = shared.interrupt.cancelled() => break,
            };
            let deliveries = match received {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %error_chain(&e), "receiving from the queue failed; retrying");
                    shared.pause().await;
                    continue;
                }
            };
            if deliveries.is_empty() {
                drop(permits);
                if shared.config.stop_when_drained && handlers.is_empty() && shared.idle().await {
                    break;
                }
                shared.pause().await;
                continue;
            }
            for (delivery, permit) in deliveries.into_iter().zip(permits) {
                let shared = shared.clone();
                handlers.spawn(async move {
                    // Counted out on drop, so a handler that panics is no longer busy.
                    let _busy = InFlight::enter(&shared);
                    shared.guard_scale_in().await;
                    shared.handle(delivery).await;
                    drop(permit);
                });
            }
        }
        while let Some(joined) = handlers.join_next().await {
            if let Err(e) = joined {
                error!(error = %e, "a message handler panicked");
            }
        }
        beating.abort();
        shared.beat().await;
        shared.guard_scale_in().await;
        let c = &shared.counters;
        WorkerSummary {
            committed: c.committed.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            deferred: c.deferred.load(Ordering::Relaxed),
            interrupted: interrupt.is_cancelled(),
            stop_reason: shared
                .stop_reason
                .lock()
                .map(|g| g.clone())
                .unwrap_or_default(),
        }
    }
}

/// One rollout in flight: counted in on creation, out on drop (a panic or a cancelled
/// future included), each marking the worker active; the last one out wakes the heartbeat.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        shared.mark_active();
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        shared.mark_active();
        if shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            shared.went_idle.notify_one();
        }
    }
}

async fn heartbeats(shared: Arc<Shared>) {
    loop {
        shared.beat().await;
        // One read of the fleet's heartbeats serves the rate-limit shares and the reaper.
        if let Some(beats) = shared.fleet_heartbeats().await {
            shared.count_live_workers(&beats);
            shared.reap_dead_owners(&beats).await;
        }
        shared.reclaim_stale_leases().await;
        shared.guard_scale_in().await;
        tokio::select! {
            _ = tokio::time::sleep(shared.config.heartbeat_every) => {}
            _ = shared.went_idle.notified() => {}
        }
    }
}

impl Shared {
    /// Waits for at least one free slot and takes up to a batch of them; `None` on stop.
    async fn free_slots(&self, slots: &Arc<Semaphore>) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.ok()?,
            _ = self.stop.cancelled() => return None,
            _ = self.interrupt.cancelled() => return None,
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        Some(permits)
    }

    async fn idle(&self) -> bool {
        matches!(self.queue.stats().await, Ok(s) if s.visible == 0 && s.in_flight == 0)
    }

    async fn pause(&self) {
        tokio::select! {
            _ = tokio::time::sleep(self.config.idle_poll) => {}
            _ = self.stop.cancelled() => {}
            _ = self.interrupt.cancelled() => {}
        }
    }

    /// Protects the host from a scale-in while rollouts run, and lifts the protection once
    /// none does (on each rollout's start and with every heartbeat). Protection that
    /// expires (an ECS task's) is asked for again every [`PROTECTION_RENEWAL`] while busy.
    async fn guard_scale_in(&self) {
        let Some(protection) = &self.protection else {
            return;
        };
        let mut state = self.protected.lock().await;
        let busy = self.counters.in_flight.load(Ordering::Relaxed) > 0;
        let fresh = |(set, at): (bool, tokio::time::Instant)| {
            set == busy && (!busy || at.elapsed() < PROTECTION_RENEWAL)
        };
        if state.is_some_and(fresh) {
            return;
        }
        match protection.set_protected(busy).await {
            Ok(()) => {
                *state = Some((busy, tokio::time::Instant::now()));
                debug!(protected = busy, "scale-in protection set");
            }
            Err(e) => warn!(error = %error_chain(&e), "setting scale-in protection failed"),
        }
    }

    /// Reclaims the budget leases of dead workers and of calls that stopped renewing them
    /// (the fleet's reconciler: every worker runs it with its heartbeat; it is idempotent).
    async fn reclaim_stale_leases(&self) {
        match liveness::reclaim_leases(self.metadata.as_ref(), Reclaim::Stale(Utc::now())).await {
            Ok(reclaimed) => {
                for lease in reclaimed {
                    info!(campaign = %lease.campaign, owner = %lease.owner, amount = %lease.amount, "reclaimed the budget lease of a dead call, booked at its worst case");
                }
            }
            Err(e) => warn!(error = %error_chain(&e), "reclaiming stale budget leases failed"),
        }
    }

    /// The fleet's heartbeats, when this worker shares rate limits or reaps sandboxes of
    /// dead workers (`None` otherwise, or when they cannot be read: both wait a beat).
    async fn fleet_heartbeats(&self) -> Option<Vec<WorkerHeartbeat>> {
        if self.guards.is_none() && self.reaper.is_none() {
            return None;
        }
        match self.metadata.heartbeats().await {
            Ok(beats) => Some(beats),
            Err(e) => {
                warn!(error = %error_chain(&e), "reading the fleet's heartbeats failed; rate-limit shares and dead workers' sandboxes wait for the next beat");
                None
            }
        }
    }

    /// Shares the models' rate limits among the workers whose heartbeat is fresh.
    fn count_live_workers(&self, beats: &[WorkerHeartbeat]) {
        let Some(guards) = &self.guards else {
            return;
        };
        let now = Utc::now();
        let live = beats.iter().filter(|b| !liveness::is_stale(b, now)).count();
        if u32::try_from(live).ok() != Some(guards.workers()) {
            info!(
                live,
                "live workers changed: each paces its calls at its share of every rate limit"
            );
        }
        guards.set_workers(live);
    }

    /// Removes the sandboxes on this host of workers whose heartbeat is stale.
    async fn reap_dead_owners(&self, beats: &[WorkerHeartbeat]) {
        let Some(sandboxes) = &self.reaper else {
            return;
        };
        let found = async {
            let owners = sandboxes.owners().await.map_err(|e| error_chain(&e))?;
            Ok::<_, String>(liveness::dead_owners(
                owners.iter().map(String::as_str),
                beats,
                &self.config.worker_id,
                Utc::now(),
            ))
        };
        let dead = match found.await {
            Ok(dead) => dead,
            Err(error) => {
                warn!(%error, "looking for sandboxes of dead workers failed");
                return;
            }
        };
        for owner in dead {
            match sandboxes.reap_owner(&owner).await {
                Ok(n) => {
                    info!(owner = %owner, removed = n, "removed the sandboxes of a dead worker")
                }
                Err(e) => {
                    warn!(owner = %owner, error = %error_chain(&e), "removing a dead worker's sandboxes failed")
                }
            }
        }
    }

    /// Marks the worker active now (a rollout started or ended).
    fn mark_active(&self) {
        if let Ok(mut last) = self.last_active.lock() {
            *last = Utc::now();
        }
    }

    async fn beat(&self) {
        let now = Utc::now();
        let in_flight = self.counters.in_flight.load(Ordering::Relaxed);
        if in_flight > 0 {
            self.mark_active();
        }
        let last_active = Some(self.last_active.lock().map_or(now, |last| *last));
        let beat = WorkerHeartbeat {
            worker_id: self.config.worker_id.clone(),
            at: now,
            last_active,
            open_breakers: self
                .guards
                .as_ref()
                .map(ModelGuards::open_breakers)
                .unwrap_or_default(),
            in_flight,
            completed: self.counters.committed.load(Ordering::Relaxed),
            version: crate::SCAFFOLD_VERSION.to_owned(),
            interval_s: self.config.heartbeat_every.as_secs().max(1),
        };
        if let Err(e) = self.metadata.heartbeat(&beat).await {
            warn!(error = %error_chain(&e), "writing the liveness heartbeat failed");
        }
    }

    fn emit(&self, event: WorkerEvent) {
        (self.events)(event);
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

    /// Dead-letters a delivery; for a task message of the campaign, with its record.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        message: Option<&TaskMessage>,
        reason: String,
    ) {
        let key = message.map(TaskMessage::result_key);
        if let Some(message) = message {
            let letter = DeadLetter::of(message, message.attempt(), &reason);
            if let Err(e) = self.metadata.record_dead_letter(&letter).await {
                warn!(error = %error_chain(&e), "recording a dead letter failed");
            }
        }
        match self.queue.dead_letter(delivery, &reason).await {
            Ok(()) => {
                error!(message = %delivery.message_id, %reason, "message dead-lettered");
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.emit(WorkerEvent::DeadLettered { key, reason });
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "dead-lettering failed; the queue's redrive policy will")
            }
        }
    }

    async fn handle(&self, delivery: Delivery) {
        let message = match TaskMessage::parse(&delivery.body) {
            Ok(m) => m,
            // A body that is no task message names no sample to record.
            Err(e) => return self.dead_letter(&delivery, None, e.to_string()).await,
        };
        let key = message.result_key();
        let span = info_span!("task", campaign = %key.campaign, instance = %key.instance_id, sample = key.sample_index);
        async {
            let settled = match self.decide(&delivery, &message).await {
                Ok(fate) => self.apply(&delivery, &message, fate).await,
                Err(e) => Err(e),
            };
            if let Err(e) = settled {
                // The message stays in flight and is redelivered after its visibility timeout.
                warn!(error = %e, "handling a message failed; it will be redelivered");
            }
        }
        .instrument(span)
        .await;
    }

    /// The fate [`disposition`] gives `facts`, once it gives one.
    fn decided(&self, facts: &Facts<'_>) -> Option<Fate> {
        match disposition(facts, &self.config) {
            Disposition::Fate(fate) => Some(fate),
            Disposition::Next | Disposition::Commit => None,
        }
    }

    /// Learns what the fate of `message` depends on, in the order [`disposition`] asks for
    /// it — its campaign, the campaign's item, the sample's result, the rollout — and
    /// commits a finished record; returns the fate. `Err`: a store could not be read (the
    /// message stays in flight and is redelivered).
    async fn decide(&self, delivery: &Delivery, message: &TaskMessage) -> Result<Fate, String> {
        let key = message.result_key();
        let mut facts = Facts::new(message, delivery.receive_count);
        let rollouts = match self.campaigns.rollouts(&key.campaign).await {
            Ok(rollouts) => {
                facts.admission = Some(Admission::of(rollouts.campaign.admits(&key)));
                rollouts
            }
            Err(e) => {
                facts.admission = Some(Admission::from(e));
                return self.decided(&facts).ok_or_else(undecided);
            }
        };
        if let Some(fate) = self.decided(&facts) {
            return Ok(fate);
        }
        let item = self
            .metadata
            .campaign(&key.campaign)
            .await
            .map_err(|e| error_chain(&e))?;
        facts.campaign = Some(Standing::of(item));
        if let Some(fate) = self.decided(&facts) {
            return Ok(fate);
        }
        let result = self
            .metadata
            .result(&key)
            .await
            .map_err(|e| error_chain(&e))?;
        facts.has_result = Some(result.is_some());
        if let Some(fate) = self.decided(&facts) {
            return Ok(fate);
        }
        let outcome = self.roll_out(delivery, message, &rollouts).await;
        facts.rollout = Some(Outcome::of(&outcome, self.interrupt.is_cancelled()));
        match (disposition(&facts, &self.config), outcome) {
            (Disposition::Fate(fate), _) => Ok(fate),
            (Disposition::Commit, Ok(record)) => self.commit(&rollouts, &record).await,
            (Disposition::Commit | Disposition::Next, _) => Err(undecided()),
        }
    }

    /// Runs the rollout of `message` while a heartbeat extends the message's lease. Once an
    /// extension fails twice in a row the message may already be another worker's, so the
    /// rollout stops rather than race a duplicate (the conditional commit would keep one
    /// anyway).
    async fn roll_out(
        &self,
        delivery: &Delivery,
        message: &TaskMessage,
        rollouts: &Rollouts,
    ) -> Result<TrajectoryRecord, Interrupted> {
        self.emit(WorkerEvent::Started {
            key: message.result_key(),
            attempt: message.attempt(),
        });
        let lease = self.interrupt.child_token();
        // Ends with the rollout, however it ends (a panic included).
        let _heartbeat = AbortOnDrop(tokio::spawn(extend_lease(
            self.queue.clone(),
            delivery.receipt.clone(),
            self.config.visibility,
            lease.clone(),
        )));
        let events = self.events.clone();
        let on_step = move |event: RolloutEvent| match event {
            RolloutEvent::Step { key, step, action } => {
                events(WorkerEvent::Step { key, step, action })
            }
        };
        rollouts.run(message, &lease, &on_step).await
    }

    /// Commits a finished record (object, then the conditional metadata item) and removes
    /// the sample's checkpoints; the message is then deleted, as a duplicate when another
    /// attempt committed first.
    async fn commit(&self, rollouts: &Rollouts, record: &TrajectoryRecord) -> Result<Fate, String> {
        let outcome = rollouts
            .store
            .commit(record)
            .await
            .map_err(|e| error_chain(&e))?;
        if let Err(e) = rollouts.store.discard_checkpoints(record).await {
            warn!(error = %error_chain(&e), "removing the sample's checkpoints failed; they expire with the failed records");
        }
        match outcome {
            CommitOutcome::Committed => {
                self.counters.committed.fetch_add(1, Ordering::Relaxed);
                info!(trajectory = %record.trajectory_id, status = record.status().as_str(),
                    exit_status = %record.exit_status.as_ref().map(ToString::to_string).unwrap_or_default(),
                    resolved = ?record.verification.as_ref().map(|v| v.resolved),
                    cost_usd = record.totals.cost_usd, steps = record.totals.n_steps, "trajectory committed");
                self.emit(WorkerEvent::Finished {
                    key: ResultKey {
                        campaign: record.campaign.clone(),
                        instance_id: record.instance_id.clone(),
                        sample_index: record.sample_index,
                    },
                    trajectory_id: record.trajectory_id.clone(),
                    status: record.status(),
                    exit_status: record.exit_status.clone().unwrap_or(ExitStatus::Submitted),
                    resolved: record.verification.as_ref().map(|v| v.resolved),
                    cost_usd: record.totals.cost_usd,
                });
                Ok(Fate::Delete { duplicate: false })
            }
            CommitOutcome::AlreadyCommitted(_) => Ok(Fate::Delete { duplicate: true }),
        }
    }

    /// Carries out a delivery's fate on the queue (and the metadata store, for a dead
    /// letter), counting it and telling the event sink.
    async fn apply(
        &self,
        delivery: &Delivery,
        message: &TaskMessage,
        fate: Fate,
    ) -> Result<(), String> {
        match fate {
            Fate::DeadLetter { reason, sample } => {
                self.dead_letter(delivery, sample.then_some(message), reason)
                    .await;
                Ok(())
            }
            Fate::HandBack { reason, delay } => {
                warn!(%reason, "cannot serve the campaign on this worker; the task is handed back");
                self.queue
                    .defer(delivery, delay)
                    .await
                    .map_err(|e| error_chain(&e))
            }
            Fate::Release => self
                .queue
                .defer(delivery, Duration::ZERO)
                .await
                .map_err(|e| error_chain(&e)),
            Fate::Defer {
                reason,
                delay,
                stop_worker,
            } => {
                self.counters.deferred.fetch_add(1, Ordering::Relaxed);
                self.queue
                    .defer(delivery, delay)
                    .await
                    .map_err(|e| error_chain(&e))?;
                self.emit(WorkerEvent::CampaignStopped {
                    reason: reason.clone(),
                });
                if stop_worker {
                    self.stop_all(reason);
                }
                Ok(())
            }
            Fate::Retry {
                attempt,
                error,
                delay,
            } => {
                warn!(attempt, %error, "infrastructure failure; the sample will be retried");
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                self.emit(WorkerEvent::Retrying {
                    key: message.result_key(),
                    attempt,
                    error,
                });
                self.queue
                    .requeue(delivery, &message.after_failure().to_body(), delay)
                    .await
                    .map_err(|e| error_chain(&e))
            }
            Fate::Leave => {
                warn!(
                    "the message's lease was lost; the rollout stopped and the sample runs again"
                );
                Ok(())
            }
            Fate::Delete { duplicate } => {
                if duplicate {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    self.emit(WorkerEvent::Duplicate {
                        key: message.result_key(),
                    });
                }
                self.queue
                    .delete(&delivery.receipt)
                    .await
                    .map_err(|e| error_chain(&e))
            }
        }
    }
}

/// Extends the visibility of the message `receipt` names every third of `visibility`;
/// after two failures in a row, cancels `lease` and ends.
async fn extend_lease(
    queue: Arc<dyn Queue>,
    receipt: String,
    visibility: Duration,
    lease: CancellationToken,
) {
    let mut failures = 0;
    loop {
        tokio::time::sleep(visibility / 3).await;
        match queue.extend(&receipt, visibility).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                warn!(error = %error_chain(&e), failures, "visibility heartbeat failed");
                if failures >= 2 {
                    lease.cancel();
                    return;
                }
            }
        }
    }
}

/// A background task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a fate that was never decided leaves behind (a bug: [`disposition`] decides on
/// every finished rollout).
fn undecided() -> String {
    "no fate was decided for the message on what is known of it (a bug in `worker::disposition`); it stays in flight and is redelivered".into()
}

// ---------------------------------------------------------------------------------------
// A message's fate, decided without I/O

/// The longest a retry is delayed (SQS's longest message delay).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(900);

/// What decides a delivery's fate, in the order it is learned: each fact is looked up only
/// once those before it let the message on ([`disposition`] says [`Disposition::Next`]).
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    pub message: &'a TaskMessage,
    /// Deliveries of this message so far (1 on the first).
    pub receive_count: u32,
    /// Whether the message's campaign was found and owns the sample.
    pub admission: Option<Admission>,
    /// The campaign's item: its state, or none.
    pub campaign: Option<Standing>,
    /// Whether the sample has a committed result already.
    pub has_result: Option<bool>,
    /// How its rollout ended.
    pub rollout: Option<Outcome>,
}

impl<'a> Facts<'a> {
    /// A delivery of `message`, nothing looked up yet.
    pub fn new(message: &'a TaskMessage, receive_count: u32) -> Facts<'a> {
        Facts {
            message,
            receive_count,
            admission: None,
            campaign: None,
            has_result: None,
            rollout: None,
        }
    }
}

/// Whether a worker can run the message's sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The campaign is known and the sample is one of its own.
    Admitted,
    /// No worker can: the campaign is unknown or invalid, or the sample is not one of its.
    Refused(String),
    /// This worker cannot now (a key variable it lacks, the store out of reach); another
    /// worker, or this one later, may.
    Unavailable(String),
}

impl Admission {
    /// What [`Campaign::admits`](synthfleet_core::campaign::Campaign::admits) said.
    pub fn of(admits: Result<(), String>) -> Admission {
        match admits {
            Ok(()) => Admission::Admitted,
            Err(reason) => Admission::Refused(reason),
        }
    }
}

impl From<ResolveError> for Admission {
    fn from(e: ResolveError) -> Admission {
        match e {
            ResolveError::Unknown(reason) => Admission::Refused(reason),
            ResolveError::Unavailable(reason) => Admission::Unavailable(reason),
        }
    }
}

/// What the campaign's item says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// There is none: the campaign was never submitted.
    Missing,
    /// The campaign's state, and why it is in it.
    Is {
        state: CampaignState,
        reason: Option<String>,
    },
}

impl Standing {
    pub fn of(item: Option<CampaignRecord>) -> Standing {
        match item {
            None => Standing::Missing,
            Some(record) => Standing::Is {
                state: record.state,
                reason: record.state_reason,
            },
        }
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Cut off before its record was finished: by the worker's interrupt (`signalled`), or
    /// else because the message's lease could not be extended.
    Stopped { signalled: bool },
    /// With a finished record of this exit status and error.
    Finished {
        exit_status: Option<ExitStatus>,
        error: Option<String>,
    },
}

impl Outcome {
    /// The outcome of `run`, whose cut-off came from a signal when `interrupted`.
    pub fn of(run: &Result<TrajectoryRecord, Interrupted>, interrupted: bool) -> Outcome {
        match run {
            Err(Interrupted) => Outcome::Stopped {
                signalled: interrupted,
            },
            Ok(record) => Outcome::Finished {
                exit_status: record.exit_status.clone(),
                error: record.error.clone(),
            },
        }
    }
}

/// What [`disposition`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Nothing yet: learn the next fact (with every fact before the rollout known: run it).
    Next,
    /// A finished record: commit it; the message is then deleted.
    Commit,
    Fate(Fate),
}

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// To the dead-letter queue with `reason`; with `sample`, recorded as the sample's dead
    /// letter too (counted, so the campaign can finish).
    DeadLetter { reason: String, sample: bool },
    /// Back as it was after `delay`, costing no attempt, for a worker that can serve the
    /// campaign (this one cannot now, for `reason`).
    HandBack { reason: String, delay: Duration },
    /// Back as it was at once, costing no attempt: a signal stopped the rollout.
    Release,
    /// Back as it was after `delay`, costing no attempt: the campaign accepts no work now
    /// (paused, exhausted, or the budget refused a call), for `reason`. With `stop_worker`
    /// the worker stops taking work (the local runner).
    Defer {
        reason: String,
        delay: Duration,
        stop_worker: bool,
    },
    /// Attempt `attempt` failed on the infrastructure with `error`: a fresh copy carrying
    /// one more failure, visible after `delay`.
    Retry {
        attempt: u32,
        error: String,
        delay: Duration,
    },
    /// Left in flight, to be redelivered when its visibility ends: the lease was lost.
    Leave,
    /// Deleted: the sample has its result (this delivery's, or another's when `duplicate`).
    Delete { duplicate: bool },
}

/// A delivery's fate from the facts known so far, or [`Disposition::Next`] while it needs
/// the next one. The rules, in order:
///
/// * a message whose campaign no worker can run, or that is no sample of its campaign, is
///   dead-lettered; one this worker cannot serve now is handed back after `defer_delay`;
/// * one delivered `max_receives` times is a poison task: dead-lettered with its record;
/// * one of a campaign without an item is dead-lettered with its record; one of a campaign
///   that accepts no work is deferred;
/// * one whose sample has a result is a duplicate: deleted;
/// * after the rollout: a lost lease leaves the message, a signal releases it, a budget
///   refusal defers it, an infrastructure error retries it with exponential backoff until
///   `max_attempts` attempts failed and then dead-letters it; any other record is committed.
pub(crate) fn disposition(facts: &Facts<'_>, config: &WorkerConfig) -> Disposition {
    let message = facts.message;
    let dead =
        |reason: String, sample: bool| Disposition::Fate(Fate::DeadLetter { reason, sample });
    let defer = |reason: String| {
        Disposition::Fate(Fate::Defer {
            reason,
            delay: if config.stop_when_campaign_stops {
                Duration::ZERO
            } else {
                config.defer_delay
            },
            stop_worker: config.stop_when_campaign_stops,
        })
    };
    match &facts.admission {
        None => return Disposition::Next,
        Some(Admission::Refused(reason)) => return dead(reason.clone(), false),
        Some(Admission::Unavailable(reason)) => {
            return Disposition::Fate(Fate::HandBack {
                reason: reason.clone(),
                delay: config.defer_delay,
            });
        }
        Some(Admission::Admitted) => {}
    }
    // Real failures re-send a fresh copy, so a receive count this high means workers kept
    // dying on this message: a poison task, dead-lettered with its record now rather than
    // moved aside silently by the queue's redrive policy.
    if facts.receive_count >= config.max_receives {
        return dead(
            format!(
                "delivered {} times to workers that never finished it (they crashed, were killed or lost the lease): a poison task?",
                facts.receive_count
            ),
            true,
        );
    }
    let (state, reason) = match &facts.campaign {
        None => return Disposition::Next,
        Some(Standing::Missing) => {
            return dead(
                format!(
                    "campaign `{}` has no campaign item; submit the campaign first",
                    message.campaign
                ),
                true,
            );
        }
        Some(Standing::Is { state, reason }) => (*state, reason),
    };
    if !state.accepts_work() {
        return defer(format!(
            "campaign `{}` is {}{}",
            message.campaign,
            state.as_str(),
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    match facts.has_result {
        None => return Disposition::Next,
        Some(true) => return Disposition::Fate(Fate::Delete { duplicate: true }),
        Some(false) => {}
    }
    let (exit_status, error) = match &facts.rollout {
        None => return Disposition::Next,
        Some(Outcome::Stopped { signalled: false }) => return Disposition::Fate(Fate::Leave),
        // Stopped by a signal, not by the sample: handed back without costing an attempt.
        Some(Outcome::Stopped { signalled: true }) => return Disposition::Fate(Fate::Release),
        Some(Outcome::Finished { exit_status, error }) => (exit_status, error),
    };
    match exit_status {
        // Not the agent's failure: the sample runs again if the budget is raised.
        Some(ExitStatus::BudgetExhausted) => defer(
            error
                .clone()
                .unwrap_or_else(|| "campaign budget exhausted".into()),
        ),
        Some(status @ ExitStatus::Error(_)) => {
            let error = format!("{status}: {}", error.as_deref().unwrap_or_default());
            let attempt = message.attempt();
            if attempt >= config.max_attempts {
                dead(
                    format!("gave up after {attempt} attempts; last error: {error}"),
                    true,
                )
            } else {
                Disposition::Fate(Fate::Retry {
                    attempt,
                    error,
                    delay: retry_delay(config.retry_backoff, attempt),
                })
            }
        }
        _ => Disposition::Commit,
    }
}

/// The delay before attempt `attempt + 1`: `backoff`, doubled per failed attempt, at most
/// [`MAX_RETRY_DELAY`].
pub(crate) fn retry_delay(backoff: Duration, attempt: u32) -> Duration {
    backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        self, CAMPAIGN, MemorySandboxes, PATCH, PanickingSandboxes, RecordedProtection,
        START_COMMIT, ScriptedChat, TestBed, task_row,
    };
    use synthfleet_core::task::parse_tasks;
    use synthfleet_core::trajectory::ErrorKind;

    fn message(failures: u32) -> TaskMessage {
        let task = parse_tasks(std::path::Path::new("t.jsonl"), &task_row("t1"))
            .expect("task")
            .remove(0);
        TaskMessage {
            failures,
            ..TaskMessage::new("demo", &task, 0)
        }
    }

    fn running() -> Standing {
        Standing::Is {
            state: CampaignState::Running,
            reason: None,
        }
    }

    fn finished(exit_status: ExitStatus, error: Option<&str>) -> Outcome {
        Outcome::Finished {
            exit_status: Some(exit_status),
            error: error.map(str::to_owned),
        }
    }

    fn dead(reason: &str, sample: bool) -> Disposition {
        Disposition::Fate(Fate::DeadLetter {
            reason: reason.into(),
            sample,
        })
    }

    /// Every rule of [`disposition`], in the order the worker learns the facts.
    #[test]
    fn each_message_meets_the_fate_its_facts_decide() {
        let config = WorkerConfig {
            max_attempts: 3,
            max_receives: 5,
            retry_backoff: Duration::from_secs(10),
            defer_delay: Duration::from_secs(300),
            stop_when_campaign_stops: false,
            ..WorkerConfig::default()
        };
        let local = WorkerConfig {
            stop_when_campaign_stops: true,
            ..config.clone()
        };
        let first = message(0);
        let last = message(2);
        // Each row: what is known (the facts before it being those that let the message
        // on), the configuration, and the decision.
        struct Row<'a> {
            what: &'a str,
            facts: Facts<'a>,
            config: &'a WorkerConfig,
            expected: Disposition,
        }
        let facts = |message: &'static TaskMessage| Facts::new(message, 1);
        // Leaked so that rows can borrow them for the whole table.
        let first: &'static TaskMessage = Box::leak(Box::new(first));
        let last: &'static TaskMessage = Box::leak(Box::new(last));
        let admitted = |message| Facts {
            admission: Some(Admission::Admitted),
            ..facts(message)
        };
        let standing = |message, standing| Facts {
            campaign: Some(standing),
            ..admitted(message)
        };
        let fresh = |message| Facts {
            has_result: Some(false),
            ..standing(message, running())
        };
        let rolled = |message, outcome| Facts {
            rollout: Some(outcome),
            ..fresh(message)
        };
        let rows = [
            Row {
                what: "first, the campaign is looked up",
                facts: facts(first),
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "a campaign no worker can run",
                facts: Facts {
                    admission: Some(Admission::from(ResolveError::Unknown(
                        "campaign `x` was never submitted".into(),
                    ))),
                    ..facts(first)
                },
                config: &config,
                expected: dead("campaign `x` was never submitted", false),
            },
            Row {
                what: "a sample that is not the campaign's",
                facts: Facts {
                    admission: Some(Admission::of(Err("sample 9 is outside".into()))),
                    ..facts(first)
                },
                config: &config,
                expected: dead("sample 9 is outside", false),
            },
            Row {
                what: "a campaign this worker cannot serve now",
                facts: Facts {
                    admission: Some(Admission::from(ResolveError::Unavailable(
                        "KEY is not set".into(),
                    ))),
                    ..facts(first)
                },
                config: &config,
                expected: Disposition::Fate(Fate::HandBack {
                    reason: "KEY is not set".into(),
                    delay: Duration::from_secs(300),
                }),
            },
            Row {
                what: "admitted: the campaign's item is looked up",
                facts: admitted(first),
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "delivered max_receives times: a poison task",
                facts: Facts {
                    receive_count: 5,
                    ..admitted(first)
                },
                config: &config,
                expected: dead(
                    "delivered 5 times to workers that never finished it (they crashed, were killed or lost the lease): a poison task?",
                    true,
                ),
            },
            Row {
                what: "one delivery short of max_receives",
                facts: Facts {
                    receive_count: 4,
                    ..admitted(first)
                },
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "a campaign without an item",
                facts: standing(first, Standing::Missing),
                config: &config,
                expected: dead(
                    "campaign `demo` has no campaign item; submit the campaign first",
                    true,
                ),
            },
            Row {
                what: "a paused campaign, on a fleet worker",
                facts: standing(
                    first,
                    Standing::Is {
                        state: CampaignState::Paused,
                        reason: Some("by alice".into()),
                    },
                ),
                config: &config,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "campaign `demo` is paused: by alice".into(),
                    delay: Duration::from_secs(300),
                    stop_worker: false,
                }),
            },
            Row {
                what: "an exhausted campaign, on the local runner",
                facts: standing(
                    first,
                    Standing::Is {
                        state: CampaignState::Exhausted,
                        reason: None,
                    },
                ),
                config: &local,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "campaign `demo` is exhausted".into(),
                    delay: Duration::ZERO,
                    stop_worker: true,
                }),
            },
            Row {
                what: "a done campaign",
                facts: standing(
                    first,
                    Standing::Is {
                        state: CampaignState::Done,
                        reason: None,
                    },
                ),
                config: &config,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "campaign `demo` is done".into(),
                    delay: Duration::from_secs(300),
                    stop_worker: false,
                }),
            },
            Row {
                what: "a running campaign: whether the sample has a result is looked up",
                facts: standing(first, running()),
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "a sample with a result: a duplicate delivery",
                facts: Facts {
                    has_result: Some(true),
                    ..standing(first, running())
                },
                config: &config,
                expected: Disposition::Fate(Fate::Delete { duplicate: true }),
            },
            Row {
                what: "a sample without one: the rollout runs",
                facts: fresh(first),
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "the lease was lost",
                facts: rolled(first, Outcome::Stopped { signalled: false }),
                config: &config,
                expected: Disposition::Fate(Fate::Leave),
            },
            Row {
                what: "a signal stopped the rollout",
                facts: rolled(first, Outcome::Stopped { signalled: true }),
                config: &config,
                expected: Disposition::Fate(Fate::Release),
            },
            Row {
                what: "the budget refused a call",
                facts: rolled(
                    first,
                    finished(ExitStatus::BudgetExhausted, Some("budget of $1 reached")),
                ),
                config: &config,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "budget of $1 reached".into(),
                    delay: Duration::from_secs(300),
                    stop_worker: false,
                }),
            },
            Row {
                what: "the budget refused a call, no reason given",
                facts: rolled(first, finished(ExitStatus::BudgetExhausted, None)),
                config: &local,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "campaign budget exhausted".into(),
                    delay: Duration::ZERO,
                    stop_worker: true,
                }),
            },
            Row {
                what: "an infrastructure error on the first attempt",
                facts: rolled(
                    first,
                    finished(ExitStatus::Error(ErrorKind::Sandbox), Some("docker died")),
                ),
                config: &config,
                expected: Disposition::Fate(Fate::Retry {
                    attempt: 1,
                    error: "error:sandbox: docker died".into(),
                    delay: Duration::from_secs(10),
                }),
            },
            Row {
                what: "an infrastructure error on the last attempt",
                facts: rolled(
                    last,
                    finished(ExitStatus::Error(ErrorKind::LlmUnavailable), Some("503")),
                ),
                config: &config,
                expected: dead(
                    "gave up after 3 attempts; last error: error:llm_unavailable: 503",
                    true,
                ),
            },
            Row {
                what: "a submitted record",
                facts: rolled(first, finished(ExitStatus::Submitted, None)),
                config: &config,
                expected: Disposition::Commit,
            },
            Row {
                what: "the agent's own limits are outcomes, committed",
                facts: rolled(first, finished(ExitStatus::Timeout, None)),
                config: &config,
                expected: Disposition::Commit,
            },
            Row {
                what: "a context overflow is an outcome, not an infrastructure error",
                facts: rolled(
                    first,
                    finished(ExitStatus::ContextExceeded, Some("too long")),
                ),
                config: &config,
                expected: Disposition::Commit,
            },
        ];
        for row in rows {
            assert_eq!(
                disposition(&row.facts, row.config),
                row.expected,
                "{}",
                row.what
            );
        }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_sqs_longest_delay() {
        let backoff = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=8)
            .map(|attempt| retry_delay(backoff, attempt).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 900]);
        assert_eq!(retry_delay(Duration::ZERO, 3), Duration::ZERO);
        assert_eq!(retry_delay(Duration::MAX, u32::MAX), MAX_RETRY_DELAY);
    }

    #[tokio::test]
    async fn a_worker_rolls_out_every_message_and_commits_its_record() {
        let bed = TestBed::submitted(&[task_row("t1"), task_row("t2")], 2).await;
        let sandboxes = MemorySandboxes::new();
        let rollouts = bed.rollouts(
            ScriptedChat::running(&["ls", "echo fixed > fix.txt"]),
            Arc::new(sandboxes.clone()),
        );
        let worker = bed.worker(rollouts, testing::config());
        let (summary, events) = bed.run(&worker).await;

        assert_eq!(
            summary,
            WorkerSummary {
                committed: 4,
                ..WorkerSummary::default()
            }
        );
        let metas = bed.metadata.trajectories(CAMPAIGN).await.expect("records");
        assert_eq!(metas.len(), 4);
        for meta in &metas {
            let record = bed.store.load(meta).await.expect("a committed record");
            assert_eq!(record.exit_status, Some(ExitStatus::Submitted));
            assert_eq!(record.patch, PATCH);
            assert_eq!(
                record.environment.and_then(|e| e.start_commit).as_deref(),
                Some(START_COMMIT)
            );
            let actions: Vec<_> = record.steps.iter().map(|s| s.action.as_deref()).collect();
            assert_eq!(
                actions,
                [Some("ls"), Some("echo fixed > fix.txt"), None],
                "two commands, then submit"
            );
            assert_eq!((record.totals.n_steps, record.totals.llm_calls), (3, 3));
            assert_eq!(record.totals.input_tokens, 300);
            assert!(record.totals.cost_usd > 0.0);
            assert_eq!(record.verification.map(|v| v.resolved), Some(true));
        }
        let spent: f64 = metas.iter().map(|m| m.cost_usd).sum();
        let campaign = bed
            .metadata
            .campaign(CAMPAIGN)
            .await
            .expect("campaign")
            .expect("its item");
        assert!(
            (campaign.ledger.spent.as_usd() - spent).abs() < 1e-9,
            "the ledger books what the records cost"
        );
        assert!(campaign.ledger.reserved.0 == 0, "every lease settled");
        assert_eq!(
            bed.queue.stats().await.expect("stats"),
            Default::default(),
            "every message deleted"
        );
        let log = sandboxes.log();
        assert_eq!(log.created, 8, "an agent's and a verifier's sandbox each");
        assert_eq!(log.destroyed, log.created, "every sandbox removed");
        let finished = events
            .iter()
            .filter(|e| matches!(e, WorkerEvent::Finished { .. }))
            .count();
        assert_eq!(finished, 4);
    }

    #[tokio::test]
    async fn poison_messages_are_dead_lettered_and_the_rest_served() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        let stranger = TaskMessage {
            sample_index: 7,
            ..message(0)
        };
        for body in ["not json".to_owned(), stranger.to_body()] {
            bed.queue.send(&body, Duration::ZERO).await.expect("send");
        }
        let rollouts = bed.rollouts(ScriptedChat::running(&[]), Arc::new(MemorySandboxes::new()));
        let worker = bed.worker(rollouts, testing::config());
        let (summary, events) = bed.run(&worker).await;

        assert_eq!((summary.committed, summary.dead_lettered), (1, 2));
        let mut reasons: Vec<String> = bed
            .queue
            .dead_messages()
            .await
            .expect("dead letters")
            .into_iter()
            .map(|d| d.reason)
            .collect();
        reasons.sort();
        assert!(
            reasons[0].starts_with("message is not a valid task message"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].starts_with("sample 7 of `t1` is outside"),
            "{reasons:?}"
        );
        for event in &events {
            if let WorkerEvent::DeadLettered { key, .. } = event {
                assert_eq!(*key, None, "neither names a sample of the campaign");
            }
        }
    }

    #[tokio::test]
    async fn a_paused_campaigns_message_is_deferred_and_the_local_runner_stops() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        bed.metadata
            .set_state(CAMPAIGN, CampaignState::Paused, Some("by alice".into()))
            .await
            .expect("pause");
        let sandboxes = MemorySandboxes::new();
        let rollouts = bed.rollouts(ScriptedChat::running(&[]), Arc::new(sandboxes.clone()));
        let worker = bed.worker(rollouts, testing::config());
        let (summary, _) = bed.run(&worker).await;

        assert_eq!(
            summary,
            WorkerSummary {
                deferred: 1,
                stop_reason: Some("campaign `demo` is paused: by alice".into()),
                ..WorkerSummary::default()
            }
        );
        let stats = bed.queue.stats().await.expect("stats");
        assert_eq!(sandboxes.log().created, 0, "nothing ran");
        // The message is back, visible at once — unless the receive loop took it again in
        // the instant the stop arrived (a receive that completes as the worker stops is
        // dropped; the delivery comes back after its visibility timeout, or at once when
        // `run` starts again and recovers its predecessor's deliveries).
        assert_eq!(stats.dead, 0);
        assert_eq!(stats.visible + stats.in_flight, 1, "{stats:?}");
        if stats.visible == 1 {
            let again = bed
                .queue
                .receive(1, Duration::from_secs(1))
                .await
                .expect("receive");
            assert_eq!(again[0].receive_count, 1, "a deferral costs no delivery");
        }
    }

    #[tokio::test]
    async fn an_infrastructure_failure_is_retried_with_its_count_then_dead_lettered() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        let sandboxes = MemorySandboxes::new();
        let rollouts = bed.rollouts(ScriptedChat::unavailable(), Arc::new(sandboxes.clone()));
        let worker = bed.worker(rollouts, testing::config());
        let (summary, events) = bed.run(&worker).await;

        assert_eq!(
            summary,
            WorkerSummary {
                retried: 2,
                dead_lettered: 1,
                ..WorkerSummary::default()
            }
        );
        let attempts: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::Started { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(attempts, [1, 2, 3], "each retry carries one more failure");
        let letters = bed.metadata.dead_letters(CAMPAIGN).await.expect("records");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].attempts, 3);
        assert!(
            letters[0]
                .error
                .starts_with("gave up after 3 attempts; last error: error:llm_unavailable"),
            "{}",
            letters[0].error
        );
        let dead = bed.queue.dead_messages().await.expect("dead messages");
        let body = TaskMessage::parse(&dead[0].body).expect("a task message");
        assert_eq!(body.failures, 2, "the dead copy carries its failures");
        assert_eq!(dead[0].receive_count, 1, "each attempt was a fresh copy");
        assert!(
            bed.metadata
                .trajectories(CAMPAIGN)
                .await
                .expect("records")
                .is_empty()
        );
        let log = sandboxes.log();
        assert_eq!(log.destroyed, log.created, "every sandbox removed");
    }

    /// The regression test of the in-flight guard: a handler that panics used to leave
    /// the worker counted busy for good (the scaler never saw it idle, its host stayed
    /// protected from scale-in) and its lease heartbeat running (the message never came back).
    #[tokio::test]
    async fn a_panicking_handler_leaves_the_worker_idle_and_its_message_redelivered() {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        let rollouts = bed.rollouts(ScriptedChat::running(&[]), Arc::new(PanickingSandboxes));
        let protection = Arc::new(RecordedProtection::default());
        let config = WorkerConfig {
            visibility: Duration::from_millis(300),
            max_receives: 2,
            ..testing::config()
        };
        let worker = bed
            .worker(rollouts, config.clone())
            .protecting_from_scale_in(protection.clone());
        let (summary, _) = bed.run(&worker).await;

        // The second delivery found a poison task: the handler never ended its first.
        assert_eq!(
            summary,
            WorkerSummary {
                dead_lettered: 1,
                ..WorkerSummary::default()
            }
        );
        let beats = bed.metadata.heartbeats().await.expect("heartbeats");
        let beat = beats
            .iter()
            .find(|b| b.worker_id == config.worker_id)
            .expect("the worker's heartbeat");
        assert_eq!(beat.in_flight, 0, "the panicked rollout is counted out");
        let protected = protection.0.lock().expect("protection log").clone();
        assert_eq!(protected.first(), Some(&true), "protected while it ran");
        assert_eq!(protected.last(), Some(&false), "and let go once idle");
    }
}
