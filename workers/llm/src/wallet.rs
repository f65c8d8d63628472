//! A process's budget slices: the campaign ledger written once per many calls, not twice
//! per call.
//!
//! A [`Wallet`] holds, per campaign and kind of spend, the slices ([`BudgetLease`]s) this
//! process drew. A call *holds* its worst case on a slice with room, or draws a new slice
//! (sized for [`SLICE_CALLS`] such calls, at least one, at most the process's share of
//! what is left: [`synthfleet_core::budget::Ledger::try_draw`]); when the call ends its
//! real cost is booked on the slice, locally. A slice goes back to the campaign — its
//! spend booked, the rest released, one write — when it cannot serve another call like
//! the last one, when it has been idle for [`IDLE_RETURN`] ([`Wallet::housekeep`]), and
//! when the process stops ([`Wallet::close`]). So the campaign item takes two writes per
//! slice, one per [`SLICE_CALLS`] calls or more.
//!
//! * The cap holds exactly: calls on a slice never hold more than its amount, and slices
//!   are granted only while spent + reserved fits the budget.
//! * A slice is renewed every [`BudgetLease::RENEW_EVERY`] while held; a slice whose owner
//!   died is reclaimed by the fleet at its full amount (its calls may have been billed):
//!   what a crash can cost is one slice, which is why a slice is at most the holder's
//!   share of the headroom.
//! * A slice the fleet reclaimed meanwhile (this process was partitioned away) is dropped:
//!   its calls' bookings are covered by the reclaim.

use crate::metered::MeterError;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synthfleet_core::budget::{BudgetLease, CampaignRecord, Spend};
use synthfleet_core::ports::{Draw, MetadataStore, Reservation};
use synthfleet_core::{MicroUsd, error_chain};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Calls at their worst case a slice is drawn for.
pub const SLICE_CALLS: u64 = 40;

/// A slice no call used for this long goes back to its campaign.
pub const IDLE_RETURN: Duration = Duration::from_secs(60);

/// First pause before asking again for budget other holders hold; it doubles up to
/// [`BUSY_WAIT_MAX`].
const BUSY_WAIT: Duration = Duration::from_millis(250);
const BUSY_WAIT_MAX: Duration = Duration::from_secs(5);

/// The budget slices one process holds.
pub struct Wallet {
    metadata: Arc<dyn MetadataStore>,
    /// The worker (or process) the slices are held by: its heartbeat keeps them alive.
    owner: String,
    /// How many holders share a campaign's headroom (the live workers).
    holders: AtomicU32,
    accounts: Mutex<HashMap<(String, Spend), SharedAccount>>,
}

/// An account, locked while a call holds on it or a slice is drawn for it.
type SharedAccount = Arc<tokio::sync::Mutex<Account>>;

/// One campaign's slices, for one kind of spend.
#[derive(Default)]
struct Account {
    slices: Vec<Slice>,
}

struct Slice {
    lease: BudgetLease,
    /// What calls that ended cost.
    used: MicroUsd,
    /// The worst cases of the calls in flight.
    pending: MicroUsd,
    in_flight: u32,
    last_call: Instant,
    renewed: Instant,
}

impl Slice {
    fn room(&self) -> MicroUsd {
        MicroUsd(
            self.lease
                .amount
                .0
                .saturating_sub(self.used.0.saturating_add(self.pending.0)),
        )
    }

    fn take(&mut self, worst: MicroUsd) {
        self.pending = self.pending.saturating_add(worst);
        self.in_flight += 1;
        self.last_call = Instant::now();
    }
}

/// A call's hold on a slice: its worst case, until [`Wallet::release`].
#[derive(Debug)]
#[must_use = "a hold is released with what the call cost"]
pub struct Hold {
    campaign: String,
    spend: Spend,
    lease: String,
    worst: MicroUsd,
}

impl Hold {
    /// The call's worst case, what an interrupted call is booked at.
    pub fn worst(&self) -> MicroUsd {
        self.worst
    }
}

/// What asking for budget met.
pub enum Holding {
    Held(Hold),
    /// The campaign refused (out of budget, or its state allows no such spend); the
    /// campaign as it stands says why.
    Refused(Box<CampaignRecord>),
}

impl Wallet {
    pub fn new(metadata: Arc<dyn MetadataStore>, owner: &str) -> Wallet {
        Wallet {
            metadata,
            owner: owner.to_owned(),
            holders: AtomicU32::new(1),
            accounts: Mutex::default(),
        }
    }

    /// How many processes share each campaign's headroom (the live workers, counted with
    /// every heartbeat).
    pub fn set_holders(&self, holders: usize) {
        let holders = u32::try_from(holders.max(1)).unwrap_or(u32::MAX);
        self.holders.store(holders, Ordering::Relaxed);
    }

    fn account(&self, campaign: &str, spend: Spend) -> SharedAccount {
        let mut accounts = self
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        accounts
            .entry((campaign.to_owned(), spend))
            .or_default()
            .clone()
    }

    fn all_accounts(&self) -> Vec<SharedAccount> {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Holds `worst` for a call of `campaign`: on a slice with room, or on a new one. While
    /// other holders hold the rest of the budget, waits (backing off) up to `patience`.
    pub async fn hold(
        &self,
        campaign: &str,
        spend: Spend,
        worst: MicroUsd,
        patience: Duration,
        cancel: &CancellationToken,
    ) -> Result<Holding, MeterError> {
        let account = self.account(campaign, spend);
        let started = Instant::now();
        let mut wait = BUSY_WAIT;
        loop {
            {
                let mut account = account.lock().await;
                // Slices must be renewed while held, also by a holder with no heartbeat
                // (the judge): each call renews its own account's that are due.
                self.renew_account(&mut account).await;
                if let Some(slice) = account.slices.iter_mut().find(|s| s.room() >= worst) {
                    slice.take(worst);
                    return Ok(Holding::Held(Self::hold_on(slice, spend, worst)));
                }
                // Slices no call uses cannot serve this one: their rest goes back first.
                self.return_unused(&mut account, Duration::ZERO).await;
                let wanted = MicroUsd(worst.0.saturating_mul(SLICE_CALLS));
                let draw = Draw {
                    lease: BudgetLease::new(campaign, &self.owner, wanted, Utc::now()),
                    minimum: worst,
                    holders: self.holders.load(Ordering::Relaxed),
                    spend,
                };
                match self.metadata.reserve(&draw).await {
                    Ok(Reservation::Granted(lease)) => {
                        debug!(campaign, lease = %lease.id, amount = %lease.amount, "drew a budget slice");
                        let now = Instant::now();
                        let mut slice = Slice {
                            lease,
                            used: MicroUsd::ZERO,
                            pending: MicroUsd::ZERO,
                            in_flight: 0,
                            last_call: now,
                            renewed: now,
                        };
                        slice.take(worst);
                        let hold = Self::hold_on(&slice, spend, worst);
                        account.slices.push(slice);
                        return Ok(Holding::Held(hold));
                    }
                    Ok(Reservation::Refused(record)) => return Ok(Holding::Refused(record)),
                    Ok(Reservation::Busy) => {}
                    // A draw that went through before the error holds a lease nobody
                    // renews: it expires and is reclaimed at its amount.
                    Err(source) => {
                        return Err(MeterError::Reserve {
                            campaign: campaign.to_owned(),
                            source,
                        });
                    }
                }
            }
            if started.elapsed() > patience {
                return Err(MeterError::BudgetHeld {
                    campaign: campaign.to_owned(),
                    waited: started.elapsed(),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return Err(MeterError::Interrupted),
            }
            wait = (wait * 2).min(BUSY_WAIT_MAX);
        }
    }

    fn hold_on(slice: &Slice, spend: Spend, worst: MicroUsd) -> Hold {
        Hold {
            campaign: slice.lease.campaign.clone(),
            spend,
            lease: slice.lease.id.clone(),
            worst,
        }
    }

    /// Ends a call's hold, booking what it cost on its slice. A slice no call uses any more
    /// that could not serve another call like this one goes back to the campaign now.
    pub async fn release(&self, hold: Hold, actual: MicroUsd) {
        let account = self.account(&hold.campaign, hold.spend);
        let mut account = account.lock().await;
        let Some(at) = account.slices.iter().position(|s| s.lease.id == hold.lease) else {
            // Reclaimed meanwhile: booked at its full amount already.
            return;
        };
        let slice = &mut account.slices[at];
        slice.pending = MicroUsd(slice.pending.0.saturating_sub(hold.worst.0));
        slice.in_flight = slice.in_flight.saturating_sub(1);
        slice.used = slice.used.saturating_add(actual);
        slice.last_call = Instant::now();
        if slice.in_flight == 0 && slice.room() < hold.worst {
            self.settle(&account.slices[at]).await;
            account.slices.swap_remove(at);
        }
    }

    /// Renews the slices due for it, and returns those idle for [`IDLE_RETURN`]: what a
    /// holder runs with its heartbeat.
    pub async fn housekeep(&self) {
        self.renew_due().await;
        for account in self.all_accounts() {
            self.return_unused(&mut *account.lock().await, IDLE_RETURN)
                .await;
        }
    }

    /// Returns the account's slices that no call holds and none used for `idle`. A slice
    /// leaves the account only once returned, so a caller cancelled midway loses none (a
    /// second return of a slice returned already books nothing).
    async fn return_unused(&self, account: &mut Account, idle: Duration) {
        let mut at = 0;
        while at < account.slices.len() {
            let slice = &account.slices[at];
            if slice.in_flight == 0 && slice.last_call.elapsed() >= idle {
                self.settle(slice).await;
                account.slices.swap_remove(at);
            } else {
                at += 1;
            }
        }
    }

    /// Renews every slice whose last renewal is [`BudgetLease::RENEW_EVERY`] old; a slice
    /// found reclaimed is dropped.
    pub async fn renew_due(&self) {
        for account in self.all_accounts() {
            self.renew_account(&mut *account.lock().await).await;
        }
    }

    /// [`Wallet::renew_due`] for one account. Slices stay in the account across every
    /// await: a caller cancelled midway (a heartbeat task aborted at stop) loses none.
    async fn renew_account(&self, account: &mut Account) {
        let mut at = 0;
        while at < account.slices.len() {
            let slice = &mut account.slices[at];
            if slice.renewed.elapsed() < BudgetLease::RENEW_EVERY {
                at += 1;
                continue;
            }
            let renewed = slice.lease.renewed(Utc::now());
            match self.metadata.renew(&renewed).await {
                Ok(true) => {
                    let slice = &mut account.slices[at];
                    slice.lease = renewed;
                    slice.renewed = Instant::now();
                    at += 1;
                }
                Ok(false) => {
                    let gone = account.slices.swap_remove(at);
                    warn!(
                        campaign = %gone.lease.campaign,
                        lease = %gone.lease.id,
                        amount = %gone.lease.amount,
                        "a budget slice was reclaimed while held; it stays booked at its full amount"
                    );
                }
                Err(e) => {
                    warn!(lease = %renewed.id, error = %error_chain(&e), "renewing a budget slice failed; trying again with the next call");
                    at += 1;
                }
            }
        }
    }

    /// Returns every slice no call holds: what a process does when it stops.
    pub async fn close(&self) {
        for account in self.all_accounts() {
            self.return_unused(&mut *account.lock().await, Duration::ZERO)
                .await;
        }
    }

    /// Returns a slice: its spend booked, the rest released. Retried; settling is
    /// idempotent, so a retry after a settle that did apply books nothing twice. One that
    /// keeps failing leaves the lease to expire and be reclaimed at its amount: the cap
    /// holds either way.
    async fn settle(&self, slice: &Slice) {
        let lease = &slice.lease;
        let settled = (|| self.metadata.settle(lease, slice.used))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_times(6),
            )
            .notify(|e, after| {
                warn!(lease = %lease.id, error = %error_chain(e), retry_in_ms = after.as_millis() as u64, "returning a budget slice failed; retrying");
            })
            .await;
        match settled {
            Ok(true) => {
                debug!(campaign = %lease.campaign, lease = %lease.id, amount = %lease.amount, used = %slice.used, "returned a budget slice");
            }
            Ok(false) => info!(
                campaign = %lease.campaign,
                lease = %lease.id,
                "a budget slice was reclaimed before it was returned; it stays booked at its full amount"
            ),
            Err(e) => warn!(
                campaign = %lease.campaign,
                lease = %lease.id,
                error = %error_chain(&e),
                "returning a budget slice kept failing; it is reclaimed at its full amount once it expires"
            ),
        }
    }
}
