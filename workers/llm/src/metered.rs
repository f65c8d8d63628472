//! The metered call: hold → call → book, the one budget policy every LLM call of a
//! campaign goes through (a rollout's steps, the judge).
//!
//! * The worst case (prompt estimate plus `max_tokens`) is held on one of the process's
//!   budget slices ([`Wallet`]) before the call; the real cost is booked after it.
//! * Budget other holders hold (`Busy`) is waited for, up to a patience the caller
//!   chooses; the wait is the infrastructure's time, reported in [`MeteredCall::waited`].
//! * While the call runs the process's slices are renewed, so the fleet's reconciler
//!   ([`synthfleet_core::liveness::reclaim_leases`]) only takes slices whose holder is gone.
//! * A call cut off by a shutdown is booked at its worst case (the provider may bill it);
//!   a call that failed books what the provider billed.

use crate::wallet::{Holding, Wallet};
use crate::{ModelPool, PoolCompletion};
use std::time::Duration;
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::{BudgetLease, CampaignRecord, Spend};
use synthfleet_core::ports::{ChatRequest, LlmError, StoreError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Who pays for calls: the pool calls, the wallet holds the budget.
pub struct Meter<'a> {
    pub pool: &'a ModelPool,
    pub wallet: &'a Wallet,
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
        let worst = self
            .pool
            .worst_case_cost(call.model, call.request)
            .map_err(MeterError::Cost)?;
        let started = Instant::now();
        let hold = match self
            .wallet
            .hold(
                call.campaign,
                call.spend,
                worst,
                call.busy_patience,
                self.cancel,
            )
            .await?
        {
            Holding::Held(hold) => hold,
            Holding::Refused(record) => {
                return Ok(MeteredCall {
                    outcome: Metered::Refused(record),
                    waited: started.elapsed(),
                });
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
                    let worst = hold.worst();
                    self.wallet.release(hold, worst).await;
                    return Err(MeterError::Interrupted);
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    renew_at += BudgetLease::RENEW_EVERY;
                    self.wallet.renew_due().await;
                }
            }
        };
        let outcome = match reply {
            Ok(reply) => {
                let cost = reply
                    .served_by
                    .cost(&reply.completion.usage)
                    .saturating_add(reply.fallback_billed);
                self.wallet.release(hold, cost).await;
                Metered::Completed {
                    reply: Box::new(reply),
                    cost,
                }
            }
            Err(e) => {
                // What the provider billed for answered but broken attempts is spent.
                self.wallet.release(hold, e.billed()).await;
                Metered::Failed(e)
            }
        };
        Ok(MeteredCall { outcome, waited })
    }
}
