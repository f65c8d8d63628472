//! The campaign budget ledger: the one place the budget rules live.
//!
//! Every LLM call first *reserves* its worst-case cost (prompt estimate plus `max_tokens`
//! of output), and afterwards *settles* the reservation against the real cost. A
//! reservation is granted only while `spent + reserved + amount <= budget`, so concurrent
//! workers can never together commit more than the cap; the only overshoot possible is a
//! call whose real cost exceeds its reservation (a prompt underestimate), bounded by one
//! call. Stores apply these rules atomically: the local store in one transaction, a
//! DynamoDB store through a condition on `committed_usd <= budget - amount`
//! ([`Ledger::max_committed_for`]).

use crate::MicroUsd;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub budget: MicroUsd,
    pub spent: MicroUsd,
    pub reserved: MicroUsd,
}

impl Ledger {
    pub fn new(budget: MicroUsd) -> Ledger {
        Ledger {
            budget,
            ..Ledger::default()
        }
    }

    /// Spent plus reserved: what the cap is checked against.
    pub fn committed(&self) -> MicroUsd {
        self.spent.saturating_add(self.reserved)
    }

    /// The largest `committed` value at which a reservation of `amount` is still granted,
    /// or `None` when `amount` alone exceeds the budget.
    pub fn max_committed_for(&self, amount: MicroUsd) -> Option<MicroUsd> {
        self.budget.0.checked_sub(amount.0).map(MicroUsd)
    }

    /// Grants and books a reservation, or refuses it leaving the ledger unchanged.
    pub fn try_reserve(&mut self, amount: MicroUsd) -> bool {
        match self.max_committed_for(amount) {
            Some(max) if self.committed() <= max => {
                self.reserved = self.reserved.saturating_add(amount);
                true
            }
            _ => false,
        }
    }

    /// Releases a reservation and books what the call really cost (which may be zero).
    pub fn settle(&mut self, reserved: MicroUsd, actual: MicroUsd) {
        self.reserved = self.reserved.saturating_sub(reserved);
        self.spent = self.spent.saturating_add(actual);
    }

    /// No call could start any more: even the smallest reservation would be refused.
    pub fn is_exhausted(&self) -> bool {
        self.spent >= self.budget
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignState {
    Running,
    Paused,
    Exhausted,
    Done,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Exhausted => "exhausted",
            CampaignState::Done => "done",
        }
    }

    /// Whether workers may take new tasks of this campaign.
    pub fn accepts_work(self) -> bool {
        self == CampaignState::Running
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub enqueued: u64,
    pub success: u64,
    pub failed: u64,
    pub dead_lettered: u64,
}

/// The campaign item of the metadata store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub name: String,
    pub ledger: Ledger,
    pub state: CampaignState,
    /// Why the campaign is in its state, e.g. which reservation was refused.
    pub state_reason: Option<String>,
    pub counts: Counts,
    /// Samples the campaign asks for in all.
    pub total_samples: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CampaignRecord {
    pub fn new(
        name: &str,
        budget: MicroUsd,
        total_samples: u64,
        now: DateTime<Utc>,
    ) -> CampaignRecord {
        CampaignRecord {
            name: name.to_owned(),
            ledger: Ledger::new(budget),
            state: CampaignState::Running,
            state_reason: None,
            counts: Counts::default(),
            total_samples,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn finished(&self) -> u64 {
        self.counts.success + self.counts.failed + self.counts.dead_lettered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_commit_past_the_cap() {
        let mut ledger = Ledger::new(MicroUsd(100));
        assert!(ledger.try_reserve(MicroUsd(60)));
        assert!(!ledger.try_reserve(MicroUsd(50)), "60 + 50 > 100");
        assert!(ledger.try_reserve(MicroUsd(40)));
        assert_eq!(ledger.committed(), MicroUsd(100));
        ledger.settle(MicroUsd(60), MicroUsd(10));
        assert_eq!(ledger.committed(), MicroUsd(50));
        assert!(ledger.try_reserve(MicroUsd(50)));
        assert!(!ledger.try_reserve(MicroUsd(1)));
        assert!(!Ledger::new(MicroUsd(5)).try_reserve(MicroUsd(6)));
    }

    #[test]
    fn exhausted_when_spent_reaches_budget() {
        let mut ledger = Ledger::new(MicroUsd(10));
        assert!(ledger.try_reserve(MicroUsd(10)));
        ledger.settle(MicroUsd(10), MicroUsd(10));
        assert!(ledger.is_exhausted());
    }
}
