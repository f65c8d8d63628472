//! Who is alive in the fleet: the rules that decide whose sandboxes may be reaped and
//! whose budget reservations may be reclaimed, and the ledger's own check.

use crate::MicroUsd;
use crate::budget::{BudgetLease, Discrepancy};
use crate::ports::{MetadataStore, StoreError, WorkerHeartbeat};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// Heartbeats a worker may miss before it counts as dead.
pub const MISSED_BEATS: u32 = 3;

/// The interval a heartbeat from before intervals were recorded is taken to have.
pub const DEFAULT_INTERVAL_S: u64 = 30;

/// Whether the worker that wrote `beat` has missed [`MISSED_BEATS`] of its own beats.
pub fn is_stale(beat: &WorkerHeartbeat, now: DateTime<Utc>) -> bool {
    let interval = if beat.interval_s == 0 {
        DEFAULT_INTERVAL_S
    } else {
        beat.interval_s
    };
    let allowed = chrono::Duration::seconds((interval * u64::from(MISSED_BEATS)) as i64);
    now - beat.at > allowed
}

/// Of the `owners` of sandboxes on a host, the ones known to be dead: their last heartbeat
/// is stale. An owner with no heartbeat at all is not this fleet's (a local run, a gold
/// validation) and is left alone; so is `me`.
pub fn dead_owners<'a>(
    owners: impl IntoIterator<Item = &'a str>,
    beats: &[WorkerHeartbeat],
    me: &str,
    now: DateTime<Utc>,
) -> BTreeSet<String> {
    owners
        .into_iter()
        .filter(|owner| *owner != me)
        .filter(|owner| {
            beats
                .iter()
                .find(|b| b.worker_id == *owner)
                .is_some_and(|b| is_stale(b, now))
        })
        .map(str::to_owned)
        .collect()
}

/// The leases held by the dead, to be reclaimed: expired ones (their call stopped
/// renewing them) and those of a worker whose heartbeat is stale (killed mid-call: no
/// need to wait for the expiry).
pub fn stale_leases<'a>(
    leases: &'a [BudgetLease],
    beats: &[WorkerHeartbeat],
    now: DateTime<Utc>,
) -> Vec<&'a BudgetLease> {
    leases
        .iter()
        .filter(|lease| {
            lease.expires_at < now
                || beats
                    .iter()
                    .any(|b| b.worker_id == lease.owner && is_stale(b, now))
        })
        .collect()
}

/// Which leases [`reclaim_leases`] takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// Those of the dead ([`stale_leases`]): what the fleet's reconciler takes.
    Stale(DateTime<Utc>),
    /// Every lease: only for a process that holds the store exclusively (a local run's
    /// state directory is locked), where any lease left belongs to a process that died.
    All,
}

/// Settles the chosen leases of every campaign at their full amount (the provider may
/// have billed a call its owner never saw the end of), so `reserved` returns to what live
/// calls hold. Safe to run anywhere, any number of times: settling is idempotent, and a
/// lease settled meanwhile by its owner is skipped. Returns what was reclaimed.
pub async fn reclaim_leases(
    metadata: &dyn MetadataStore,
    which: Reclaim,
) -> Result<Vec<BudgetLease>, StoreError> {
    let beats = match which {
        Reclaim::Stale(_) => metadata.heartbeats().await?,
        Reclaim::All => Vec::new(),
    };
    let mut reclaimed = Vec::new();
    for campaign in metadata.campaigns().await? {
        if campaign.ledger.reserved == crate::MicroUsd::ZERO {
            continue;
        }
        let leases = metadata.leases(&campaign.name).await?;
        let chosen: Vec<&BudgetLease> = match which {
            Reclaim::Stale(now) => stale_leases(&leases, &beats, now),
            Reclaim::All => leases.iter().collect(),
        };
        for lease in chosen {
            if metadata.settle(lease, lease.amount).await? {
                reclaimed.push(lease.clone());
            }
        }
    }
    Ok(reclaimed)
}

/// A campaign whose `reserved` did not equal what its leases hold, as it was repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    pub campaign: String,
    pub found: Discrepancy,
}

/// How often [`audit_ledgers`] reads a campaign again when its ledger moved meanwhile.
const AUDIT_TRIES: usize = 3;

/// Checks the ledger's own invariant for every campaign — `reserved` equals what its live
/// leases hold together — and repairs a difference ([`crate::budget::CampaignRecord::repair`]:
/// a reservation no lease accounts for is booked as spent at its worst case). Leases and
/// ledger are compared only when they were read at one moment: the ledger's write count,
/// read consistently, is the same before and after the leases were read (every draw and
/// settle writes both in one atomic write); the repair is conditional on it, so a draw or
/// settle racing the audit is never taken for a loss. A campaign whose ledger kept moving
/// is left to the next audit. Safe to run anywhere, any number of times.
pub async fn audit_ledgers(metadata: &dyn MetadataStore) -> Result<Vec<Repaired>, StoreError> {
    let mut repaired = Vec::new();
    for campaign in metadata.campaigns().await? {
        for _ in 0..AUDIT_TRIES {
            let Some(before) = metadata.campaign(&campaign.name).await? else {
                break;
            };
            let leases = metadata.leases(&campaign.name).await?;
            let Some(after) = metadata.campaign(&campaign.name).await? else {
                break;
            };
            if after.ledger.writes != before.ledger.writes {
                continue;
            }
            let held = leases.iter().fold(MicroUsd::ZERO, |sum, lease| {
                sum.saturating_add(lease.amount)
            });
            let Some(found) = after.ledger.discrepancy(held) else {
                break;
            };
            if metadata
                .repair_ledger(&after.name, &after.ledger, held)
                .await?
            {
                repaired.push(Repaired {
                    campaign: after.name,
                    found,
                });
            }
            break;
        }
    }
    Ok(repaired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, age_s: i64, interval_s: u64, now: DateTime<Utc>) -> WorkerHeartbeat {
        WorkerHeartbeat {
            worker_id: id.into(),
            at: now - chrono::Duration::seconds(age_s),
            in_flight: 0,
            completed: 0,
            version: "v".into(),
            interval_s,
            last_active: None,
            open_breakers: Vec::new(),
        }
    }

    #[test]
    fn only_owners_with_a_stale_heartbeat_are_dead() {
        let now = Utc::now();
        let beats = [
            beat("fresh", 5, 30, now),
            beat("dead", 100, 30, now),
            beat("fast-dead", 4, 1, now),
            beat("me", 500, 30, now),
        ];
        let owners = ["fresh", "dead", "fast-dead", "me", "local-run"];
        let dead = dead_owners(owners, &beats, "me", now);
        assert_eq!(
            dead.into_iter().collect::<Vec<_>>(),
            ["dead", "fast-dead"],
            "no heartbeat means not this fleet's; never reap yourself"
        );
    }

    #[test]
    fn leases_of_dead_owners_or_not_renewed_are_stale() {
        let now = Utc::now();
        let beats = [beat("alive", 5, 30, now), beat("dead", 100, 30, now)];
        let lease = |owner: &str, age_min: i64| {
            crate::budget::BudgetLease::new(
                "c",
                owner,
                crate::MicroUsd(10),
                now - chrono::Duration::minutes(age_min),
            )
        };
        let leases = [
            lease("alive", 1),
            lease("alive", 6),
            lease("dead", 0),
            lease("judge", 1),
            lease("judge", 6),
        ];
        let stale: Vec<(&str, bool)> = stale_leases(&leases, &beats, now)
            .into_iter()
            .map(|l| (l.owner.as_str(), l.expires_at < now))
            .collect();
        assert_eq!(
            stale,
            [("alive", true), ("dead", false), ("judge", true)],
            "a dead owner loses its leases at once; anyone's unrenewed lease expires"
        );
    }
}
