//! The receive loop: free slots are filled in batches from the queue, each delivery handled
//! on its own task, until a stop, an interrupt, or (with `stop_when_drained`) an idle queue.

use super::fleet::{InFlight, heartbeats};
use super::{Counters, EventSink, Shared, Worker, WorkerSummary};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use synthfleet_core::error_chain;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Most messages one receive asks for (SQS's limit).
const MAX_BATCH: usize = 10;

impl Worker {
    /// Runs until `stop` (no new work; in-flight rollouts are handed back at their next step
    /// boundary, or finish without resume) or `interrupt` (in-flight
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
            wallet: self.wallet.clone(),
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
            metrics: self.metrics.clone(),
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
        // Every rollout ended: the budget slices go back to their campaigns.
        shared.wallet.close().await;
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
}
