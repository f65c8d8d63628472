//! The worker loop: receive → (dedupe) → roll out → commit → delete, N at a time.
//!
//! Shared by `synthfleet run` (local queue, stops when drained) and the fleet worker.

use crate::rollout::{Interrupted, RolloutEvent, Rollouts, error_chain};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use synthfleet_core::message::{ResultKey, TaskMessage};
use synthfleet_core::ports::{CommitOutcome, DeadLetter, Delivery, Queue};
use synthfleet_core::trajectory::{ExitStatus, RecordStatus};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Rollouts run at once.
    pub concurrency: usize,
    /// Visibility timeout of a received message; extended by a heartbeat while it runs.
    pub visibility: Duration,
    /// Deliveries before a failing sample is dead-lettered.
    pub max_receives: u32,
    /// First delay before an infrastructure failure is retried (doubles per attempt).
    pub retry_backoff: Duration,
    /// Pause between polls of an empty queue.
    pub idle_poll: Duration,
    /// Return once the queue has nothing visible and nothing in flight.
    pub stop_when_drained: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 2,
            visibility: Duration::from_secs(300),
            max_receives: 3,
            retry_backoff: Duration::from_secs(10),
            idle_poll: Duration::from_millis(500),
            stop_when_drained: true,
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
    /// The campaign stopped accepting work (budget exhausted, paused).
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
    pub interrupted: bool,
    /// Set when the campaign stopped accepting work.
    pub stop_reason: Option<String>,
}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
}

pub type EventSink = Arc<dyn Fn(WorkerEvent) + Send + Sync>;

pub struct Worker {
    rollouts: Arc<Rollouts>,
    queue: Arc<dyn Queue>,
    config: WorkerConfig,
}

struct Slot {
    rollouts: Arc<Rollouts>,
    queue: Arc<dyn Queue>,
    config: WorkerConfig,
    events: EventSink,
    counters: Arc<Counters>,
    /// Cancelled on shutdown: in-flight rollouts are interrupted and released.
    cancel: CancellationToken,
    /// Cancelled when the campaign stops accepting work: no new receives.
    drain: CancellationToken,
    stop_reason: Arc<std::sync::Mutex<Option<String>>>,
}

impl Worker {
    pub fn new(rollouts: Arc<Rollouts>, queue: Arc<dyn Queue>, config: WorkerConfig) -> Worker {
        Worker {
            rollouts,
            queue,
            config,
        }
    }

    /// Runs until `cancel` fires, the campaign stops accepting work, or (with
    /// `stop_when_drained`) the queue is empty and idle.
    pub async fn run(&self, cancel: CancellationToken, events: EventSink) -> WorkerSummary {
        let counters = Arc::new(Counters::default());
        let drain = CancellationToken::new();
        let stop_reason = Arc::new(std::sync::Mutex::new(None));
        let mut slots = tokio::task::JoinSet::new();
        for index in 0..self.config.concurrency.max(1) {
            let slot = Slot {
                rollouts: self.rollouts.clone(),
                queue: self.queue.clone(),
                config: self.config.clone(),
                events: events.clone(),
                counters: counters.clone(),
                cancel: cancel.clone(),
                drain: drain.clone(),
                stop_reason: stop_reason.clone(),
            };
            slots.spawn(slot.run().instrument(info_span!("slot", index)));
        }
        while let Some(joined) = slots.join_next().await {
            if let Err(e) = joined {
                error!(error = %e, "a worker slot panicked");
            }
        }
        let stop_reason = stop_reason.lock().map(|g| g.clone()).unwrap_or_default();
        WorkerSummary {
            committed: counters.committed.load(Ordering::Relaxed),
            duplicates: counters.duplicates.load(Ordering::Relaxed),
            retried: counters.retried.load(Ordering::Relaxed),
            dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
            interrupted: cancel.is_cancelled(),
            stop_reason,
        }
    }
}

impl Slot {
    async fn run(self) {
        let campaign = self.rollouts.campaign.name().to_owned();
        loop {
            if self.cancel.is_cancelled() || self.drain.is_cancelled() {
                return;
            }
            match self.rollouts.store.metadata.campaign(&campaign).await {
                Ok(Some(record)) if !record.state.accepts_work() => {
                    let reason = format!(
                        "campaign `{campaign}` is {}{}",
                        record.state.as_str(),
                        record
                            .state_reason
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    );
                    self.stop(reason);
                    return;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %error_chain(&e), "reading the campaign state failed"),
            }
            let deliveries = match self.queue.receive(1, self.config.visibility).await {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %error_chain(&e), "receiving from the queue failed; retrying");
                    self.pause().await;
                    continue;
                }
            };
            if deliveries.is_empty() {
                if self.config.stop_when_drained
                    && let Ok(stats) = self.queue.stats().await
                    && stats.visible == 0
                    && stats.in_flight == 0
                {
                    return;
                }
                self.pause().await;
                continue;
            }
            for delivery in deliveries {
                self.handle(delivery).await;
            }
        }
    }

    async fn pause(&self) {
        tokio::select! {
            _ = tokio::time::sleep(self.config.idle_poll) => {}
            _ = self.cancel.cancelled() => {}
            _ = self.drain.cancelled() => {}
        }
    }

    fn stop(&self, reason: String) {
        if let Ok(mut guard) = self.stop_reason.lock()
            && guard.is_none()
        {
            info!(%reason, "campaign stopped accepting work; draining");
            (self.events)(WorkerEvent::CampaignStopped {
                reason: reason.clone(),
            });
            *guard = Some(reason);
        }
        self.drain.cancel();
    }

    async fn dead_letter(&self, delivery: &Delivery, key: Option<ResultKey>, reason: String) {
        if let Some(key) = &key {
            let letter = DeadLetter {
                key: key.clone(),
                attempts: delivery.receive_count,
                error: reason.clone(),
                at: Utc::now(),
            };
            if let Err(e) = self
                .rollouts
                .store
                .metadata
                .record_dead_letter(&letter)
                .await
            {
                warn!(error = %error_chain(&e), "recording a dead letter failed");
            }
        }
        match self.queue.dead_letter(&delivery.receipt, &reason).await {
            Ok(()) => {
                error!(message = %delivery.message_id, %reason, "message dead-lettered");
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                (self.events)(WorkerEvent::DeadLettered { key, reason });
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
        let campaign = self.rollouts.campaign.name();
        if message.campaign != campaign {
            let reason = format!(
                "message for campaign `{}` reached a worker of `{campaign}`",
                message.campaign
            );
            return self.dead_letter(&delivery, None, reason).await;
        }
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
        let store = &self.rollouts.store;
        if store
            .metadata
            .result(key)
            .await
            .map_err(|e| error_chain(&e))?
            .is_some()
        {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            (self.events)(WorkerEvent::Duplicate { key: key.clone() });
            return self
                .queue
                .delete(&delivery.receipt)
                .await
                .map_err(|e| error_chain(&e));
        }
        (self.events)(WorkerEvent::Started {
            key: key.clone(),
            attempt: delivery.receive_count,
        });
        let heartbeat = {
            let queue = self.queue.clone();
            let receipt = delivery.receipt.clone();
            let visibility = self.config.visibility;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(visibility / 3).await;
                    if let Err(e) = queue.extend(&receipt, visibility).await {
                        warn!(error = %error_chain(&e), "visibility heartbeat failed");
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
        let outcome = self
            .rollouts
            .run(message, delivery.receive_count, &self.cancel, &on_step)
            .await;
        heartbeat.abort();
        let record = match outcome {
            Err(Interrupted) => {
                return self
                    .queue
                    .release(&delivery.receipt, Duration::ZERO)
                    .await
                    .map_err(|e| error_chain(&e));
            }
            Ok(record) => record,
        };
        match record.exit_status.clone() {
            Some(ExitStatus::BudgetExhausted) => {
                self.stop(
                    record
                        .error
                        .clone()
                        .unwrap_or_else(|| "campaign budget exhausted".into()),
                );
                // Not the agent's failure: the sample runs again if the budget is raised.
                self.queue
                    .release(&delivery.receipt, Duration::ZERO)
                    .await
                    .map_err(|e| error_chain(&e))
            }
            Some(status @ ExitStatus::Error(_)) => {
                let error = format!("{status}: {}", record.error.clone().unwrap_or_default());
                if delivery.receive_count >= self.config.max_receives {
                    let reason = format!(
                        "gave up after {} attempts; last error: {error}",
                        delivery.receive_count
                    );
                    self.dead_letter(delivery, Some(key.clone()), reason).await;
                    return Ok(());
                }
                warn!(attempt = delivery.receive_count, %error, "infrastructure failure; the sample will be retried");
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                (self.events)(WorkerEvent::Retrying {
                    key: key.clone(),
                    attempt: delivery.receive_count,
                    error,
                });
                let delay = self.config.retry_backoff
                    * 2u32.saturating_pow(delivery.receive_count.saturating_sub(1));
                self.queue
                    .release(&delivery.receipt, delay.min(Duration::from_secs(900)))
                    .await
                    .map_err(|e| error_chain(&e))
            }
            _ => {
                match store.commit(&record).await.map_err(|e| error_chain(&e))? {
                    CommitOutcome::Committed => {
                        self.counters.committed.fetch_add(1, Ordering::Relaxed);
                        info!(trajectory = %record.trajectory_id, status = record.status().as_str(),
                            exit_status = %record.exit_status.as_ref().map(ToString::to_string).unwrap_or_default(),
                            resolved = ?record.verification.as_ref().map(|v| v.resolved),
                            cost_usd = record.totals.cost_usd, steps = record.totals.n_steps, "trajectory committed");
                        (self.events)(WorkerEvent::Finished {
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
                        (self.events)(WorkerEvent::Duplicate { key: key.clone() });
                    }
                }
                self.queue
                    .delete(&delivery.receipt)
                    .await
                    .map_err(|e| error_chain(&e))
            }
        }
    }
}
