//! The worker in its fleet: liveness heartbeats, each model's rate limits and each
//! campaign's budget headroom shared among the live workers, the worker's own budget
//! slices renewed and returned when idle, the sandboxes and budget slices of dead workers
//! reclaimed, the ledgers audited, and the host kept out of scale-ins while rollouts run
//! (counted by an [`InFlight`] guard).

use super::Shared;
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use synthfleet_core::error_chain;
use synthfleet_core::liveness::{self, Reclaim};
use synthfleet_core::metrics::{DataPoint, Metric};
use synthfleet_core::ports::WorkerHeartbeat;
use synthfleet_llm::ModelGuards;
use tracing::{debug, info, warn};

/// How often a busy worker asks again for scale-in protection that expires.
const PROTECTION_RENEWAL: Duration = Duration::from_secs(30 * 60);

/// One rollout in flight: counted in on creation, out on drop (a panic or a cancelled
/// future included), each marking the worker active; the last one out wakes the heartbeat.
pub(super) struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    pub(super) fn enter(shared: &'a Shared) -> InFlight<'a> {
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

pub(super) async fn heartbeats(shared: Arc<Shared>) {
    let mut beats_sent: u64 = 0;
    loop {
        shared.beat().await;
        shared.publish(DataPoint::now(Metric::WorkerHeartbeat, None, 1.0));
        // One read of the fleet's heartbeats serves the shares and the reaper.
        let mut live = 1;
        if let Some(beats) = shared.fleet_heartbeats().await {
            live = shared.count_live_workers(&beats);
            shared.reap_dead_owners(&beats).await;
        }
        shared.wallet.housekeep().await;
        if reconciles_now(&shared.config.worker_id, beats_sent, live) {
            shared.reclaim_stale_leases().await;
            shared.audit_ledgers().await;
        }
        beats_sent += 1;
        shared.guard_scale_in().await;
        tokio::select! {
            _ = tokio::time::sleep(shared.config.heartbeat_every) => {}
            _ = shared.went_idle.notified() => {}
        }
    }
}

/// Whether this beat is the worker's turn to reconcile the ledgers (reclaim the slices of
/// the dead, audit `reserved`): one beat in `live`, at an offset of its own (from its id),
/// so the fleet reconciles about once per heartbeat interval however many workers it has,
/// and the campaign items are read for it that often, not once per worker.
fn reconciles_now(worker_id: &str, beat: u64, live: usize) -> bool {
    let live = live.max(1) as u64;
    let offset = worker_id
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    beat.wrapping_add(offset).is_multiple_of(live)
}

impl Shared {
    /// Protects the host from a scale-in while rollouts run, and lifts the protection once
    /// none does (on each rollout's start and with every heartbeat). Protection that
    /// expires (an ECS task's) is asked for again every [`PROTECTION_RENEWAL`] while busy.
    pub(super) async fn guard_scale_in(&self) {
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

    /// Reclaims the budget slices of dead workers and those nobody renews any more (the
    /// fleet's reconciler: the workers run it in turn with their heartbeat; idempotent).
    async fn reclaim_stale_leases(&self) {
        match liveness::reclaim_leases(self.metadata.as_ref(), Reclaim::Stale(Utc::now())).await {
            Ok(reclaimed) => {
                for lease in reclaimed {
                    info!(campaign = %lease.campaign, owner = %lease.owner, amount = %lease.amount, "reclaimed the budget slice of a dead holder, booked at its full amount");
                }
            }
            Err(e) => warn!(error = %error_chain(&e), "reclaiming stale budget leases failed"),
        }
    }

    /// Checks that every campaign's `reserved` is what its leases hold, and repairs a
    /// difference (booked at its worst case).
    async fn audit_ledgers(&self) {
        match liveness::audit_ledgers(self.metadata.as_ref()).await {
            Ok(repaired) => {
                for r in repaired {
                    warn!(campaign = %r.campaign, reserved = %r.found.reserved, held = %r.found.held, "the budget ledger's reserved amount was not what its leases hold; repaired (a reservation no lease accounts for is booked as spent)");
                }
            }
            Err(e) => warn!(error = %error_chain(&e), "auditing the budget ledgers failed"),
        }
    }

    /// The fleet's heartbeats (`None` when they cannot be read: the shares and the reaper
    /// wait a beat).
    async fn fleet_heartbeats(&self) -> Option<Vec<WorkerHeartbeat>> {
        match self.metadata.heartbeats().await {
            Ok(beats) => Some(beats),
            Err(e) => {
                warn!(error = %error_chain(&e), "reading the fleet's heartbeats failed; rate-limit shares, budget shares and dead workers' sandboxes wait for the next beat");
                None
            }
        }
    }

    /// Shares the models' rate limits and the campaigns' budget headroom among the workers
    /// whose heartbeat is fresh; returns how many there are.
    fn count_live_workers(&self, beats: &[WorkerHeartbeat]) -> usize {
        let now = Utc::now();
        let live = beats.iter().filter(|b| !liveness::is_stale(b, now)).count();
        self.wallet.set_holders(live);
        if let Some(guards) = &self.guards {
            if u32::try_from(live).ok() != Some(guards.workers()) {
                info!(
                    live,
                    "live workers changed: each paces its calls at its share of every rate limit"
                );
            }
            guards.set_workers(live);
        }
        live
    }

    /// Removes the sandboxes on this host of workers whose heartbeat is stale.
    async fn reap_dead_owners(&self, beats: &[WorkerHeartbeat]) {
        let Some(sandboxes) = &self.reaper else {
            return;
        };
        let owners = match sandboxes.owners().await {
            Ok(owners) => owners,
            Err(e) => {
                warn!(error = %error_chain(&e), "looking for sandboxes of dead workers failed");
                return;
            }
        };
        let dead = liveness::dead_owners(
            owners.iter().map(String::as_str),
            beats,
            &self.config.worker_id,
            Utc::now(),
        );
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

    pub(super) async fn beat(&self) {
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
}

#[cfg(test)]
mod tests {
    use crate::testing::{
        self, PanickingSandboxes, RecordedProtection, ScriptedChat, TestBed, task_row,
    };
    use crate::worker::{WorkerConfig, WorkerSummary};
    use std::sync::Arc;
    use std::time::Duration;
    use synthfleet_core::ports::MetadataStore;

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
        // The heartbeat may lift a protection nobody asked for yet, before the handler
        // starts: what counts is that the host was protected, then let go.
        let protected = protection.0.lock().expect("protection log").clone();
        assert!(
            protected.contains(&true),
            "protected while it ran: {protected:?}"
        );
        assert_eq!(protected.last(), Some(&false), "and let go once idle");
    }
}
