//! The metered call: reserve → call → settle, the one budget policy every LLM call of a
//! campaign goes through (a rollout's steps, the judge).
//!
//! * The worst case (prompt estimate plus `max_tokens`) is reserved as a
//!   [`BudgetLease`] before the call; the real cost is booked after it.
//! * `Busy` (other calls hold the rest of the budget) waits, up to a patience the caller
//!   chooses; the wait is the infrastructure's time, reported in [`MeteredCall::waited`].
//! * While the call runs its lease is renewed, so the fleet's reconciler
//!   ([`synthfleet_core::liveness::reclaim_leases`]) only takes leases whose call is over.
//! * A call cut off by a shutdown is booked at its worst case (the provider may bill it);
//!   a call that failed books nothing.
//! * A settle that fails is retried; settling is idempotent, so a retry after a settle
//!   that did apply books nothing twice. One that keeps failing is logged and leaves the
//!   lease to expire and be reclaimed at its worst case: the cap holds either way, and the
//!   call's outcome (a paid reply, a failure, a shutdown) is never replaced by it.

use crate::{ModelPool, PoolCompletion};
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use std::time::Duration;
use synthfleet_core::budget::{BudgetLease, CampaignRecord, Spend};
use synthfleet_core::ports::{ChatRequest, LlmError, MetadataStore, Reservation, StoreError};
use synthfleet_core::{MicroUsd, error_chain};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Pause before asking again for budget held by calls in flight.
const BUSY_WAIT: Duration = Duration::from_millis(250);

/// Who pays for calls, and who holds their leases.
pub struct Meter<'a> {
    pub pool: &'a ModelPool,
    pub metadata: &'a dyn MetadataStore,
    /// The worker (or process) id the leases are held by.
    pub owner: &'a str,
    pub cancel: &'a CancellationToken,
}

/// One call to meter.
pub struct MeteredRequest<'a> {
    pub campaign: &'a str,
    pub spend: Spend,
    /// The primary model (its fallbacks are tried by the pool).
    pub model: &'a str,
    /// The task's scripted actions, for replay models.
    pub replay: &'a [String],
    pub request: &'a ChatRequest,
    /// How long to wait for budget other calls hold before giving up.
    pub busy_patience: Duration,
}

/// How a metered call ended.
pub enum Metered {
    /// Served (maybe by a fallback) and booked at its real cost.
    Completed {
        reply: Box<PoolCompletion>,
        cost: MicroUsd,
    },
    /// The model failed; nothing was booked.
    Failed(LlmError),
    /// The budget refused the call; the campaign as it stands says why.
    Refused(Box<CampaignRecord>),
}

pub struct MeteredCall {
    pub outcome: Metered,
    /// Time spent waiting for budget held by other calls.
    pub waited: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("the worst-case cost of the call could not be computed")]
    Cost(#[source] LlmError),
    #[error(
        "campaign `{campaign}`: calls in flight held the rest of its budget for {}s; they settle or are reclaimed once their owners are gone, then try again",
        waited.as_secs()
    )]
    BudgetHeld { campaign: String, waited: Duration },
    #[error("campaign `{campaign}`: the budget reservation failed")]
    Reserve {
        campaign: String,
        #[source]
        source: StoreError,
    },
    /// Cut off by the cancellation token (a call under way is booked at its worst case).
    #[error("the call was cut off by a shutdown")]
    Interrupted,
}

impl Meter<'_> {
    pub async fn call(&self, call: &MeteredRequest<'_>) -> Result<MeteredCall, MeterError> {
        let amount = self
            .pool
            .worst_case_cost(call.model, call.request)
            .map_err(MeterError::Cost)?;
        let started = Instant::now();
        let mut lease = loop {
            let lease = BudgetLease::new(call.campaign, self.owner, amount, Utc::now());
            let reservation = match self.metadata.reserve(&lease, call.spend).await {
                Ok(reservation) => reservation,
                Err(source) => {
                    // It may have gone through before the error: release it if it did.
                    let _ = self.metadata.settle(&lease, MicroUsd::ZERO).await;
                    return Err(MeterError::Reserve {
                        campaign: call.campaign.to_owned(),
                        source,
                    });
                }
            };
            match reservation {
                Reservation::Granted => break lease,
                Reservation::Refused(record) => {
                    return Ok(MeteredCall {
                        outcome: Metered::Refused(record),
                        waited: started.elapsed(),
                    });
                }
                Reservation::Busy if started.elapsed() > call.busy_patience => {
                    return Err(MeterError::BudgetHeld {
                        campaign: call.campaign.to_owned(),
                        waited: started.elapsed(),
                    });
                }
                Reservation::Busy => tokio::select! {
                    _ = tokio::time::sleep(BUSY_WAIT) => {}
                    _ = self.cancel.cancelled() => return Err(MeterError::Interrupted),
                },
            }
        };
        let waited = started.elapsed();

        let completion = self.pool.complete(call.model, call.replay, call.request);
        tokio::pin!(completion);
        let mut renew_at = Instant::now() + BudgetLease::RENEW_EVERY;
        let reply = loop {
            tokio::select! {
                reply = &mut completion => break reply,
                _ = self.cancel.cancelled() => {
                    self.settle(&lease, lease.amount).await;
                    return Err(MeterError::Interrupted);
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    renew_at += BudgetLease::RENEW_EVERY;
                    lease = lease.renewed(Utc::now());
                    match self.metadata.renew(&lease).await {
                        Ok(true) => {}
                        Ok(false) => warn!(lease = %lease.id, "budget lease was reclaimed while its call ran; it stays booked at its worst case"),
                        Err(e) => warn!(lease = %lease.id, error = %error_chain(&e), "renewing a budget lease failed"),
                    }
                }
            }
        };
        let outcome = match reply {
            Ok(reply) => {
                let cost = reply
                    .served_by
                    .cost(&reply.completion.usage)
                    .saturating_add(reply.fallback_billed);
                self.settle(&lease, cost).await;
                Metered::Completed {
                    reply: Box::new(reply),
                    cost,
                }
            }
            Err(e) => {
                // What the provider billed for answered but broken attempts is spent.
                self.settle(&lease, e.billed()).await;
                Metered::Failed(e)
            }
        };
        Ok(MeteredCall { outcome, waited })
    }

    /// Settles with bounded retries. `false` from the store means the lease was reclaimed
    /// meanwhile (booked at its worst case): nothing more to do. A settle that never goes
    /// through leaves the lease to the reclaimer.
    async fn settle(&self, lease: &BudgetLease, actual: MicroUsd) {
        let settled = (|| self.metadata.settle(lease, actual))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_times(6),
            )
            .notify(|e, after| {
                warn!(lease = %lease.id, error = %error_chain(e), retry_in_ms = after.as_millis() as u64, "settling a call failed; retrying");
            })
            .await;
        if let Err(e) = settled {
            warn!(lease = %lease.id, campaign = %lease.campaign, error = %error_chain(&e), "settling a call kept failing; its lease is reclaimed at its worst case once it expires");
        }
    }
}
