//! The worker loop: receive (in batches, for free slots) → dedupe → roll out → commit →
//! delete, with visibility heartbeats, retries, dead letters and liveness beats.
//!
//! Shared by `synthfleet run` (one campaign, local queue, stops when drained) and
//! `synthfleet worker` (any campaign on the queue, runs until told to stop).

use crate::campaigns::{CampaignSource, ResolveError};
use crate::rollout::{Interrupted, RolloutEvent};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use synthfleet_core::error_chain;
use synthfleet_core::liveness::{self, Reclaim};
use synthfleet_core::message::{ResultKey, TaskMessage};
use synthfleet_core::ports::{
    CommitOutcome, DeadLetter, Delivery, HostCapacity, MetadataStore, Queue, SandboxProvider,
    ScaleInProtection, WorkerHeartbeat,
};
use synthfleet_core::trajectory::{ExitStatus, RecordStatus};
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
            Err(e) => return self.dead_letter(&delivery, None, e.to_string()).await,
        };
        let key = message.result_key();
        let span = info_span!("task", campaign = %key.campaign, instance = %key.instance_id, sample = key.sample_index);
        async {
            if let Err(e) = self.process(&delivery, &message, &key).await {
                // The message stays in flight and is redelivered after its visibility timeout.
                warn!(error = %e, "handling a message failed; it will be redelivered");
            }
        }
        .instrument(span)
        .await;
    }

    async fn process(
        &self,
        delivery: &Delivery,
        message: &TaskMessage,
        key: &ResultKey,
    ) -> Result<(), String> {
        let rollouts = match self.campaigns.rollouts(&key.campaign).await {
            Ok(r) => r,
            Err(ResolveError::Unknown(reason)) => {
                self.dead_letter(delivery, None, reason).await;
                return Ok(());
            }
            Err(ResolveError::Unavailable(reason)) => {
                // This worker cannot serve the campaign now (a key variable it lacks, the
                // store out of reach): the task goes back as it was, costing no attempt,
                // for a worker that can.
                warn!(%reason, "cannot serve the campaign on this worker; the task is handed back");
                return self
                    .queue
                    .defer(delivery, self.config.defer_delay)
                    .await
                    .map_err(|e| error_chain(&e));
            }
        };
        if let Err(reason) = rollouts.campaign.admits(key) {
            self.dead_letter(delivery, None, reason).await;
            return Ok(());
        }
        // Real failures re-send a fresh copy, so a receive count this high means workers
        // kept dying on this message: a poison task, dead-lettered with its record now
        // rather than moved aside silently by the queue's redrive policy.
        if delivery.receive_count >= self.config.max_receives {
            let reason = format!(
                "delivered {} times to workers that never finished it (they crashed, were killed or lost the lease): a poison task?",
                delivery.receive_count
            );
            self.dead_letter(delivery, Some(message), reason).await;
            return Ok(());
        }
        let campaign = self
            .metadata
            .campaign(&key.campaign)
            .await
            .map_err(|e| error_chain(&e))?;
        let Some(campaign) = campaign else {
            let reason = format!(
                "campaign `{}` has no campaign item; submit the campaign first",
                key.campaign
            );
            self.dead_letter(delivery, Some(message), reason).await;
            return Ok(());
        };
        if !campaign.state.accepts_work() {
            let reason = format!(
                "campaign `{}` is {}{}",
                key.campaign,
                campaign.state.as_str(),
                campaign
                    .state_reason
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            return self.defer(delivery, reason).await;
        }
        if self
            .metadata
            .result(key)
            .await
            .map_err(|e| error_chain(&e))?
            .is_some()
        {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            self.emit(WorkerEvent::Duplicate { key: key.clone() });
            return self
                .queue
                .delete(&delivery.receipt)
                .await
                .map_err(|e| error_chain(&e));
        }
        self.emit(WorkerEvent::Started {
            key: key.clone(),
            attempt: message.attempt(),
        });
        // The lease on the message: extended while the rollout runs. Once an extension
        // fails twice in a row the message may already be another worker's, so the rollout
        // stops rather than race a duplicate (the conditional commit would keep one anyway).
        let lease = self.interrupt.child_token();
        let heartbeat = {
            let queue = self.queue.clone();
            let receipt = delivery.receipt.clone();
            let visibility = self.config.visibility;
            let lease = lease.clone();
            tokio::spawn(async move {
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
            })
        };
        let events = self.events.clone();
        let on_step = move |event: RolloutEvent| match event {
            RolloutEvent::Step { key, step, action } => {
                events(WorkerEvent::Step { key, step, action })
            }
        };
        let outcome = rollouts.run(message, &lease, &on_step).await;
        heartbeat.abort();
        let record = match outcome {
            Err(Interrupted) if !self.interrupt.is_cancelled() => {
                // The lease was lost: the message is redelivered when its visibility ends.
                warn!(
                    "the message's lease was lost; the rollout stopped and the sample runs again"
                );
                return Ok(());
            }
            // Stopped by a signal, not by the sample: handed back without costing an attempt.
            Err(Interrupted) => {
                return self
                    .queue
                    .defer(delivery, Duration::ZERO)
                    .await
                    .map_err(|e| error_chain(&e));
            }
            Ok(record) => record,
        };
        match record.exit_status.clone() {
            Some(ExitStatus::BudgetExhausted) => {
                // Not the agent's failure: the sample runs again if the budget is raised.
                let reason = record
                    .error
                    .clone()
                    .unwrap_or_else(|| "campaign budget exhausted".into());
                self.defer(delivery, reason).await
            }
            Some(status @ ExitStatus::Error(_)) => {
                let error = format!("{status}: {}", record.error.clone().unwrap_or_default());
                let attempt = message.attempt();
                if attempt >= self.config.max_attempts {
                    let reason = format!("gave up after {attempt} attempts; last error: {error}");
                    self.dead_letter(delivery, Some(message), reason).await;
                    return Ok(());
                }
                warn!(attempt, %error, "infrastructure failure; the sample will be retried");
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                self.emit(WorkerEvent::Retrying {
                    key: key.clone(),
                    attempt,
                    error,
                });
                let delay = self.config.retry_backoff * 2u32.saturating_pow(attempt - 1);
                self.queue
                    .requeue(
                        delivery,
                        &message.after_failure().to_body(),
                        delay.min(Duration::from_secs(900)),
                    )
                    .await
                    .map_err(|e| error_chain(&e))
            }
            _ => {
                let outcome = rollouts
                    .store
                    .commit(&record)
                    .await
                    .map_err(|e| error_chain(&e))?;
                if let Err(e) = rollouts.store.discard_checkpoints(&record).await {
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
                            key: key.clone(),
                            trajectory_id: record.trajectory_id.clone(),
                            status: record.status(),
                            exit_status: record
                                .exit_status
                                .clone()
                                .unwrap_or(ExitStatus::Submitted),
                            resolved: record.verification.as_ref().map(|v| v.resolved),
                            cost_usd: record.totals.cost_usd,
                        });
                    }
                    CommitOutcome::AlreadyCommitted(_) => {
                        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        self.emit(WorkerEvent::Duplicate { key: key.clone() });
                    }
                }
                self.queue
                    .delete(&delivery.receipt)
                    .await
                    .map_err(|e| error_chain(&e))
            }
        }
    }

    /// Puts a message of a campaign that accepts no work back, without counting an attempt.
    async fn defer(&self, delivery: &Delivery, reason: String) -> Result<(), String> {
        self.counters.deferred.fetch_add(1, Ordering::Relaxed);
        let delay = if self.config.stop_when_campaign_stops {
            Duration::ZERO
        } else {
            self.config.defer_delay
        };
        self.queue
            .defer(delivery, delay)
            .await
            .map_err(|e| error_chain(&e))?;
        self.emit(WorkerEvent::CampaignStopped {
            reason: reason.clone(),
        });
        if self.config.stop_when_campaign_stops {
            self.stop_all(reason);
        }
        Ok(())
    }
}
