//! The campaign budget ledger: the one place the budget rules live.
//!
//! A worker (or any process that calls models for a campaign) *draws a slice* of the
//! budget — a [`BudgetLease`] — in one conditional write, meters its calls against the
//! slice locally (each call holds its worst-case cost, prompt estimate plus `max_tokens`
//! of output, until it ends), draws again when the slice runs low and *settles* the slice
//! when it is used up or idle: its real spend is booked and the rest released. A slice is
//! granted only while `spent + reserved + amount <= budget`, so concurrent workers can
//! never together commit more than the cap; the only overshoot possible is a call whose
//! real cost exceeds its worst case (a prompt underestimate), bounded by one call. A slice
//! is sized for [`SliceSize::wanted`] (many calls), at least one call's worth, and at most
//! its holder's share of what is left ([`Ledger::try_draw`]), so the campaign item takes a
//! write per many calls, not two per call. Stores apply these rules atomically: the local
//! store in one transaction, a DynamoDB store through a condition on
//! `committed <= budget - amount` ([`Ledger::max_committed_for`]).

use crate::MicroUsd;
use crate::lifecycle::Trigger;
use crate::sampling::{AdaptiveTally, SamplePlan};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub budget: MicroUsd,
    pub spent: MicroUsd,
    pub reserved: MicroUsd,
    /// Ledger writes applied (draws, settles, repairs): a reader that sees the same count
    /// before and after reading the leases saw leases and ledger of one moment
    /// ([`crate::liveness::audit_ledgers`]).
    #[serde(default)]
    pub writes: u64,
}

/// How much of the budget a slice asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceSize {
    /// The most it wants: enough for its holder's next calls at their worst case.
    pub wanted: MicroUsd,
    /// The least of any use: the worst case of the call that asks.
    pub minimum: MicroUsd,
    /// How many holders share what is left (the live workers): a slice takes at most its
    /// share of the headroom, so no worker holds budget the others are waiting for.
    pub holders: u32,
}

impl SliceSize {
    /// Exactly `amount`, or nothing.
    pub fn exact(amount: MicroUsd) -> SliceSize {
        SliceSize {
            wanted: amount,
            minimum: amount,
            holders: 1,
        }
    }
}

/// The ledger's own invariant broken: `reserved` is not what the live leases hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discrepancy {
    pub reserved: MicroUsd,
    /// What the campaign's leases hold together.
    pub held: MicroUsd,
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

    /// Grants and books a slice of `size`, returning its amount, or says why not, leaving
    /// the ledger unchanged. The amount is at least `size.minimum` and at most
    /// `size.wanted`, the headroom and — unless that is below the minimum — the holder's
    /// share of the headroom.
    pub fn try_draw(&mut self, size: SliceSize) -> Result<MicroUsd, ReserveOutcome> {
        match self.classify(size.minimum) {
            ReserveOutcome::Granted => {}
            refused => return Err(refused),
        }
        let headroom = MicroUsd(self.budget.0.saturating_sub(self.committed().0));
        let share = MicroUsd(headroom.0 / u64::from(size.holders.max(1)));
        let amount = size
            .wanted
            .min(headroom)
            .min(share.max(size.minimum))
            .max(size.minimum);
        self.reserved = self.reserved.saturating_add(amount);
        self.writes += 1;
        Ok(amount)
    }

    /// What a reservation of `amount` would meet, without booking it.
    pub fn classify(&self, amount: MicroUsd) -> ReserveOutcome {
        match self.max_committed_for(amount) {
            Some(max) if self.committed() <= max => ReserveOutcome::Granted,
            Some(max) if self.spent <= max => ReserveOutcome::Busy,
            _ => ReserveOutcome::Exhausted,
        }
    }

    /// Releases a slice and books what its calls really cost (which may be zero).
    pub fn settle(&mut self, reserved: MicroUsd, actual: MicroUsd) {
        self.reserved = self.reserved.saturating_sub(reserved);
        self.spent = self.spent.saturating_add(actual);
        self.writes += 1;
    }

    /// Whether `reserved` equals what the campaign's leases hold together.
    pub fn discrepancy(&self, held: MicroUsd) -> Option<Discrepancy> {
        (self.reserved != held).then_some(Discrepancy {
            reserved: self.reserved,
            held,
        })
    }

    /// `reserved` set to what the leases hold. A reservation no lease accounts for is booked
    /// as spent, at its worst case (its calls may have been billed); leases the ledger
    /// missed are reserved.
    pub fn repair(&mut self, held: MicroUsd) {
        if self.reserved > held {
            self.spent = self
                .spent
                .saturating_add(MicroUsd(self.reserved.0 - held.0));
        }
        self.reserved = held;
        self.writes += 1;
    }

    /// No call could start any more: even the smallest reservation would be refused.
    pub fn is_exhausted(&self) -> bool {
        self.spent >= self.budget
    }
}

/// What a reservation request meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    Granted,
    /// It would fit once reservations in flight settle: wait and ask again.
    Busy,
    /// It does not fit even with nothing reserved: the campaign is out of budget.
    Exhausted,
}

/// One reservation, as a record with an owner: what a call holds of its campaign's budget
/// until it settles. Stores keep it next to the ledger and apply reserve/settle to both in
/// one atomic write, so a reservation whose owner died can be found and reclaimed
/// ([`crate::liveness::stale_leases`]) and a settle applied twice counts once (the second
/// finds no lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLease {
    pub campaign: String,
    /// Unique per reservation (a ULID).
    pub id: String,
    /// The worker (or process) that holds it: its heartbeat keeps the lease alive.
    pub owner: String,
    pub amount: MicroUsd,
    pub created_at: DateTime<Utc>,
    /// Past this, the lease is presumed dead: its call stopped renewing it.
    pub expires_at: DateTime<Utc>,
}

impl BudgetLease {
    /// How long a lease lives without renewal. Its call renews it while it runs (every
    /// [`BudgetLease::RENEW_EVERY`]), so only a lease whose call ended without a settle (the
    /// owner died, or the settle kept failing) outlives it.
    pub const TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
    pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn new(campaign: &str, owner: &str, amount: MicroUsd, now: DateTime<Utc>) -> BudgetLease {
        BudgetLease {
            campaign: campaign.to_owned(),
            id: ulid::Ulid::new().to_string(),
            owner: owner.to_owned(),
            amount,
            created_at: now,
            expires_at: now + Self::TTL,
        }
    }

    /// The lease renewed at `now`.
    pub fn renewed(&self, now: DateTime<Utc>) -> BudgetLease {
        BudgetLease {
            expires_at: now + Self::TTL,
            ..self.clone()
        }
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

    /// The states a campaign may move to `self` from, applied atomically by every store (a
    /// read-then-write would let a pause overwrite `exhausted`, or `done` overwrite a
    /// pause). Leaving `exhausted` is not a state change but a raised budget
    /// (`upsert_campaign`); a resubmission reopens `done` by the same conditional write
    /// ([`CampaignRecord::resubmit`]).
    pub fn reachable_from(self) -> &'static [CampaignState] {
        match self {
            CampaignState::Paused => &[CampaignState::Running],
            // Resumed, or reopened by a redrive of its dead letters.
            CampaignState::Running => &[CampaignState::Paused, CampaignState::Done],
            CampaignState::Done => &[CampaignState::Running],
            CampaignState::Exhausted => &[CampaignState::Running, CampaignState::Paused],
        }
    }
}

/// What a reservation pays for: it decides which campaign states may still spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spend {
    /// A rollout's LLM call: only while the campaign runs.
    Rollout,
    /// Quality work on what the campaign produced (the LLM judge): also when the campaign
    /// is paused or done, never past the cap (`exhausted`).
    Quality,
}

impl Spend {
    /// The campaign states in which this spend may reserve budget. A pause stops new tasks,
    /// not the rollouts already running: they may still call their model.
    pub fn allowed_states(self) -> &'static [CampaignState] {
        match self {
            Spend::Rollout => &[CampaignState::Running, CampaignState::Paused],
            Spend::Quality => &[
                CampaignState::Running,
                CampaignState::Paused,
                CampaignState::Done,
            ],
        }
    }

    pub fn allowed_in(self, state: CampaignState) -> bool {
        self.allowed_states().contains(&state)
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
    /// Samples the campaign asks for in all (with adaptive sampling: planned so far).
    pub total_samples: u64,
    /// Adaptive sampling's account: the pool, the rounds still open, the tasks stopped and
    /// why. Absent for fixed sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveTally>,
    /// The highest budget alert sent, in percent of the cap (0: none); every threshold
    /// up to it was sent too.
    #[serde(default)]
    pub alerted_pct: u8,
    /// The last upload event or schedule firing applied to the item, so that a repeat of
    /// it changes nothing ([`Trigger::repeats`]); requests are not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Budget alerts, in percent of the cap: each is sent once per campaign.
pub const ALERT_THRESHOLDS: [u8; 3] = [50, 80, 100];

/// What a submission did to the campaign item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// There was none: it was created, running.
    Created,
    /// The new budget and sample count apply; `reopened`: a `done` campaign runs again.
    Resubmitted { reopened: bool },
    /// Its trigger was applied before (an event delivered again, or an older one late):
    /// nothing changed.
    Repeated,
}

impl CampaignRecord {
    /// Spend in percent of the cap, at most 100 (`None` without a budget).
    pub fn spent_pct(&self) -> Option<u8> {
        let budget = self.ledger.budget.0;
        (budget > 0)
            .then(|| (u128::from(self.ledger.spent.0) * 100 / u128::from(budget)).min(100) as u8)
    }

    /// The budget alerts due now, lowest first: every threshold spend has reached above
    /// the last one sent, so a jump from 40 % to 85 % sends the 50 % and the 80 % alerts.
    pub fn alerts_due(&self) -> Vec<u8> {
        let Some(pct) = self.spent_pct() else {
            return Vec::new();
        };
        ALERT_THRESHOLDS
            .into_iter()
            .filter(|t| *t <= pct && *t > self.alerted_pct)
            .collect()
    }

    /// Samples a worker may run now: those without an outcome, while the campaign accepts
    /// work (none while it is paused, exhausted or done). What the scaler sizes the fleet
    /// by: deferred messages of a stopped campaign hold no capacity.
    pub fn runnable(&self) -> u64 {
        if self.state.accepts_work() {
            self.total_samples.saturating_sub(self.accounted())
        } else {
            0
        }
    }

    /// Samples with an outcome: a committed result or a dead letter with its reason.
    pub fn accounted(&self) -> u64 {
        self.counts.success + self.counts.failed + self.counts.dead_lettered
    }

    /// A campaign is finished only when every sample it asks for is accounted for; a
    /// drained queue alone proves nothing (a message may have been lost or moved aside).
    /// With adaptive sampling, also no round may be open: a round whose last sample just
    /// committed may still ask for more.
    pub fn is_finished(&self) -> bool {
        self.accounted() >= self.total_samples
            && self.adaptive.as_ref().is_none_or(|a| a.open_rounds == 0)
    }

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
            adaptive: None,
            created_at: now,
            alerted_pct: 0,
            trigger: None,
            updated_at: now,
        }
    }

    /// The item a first submission by `trigger` creates.
    pub fn submitted(
        name: &str,
        budget: MicroUsd,
        plan: &SamplePlan,
        trigger: &Trigger,
        now: DateTime<Utc>,
    ) -> CampaignRecord {
        let mut record = CampaignRecord::new(name, budget, plan.samples, now);
        record.adaptive = plan
            .adaptive
            .map(|(pool, tasks)| AdaptiveTally::new(pool, tasks));
        if trigger.is_recorded() {
            record.trigger = Some(trigger.clone());
        }
        record
    }

    pub fn finished(&self) -> u64 {
        self.counts.success + self.counts.failed + self.counts.dead_lettered
    }

    /// A campaign submitted again by `trigger`. A repeat of the trigger applied last (the
    /// same S3 event delivered again, an older one delivered late, a firing retried)
    /// changes nothing. Otherwise the new budget and sample count apply: a finished
    /// campaign runs again (it was asked for: re-running sends only the samples without a
    /// result), an exhausted one only when its budget was raised. An adaptive campaign
    /// keeps the rounds it planned: the new pool applies, and tasks added get a first round.
    pub fn resubmit(
        &mut self,
        budget: MicroUsd,
        plan: &SamplePlan,
        trigger: &Trigger,
    ) -> Submitted {
        if trigger.repeats(self.trigger.as_ref()) {
            return Submitted::Repeated;
        }
        if trigger.is_recorded() {
            self.trigger = Some(trigger.clone());
        }
        let raised = budget > self.ledger.budget;
        if budget != self.ledger.budget {
            // Thresholds are shares of the new cap: their alerts are due again.
            self.alerted_pct = 0;
        }
        self.ledger.budget = budget;
        match (plan.adaptive, self.adaptive.as_mut()) {
            (Some((pool, tasks)), Some(tally)) => {
                // Each added task's first round joins the samples planned.
                let added = tasks.saturating_sub(tally.tasks);
                tally.resubmitted(pool, tasks);
                self.total_samples += plan.samples / tasks.max(1) * added;
            }
            (Some((pool, tasks)), None) => {
                self.adaptive = Some(AdaptiveTally::new(pool, tasks));
                self.total_samples = plan.samples;
            }
            (None, _) => {
                self.adaptive = None;
                self.total_samples = plan.samples;
            }
        }
        let reopened = self.state == CampaignState::Done;
        let resume = match self.state {
            CampaignState::Done => true,
            CampaignState::Exhausted => raised,
            CampaignState::Running | CampaignState::Paused => false,
        };
        if resume {
            self.state = CampaignState::Running;
            self.state_reason = None;
        }
        Submitted::Resubmitted { reopened }
    }

    /// Applies a request for a slice ([`Ledger::try_draw`]), returning the amount granted.
    /// Only a campaign whose state allows `spend` grants one; a request that cannot fit at
    /// all marks a running campaign `exhausted`, saying why.
    pub fn draw(&mut self, size: SliceSize, spend: Spend) -> Result<MicroUsd, ReserveOutcome> {
        if !spend.allowed_in(self.state) {
            return Err(ReserveOutcome::Exhausted);
        }
        let drawn = self.ledger.try_draw(size);
        if drawn == Err(ReserveOutcome::Exhausted) {
            self.exhaust(format!(
                "budget cap {} reached: spent {}, a call needs up to {}",
                self.ledger.budget, self.ledger.spent, size.minimum
            ));
        }
        drawn
    }

    /// Books a settled slice; reaching the cap marks the campaign `exhausted`.
    pub fn settle(&mut self, reserved: MicroUsd, actual: MicroUsd) {
        self.ledger.settle(reserved, actual);
        self.exhaust_if_spent();
    }

    /// Applies [`Ledger::repair`]; a repair that books the cap marks the campaign
    /// `exhausted`.
    pub fn repair(&mut self, held: MicroUsd) {
        self.ledger.repair(held);
        self.exhaust_if_spent();
    }

    /// Marks a running campaign `exhausted` once what was booked reached its cap.
    pub fn exhaust_if_spent(&mut self) {
        if self.ledger.is_exhausted() {
            self.exhaust(format!(
                "budget cap {} reached: spent {}",
                self.ledger.budget, self.ledger.spent
            ));
        }
    }

    /// Marks a running campaign exhausted (a paused or done one keeps its state).
    pub fn exhaust(&mut self, reason: String) {
        if self.state == CampaignState::Running {
            self.state = CampaignState::Exhausted;
            self.state_reason = Some(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice of exactly `amount`, as its outcome.
    fn exact(ledger: &mut Ledger, amount: u64) -> ReserveOutcome {
        match ledger.try_draw(SliceSize::exact(MicroUsd(amount))) {
            Ok(granted) => {
                assert_eq!(granted, MicroUsd(amount));
                ReserveOutcome::Granted
            }
            Err(refused) => refused,
        }
    }

    fn draw(c: &mut CampaignRecord, amount: u64, spend: Spend) -> ReserveOutcome {
        match c.draw(SliceSize::exact(MicroUsd(amount)), spend) {
            Ok(_) => ReserveOutcome::Granted,
            Err(refused) => refused,
        }
    }

    #[test]
    fn state_changes_follow_the_table() {
        use CampaignState::*;
        assert!(Paused.reachable_from().contains(&Running));
        assert!(
            !Paused.reachable_from().contains(&Exhausted),
            "a pause never hides exhaustion"
        );
        assert!(
            !Done.reachable_from().contains(&Paused),
            "done never overwrites a pause"
        );
        assert!(
            !Running.reachable_from().contains(&Exhausted),
            "only a raised budget resumes"
        );
    }

    #[test]
    fn finished_means_every_sample_accounted_for() {
        let mut record = CampaignRecord::new("c", MicroUsd(1), 4, Utc::now());
        record.counts = Counts {
            enqueued: 4,
            success: 2,
            failed: 1,
            dead_lettered: 0,
        };
        assert!(!record.is_finished(), "one sample has no outcome");
        record.counts.dead_lettered = 1;
        assert!(record.is_finished());
    }

    #[test]
    fn reservations_never_commit_past_the_cap() {
        use ReserveOutcome::*;
        let mut ledger = Ledger::new(MicroUsd(100));
        assert_eq!(exact(&mut ledger, 60), Granted);
        assert_eq!(
            exact(&mut ledger, 50),
            Busy,
            "60 + 50 > 100, but 50 alone fits"
        );
        assert_eq!(exact(&mut ledger, 40), Granted);
        assert_eq!(ledger.committed(), MicroUsd(100));
        ledger.settle(MicroUsd(60), MicroUsd(10));
        assert_eq!(ledger.committed(), MicroUsd(50));
        assert_eq!(exact(&mut ledger, 50), Granted);
        assert_eq!(exact(&mut ledger, 91), Exhausted, "10 spent + 91 > 100");
        assert_eq!(exact(&mut Ledger::new(MicroUsd(5)), 6), Exhausted);
    }

    #[test]
    fn exhausted_when_spent_reaches_budget() {
        let mut ledger = Ledger::new(MicroUsd(10));
        assert_eq!(exact(&mut ledger, 10), ReserveOutcome::Granted);
        ledger.settle(MicroUsd(10), MicroUsd(10));
        assert!(ledger.is_exhausted());
    }

    #[test]
    fn campaign_state_follows_the_ledger() {
        let now = Utc::now();
        let mut c = CampaignRecord::new("c", MicroUsd(100), 1, now);
        assert_eq!(draw(&mut c, 150, Spend::Rollout), ReserveOutcome::Exhausted);
        assert_eq!(c.state, CampaignState::Exhausted);
        assert!(
            c.state_reason
                .as_deref()
                .is_some_and(|r| r.contains("budget cap"))
        );
        assert_eq!(
            draw(&mut c, 1, Spend::Rollout),
            ReserveOutcome::Exhausted,
            "no calls once exhausted"
        );
        assert_eq!(
            draw(&mut c, 1, Spend::Quality),
            ReserveOutcome::Exhausted,
            "not even quality work"
        );
        c.resubmit(MicroUsd(100), &SamplePlan::fixed(1), &Trigger::Request);
        assert_eq!(
            c.state,
            CampaignState::Exhausted,
            "same budget: stays exhausted"
        );
        c.resubmit(MicroUsd(200), &SamplePlan::fixed(1), &Trigger::Request);
        assert_eq!(c.state, CampaignState::Running, "raised budget: runs again");
        assert_eq!(draw(&mut c, 150, Spend::Rollout), ReserveOutcome::Granted);
        c.settle(MicroUsd(150), MicroUsd(200));
        assert_eq!(c.state, CampaignState::Exhausted);
    }

    #[test]
    fn a_done_campaign_still_pays_for_quality_work_within_its_cap() {
        let mut c = CampaignRecord::new("c", MicroUsd(100), 1, Utc::now());
        c.state = CampaignState::Done;
        assert_eq!(draw(&mut c, 10, Spend::Rollout), ReserveOutcome::Exhausted);
        assert_eq!(draw(&mut c, 60, Spend::Quality), ReserveOutcome::Granted);
        assert_eq!(draw(&mut c, 60, Spend::Quality), ReserveOutcome::Busy);
        c.settle(MicroUsd(60), MicroUsd(50));
        assert_eq!(draw(&mut c, 60, Spend::Quality), ReserveOutcome::Exhausted);
        assert_eq!(c.state, CampaignState::Done, "done stays done");
    }

    #[test]
    fn every_budget_alert_crossed_is_due_once_even_on_a_jump() {
        const NONE: [u8; 0] = [];
        let mut c = CampaignRecord::new("c", MicroUsd(1_000), 1, Utc::now());
        assert_eq!(c.alerts_due(), NONE);
        c.ledger.spent = MicroUsd(499);
        assert_eq!(c.alerts_due(), NONE);
        c.ledger.spent = MicroUsd(820);
        assert_eq!(
            c.alerts_due(),
            [50, 80],
            "a jump from 0 to 82 % past two thresholds: both, lowest first"
        );
        c.alerted_pct = 50;
        assert_eq!(c.alerts_due(), [80], "what was sent is not due again");
        c.alerted_pct = 80;
        assert_eq!(c.alerts_due(), NONE, "each once");
        c.ledger.spent = MicroUsd(1_200);
        assert_eq!(c.spent_pct(), Some(100), "spend past the cap is 100 %");
        assert_eq!(c.alerts_due(), [100]);
        c.alerted_pct = 100;
        assert_eq!(c.alerts_due(), NONE);
        let mut jump = CampaignRecord::new("j", MicroUsd(10), 1, Utc::now());
        jump.ledger.spent = MicroUsd(10);
        assert_eq!(jump.alerts_due(), [50, 80, 100], "straight to the cap");
        assert_eq!(
            CampaignRecord::new("free", MicroUsd(0), 1, Utc::now()).alerts_due(),
            NONE,
            "no budget, no alerts"
        );
    }

    #[test]
    fn a_repeated_trigger_changes_nothing_and_only_intent_reopens_a_done_campaign() {
        use crate::lifecycle::Upload;
        let event = |sequencer: &str| {
            Trigger::Upload(Upload {
                bucket: "b".into(),
                key: "c.toml".into(),
                version_id: None,
                etag: Some("e".into()),
                sequencer: Some(sequencer.into()),
            })
        };
        let first = event("0A");
        let mut c = CampaignRecord::submitted(
            "c",
            MicroUsd(100),
            &SamplePlan::fixed(2),
            &first,
            Utc::now(),
        );
        assert_eq!(c.trigger.as_ref(), Some(&first));
        c.state = CampaignState::Done;
        assert_eq!(
            c.resubmit(MicroUsd(500), &SamplePlan::fixed(9), &first),
            Submitted::Repeated,
            "the upload's event delivered again"
        );
        assert_eq!(
            (c.state, c.ledger.budget, c.total_samples),
            (CampaignState::Done, MicroUsd(100), 2),
            "changes nothing"
        );
        let second = event("0B");
        assert_eq!(
            c.resubmit(MicroUsd(100), &SamplePlan::fixed(4), &second),
            Submitted::Resubmitted { reopened: true },
            "a new upload is meant"
        );
        assert_eq!((c.state, c.total_samples), (CampaignState::Running, 4));
        assert_eq!(
            c.resubmit(MicroUsd(100), &SamplePlan::fixed(2), &first),
            Submitted::Repeated,
            "the first event, late"
        );
        assert_eq!(c.total_samples, 4);
        c.state = CampaignState::Done;
        assert_eq!(
            c.resubmit(MicroUsd(100), &SamplePlan::fixed(4), &Trigger::Request),
            Submitted::Resubmitted { reopened: true },
            "`synthfleet submit`: meant"
        );
        assert_eq!(
            c.trigger.as_ref(),
            Some(&second),
            "a request keeps the upload it followed, whose repeats stay repeats"
        );
        assert_eq!(
            c.resubmit(MicroUsd(100), &SamplePlan::fixed(4), &Trigger::Request),
            Submitted::Resubmitted { reopened: false },
            "running already"
        );
    }

    #[test]
    fn a_slice_takes_what_it_wants_within_its_share_and_never_less_than_one_call() {
        let size = |wanted, minimum, holders| SliceSize {
            wanted: MicroUsd(wanted),
            minimum: MicroUsd(minimum),
            holders,
        };
        let mut ledger = Ledger::new(MicroUsd(1_000));
        assert_eq!(
            ledger.try_draw(size(400, 10, 1)),
            Ok(MicroUsd(400)),
            "all it wants"
        );
        assert_eq!(
            ledger.try_draw(size(400, 10, 4)),
            Ok(MicroUsd(150)),
            "a quarter of the 600 left: three more holders share the rest"
        );
        assert_eq!(
            ledger.try_draw(size(400, 200, 4)),
            Ok(MicroUsd(200)),
            "its share (112) is less than one call: one call's worth"
        );
        assert_eq!(
            ledger.try_draw(size(400, 300, 4)),
            Err(ReserveOutcome::Busy)
        );
        assert_eq!(ledger.committed(), MicroUsd(750));
        assert_eq!(ledger.writes, 3, "refusals write nothing");
        ledger.settle(MicroUsd(400), MicroUsd(100));
        assert_eq!(
            ledger.try_draw(size(2_000, 10, 1)),
            Ok(MicroUsd(550)),
            "the headroom at most"
        );
        assert_eq!(
            ledger.try_draw(size(10, 901, 1)),
            Err(ReserveOutcome::Exhausted),
            "100 spent: a call of 901 can never fit"
        );
    }

    #[test]
    fn a_reservation_no_lease_accounts_for_is_booked_at_its_worst_case() {
        let mut c = CampaignRecord::new("c", MicroUsd(100), 1, Utc::now());
        c.draw(SliceSize::exact(MicroUsd(30)), Spend::Rollout)
            .expect("granted");
        c.draw(SliceSize::exact(MicroUsd(20)), Spend::Rollout)
            .expect("granted");
        assert_eq!(c.ledger.discrepancy(MicroUsd(50)), None);
        let lost = c
            .ledger
            .discrepancy(MicroUsd(20))
            .expect("30 held by no lease");
        assert_eq!((lost.reserved, lost.held), (MicroUsd(50), MicroUsd(20)));
        c.repair(MicroUsd(20));
        assert_eq!(
            (c.ledger.spent, c.ledger.reserved, c.ledger.committed()),
            (MicroUsd(30), MicroUsd(20), MicroUsd(50)),
            "booked as spent: the cap still counts it"
        );
        c.repair(MicroUsd(90));
        assert_eq!(
            c.ledger.reserved,
            MicroUsd(90),
            "a lease the ledger missed is reserved"
        );
        assert_eq!(c.state, CampaignState::Running);
        c.repair(MicroUsd(0));
        assert_eq!(c.state, CampaignState::Exhausted, "120 booked of 100");
        assert_eq!(c.ledger.writes, 5);
    }
}
