//! Adaptive sampling (`[sampling] strategy = "adaptive"`): which tasks get more samples.
//!
//! A group-based RL trainer (GRPO, DAPO) learns nothing from a task whose samples all
//! resolved it or all failed. So every task gets a first round of `round_size` samples;
//! when a round is complete, [`judge`] stops the task if the round was uniform (as
//! `stop_when` says) or at `max_per_task`, and otherwise asks for one more round. The
//! campaign's pool — `tasks × samples_per_task`, what a fixed campaign would run — is
//! shared: the samples stopped tasks do not use go to the tasks whose outcomes are mixed,
//! and a round the pool cannot fit whole stops its task ([`AdaptiveTally::plan`]).
//!
//! **Who decides.** The worker that settles a round's last sample (commits its result, or
//! dead-letters it), before it deletes that message: [`after_outcome`]. A round is decided
//! once, by a conditional write of its [`RoundDecision`] together with the tally on the
//! campaign item ([`crate::ports::MetadataStore::decide_round`]); of concurrent deciders
//! one writes and the others read its decision, which is the same pure function of the same
//! outcomes. The next round's messages are sent, then the decision is marked `sent`. A
//! worker that dies anywhere in between leaves its message in flight; its redelivery finds
//! the result committed and runs [`after_outcome`] again, which finishes the job (a round
//! decided but not sent is sent). A redelivery that finds a decision not yet sent and
//! younger than [`SEND_GRACE`] leaves that to its decider, which is most likely still
//! sending it, and comes back when the grace is over. Sending is still at least once — a
//! decider stalled for longer than the grace and its redelivery both send — and the
//! conditional result commit keeps one result per sample. So no schedule has to sweep for
//! lost decisions, and the decision costs a few reads and one write per round, not per
//! call (invariant 11).
//!
//! **When the campaign is done.** The tally counts the rounds still open (planned, not yet
//! decided); a campaign is finished only when every planned sample is accounted for and no
//! round is open ([`crate::budget::CampaignRecord::is_finished`]), so the moment between a
//! round's last commit and its decision never looks finished.

use crate::campaign::{CampaignConfig, StopWhen};
use crate::message::{ResultKey, TaskMessage};
use crate::ports::{MetadataStore, Queue, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One round of one task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoundKey {
    pub campaign: String,
    pub instance_id: String,
    pub round: u32,
}

impl std::fmt::Display for RoundKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} round {}",
            self.campaign, self.instance_id, self.round
        )
    }
}

/// Why a task gets no more samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every sample of the round resolved the task: nothing left to learn from it.
    AllResolved,
    /// No sample resolved it.
    AllUnresolved,
    /// The task has `max_per_task` samples.
    MaxPerTask,
    /// The campaign's pool of samples cannot fit another whole round.
    PoolSpent,
    /// Every sample of the round was dead-lettered: no outcome to judge by.
    NoOutcome,
}

impl StopReason {
    pub const ALL: [StopReason; 5] = [
        StopReason::AllResolved,
        StopReason::AllUnresolved,
        StopReason::MaxPerTask,
        StopReason::PoolSpent,
        StopReason::NoOutcome,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::AllResolved => "all_resolved",
            StopReason::AllUnresolved => "all_unresolved",
            StopReason::MaxPerTask => "max_per_task",
            StopReason::PoolSpent => "pool_spent",
            StopReason::NoOutcome => "no_outcome",
        }
    }
}

/// What a complete round leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// One more round: samples `first..first + samples`.
    Continue {
        first: u32,
        samples: u32,
    },
    Stop {
        reason: StopReason,
    },
}

/// A round's decision as stored: once per round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundDecision {
    pub round: RoundKey,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Samples of the round that resolved the task, and that have an outcome at all.
    pub resolved: u32,
    pub judged: u32,
    pub decided_at: DateTime<Utc>,
    /// The next round's messages were sent (a decision to continue only).
    #[serde(default)]
    pub sent: bool,
}

impl RoundDecision {
    /// What is left at `now` of the [`SEND_GRACE`] its decider has to send the next round;
    /// `None` once it is over.
    pub fn grace_left(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        let age = (now - self.decided_at).to_std().unwrap_or_default();
        SEND_GRACE.checked_sub(age).filter(|left| !left.is_zero())
    }
}

/// The campaign item's account of adaptive sampling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdaptiveTally {
    /// Samples the campaign may run in all: `tasks × samples_per_task`.
    pub pool: u64,
    /// Tasks sampled (each has a first round).
    pub tasks: u64,
    /// Rounds planned and not yet decided.
    pub open_rounds: u64,
    /// Rounds added after a first one.
    pub continued: u64,
    /// Tasks stopped, by why.
    #[serde(default)]
    pub all_resolved: u64,
    #[serde(default)]
    pub all_unresolved: u64,
    #[serde(default)]
    pub max_per_task: u64,
    #[serde(default)]
    pub pool_spent: u64,
    #[serde(default)]
    pub no_outcome: u64,
}

impl AdaptiveTally {
    /// A first submission of `tasks` tasks: one open round each.
    pub fn new(pool: u64, tasks: u64) -> AdaptiveTally {
        AdaptiveTally {
            pool,
            tasks,
            open_rounds: tasks,
            ..AdaptiveTally::default()
        }
    }

    /// A re-submission: the new pool applies; tasks added get their first round.
    pub fn resubmitted(&mut self, pool: u64, tasks: u64) {
        self.pool = pool;
        if tasks > self.tasks {
            self.open_rounds += tasks - self.tasks;
            self.tasks = tasks;
        }
    }

    pub fn stopped(&self, reason: StopReason) -> u64 {
        match reason {
            StopReason::AllResolved => self.all_resolved,
            StopReason::AllUnresolved => self.all_unresolved,
            StopReason::MaxPerTask => self.max_per_task,
            StopReason::PoolSpent => self.pool_spent,
            StopReason::NoOutcome => self.no_outcome,
        }
    }

    /// The tasks stopped, by reason, for people ("all_resolved 2, max_per_task 1");
    /// `None` while none is.
    pub fn stopped_text(&self) -> Option<String> {
        let stopped: Vec<String> = StopReason::ALL
            .into_iter()
            .filter(|r| self.stopped(*r) > 0)
            .map(|r| format!("{} {}", r.as_str(), self.stopped(r)))
            .collect();
        (!stopped.is_empty()).then(|| stopped.join(", "))
    }

    fn stopped_mut(&mut self, reason: StopReason) -> &mut u64 {
        match reason {
            StopReason::AllResolved => &mut self.all_resolved,
            StopReason::AllUnresolved => &mut self.all_unresolved,
            StopReason::MaxPerTask => &mut self.max_per_task,
            StopReason::PoolSpent => &mut self.pool_spent,
            StopReason::NoOutcome => &mut self.no_outcome,
        }
    }

    /// Applies a round's `verdict` to the tally and to `planned` (the samples the campaign
    /// asks for so far), returning what holds: a round the pool cannot fit whole stops its
    /// task instead. The round closes; a continued one opens the next.
    pub fn plan(&mut self, planned: &mut u64, verdict: Verdict) -> Verdict {
        let verdict = match verdict {
            Verdict::Continue { samples, .. } if *planned + u64::from(samples) > self.pool => {
                Verdict::Stop {
                    reason: StopReason::PoolSpent,
                }
            }
            v => v,
        };
        self.open_rounds = self.open_rounds.saturating_sub(1);
        match verdict {
            Verdict::Continue { samples, .. } => {
                self.open_rounds += 1;
                self.continued += 1;
                *planned += u64::from(samples);
            }
            Verdict::Stop { reason } => *self.stopped_mut(reason) += 1,
        }
        verdict
    }
}

/// What the campaign asks of the metadata store when it is submitted: the samples planned
/// now, and for adaptive sampling the pool and the number of tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplePlan {
    pub samples: u64,
    pub adaptive: Option<(u64, u64)>,
}

impl SamplePlan {
    pub fn fixed(samples: u64) -> SamplePlan {
        SamplePlan {
            samples,
            adaptive: None,
        }
    }

    /// The plan of `config` for `tasks` tasks.
    pub fn of(config: &CampaignConfig, tasks: u64) -> SamplePlan {
        let first = tasks * u64::from(config.first_samples_per_task());
        SamplePlan {
            samples: first,
            adaptive: config
                .is_adaptive()
                .then(|| (tasks * u64::from(config.samples_per_task), tasks)),
        }
    }
}

/// The samples of `round`.
pub fn round_samples(config: &CampaignConfig, round: u32) -> std::ops::Range<u32> {
    let k = config.round_size();
    round * k..(round + 1) * k
}

/// A complete round's verdict from its samples' outcomes (`None`: dead-lettered, no
/// outcome), before the pool is consulted.
pub fn judge(config: &CampaignConfig, round: u32, outcomes: &[Option<bool>]) -> Verdict {
    let known: Vec<bool> = outcomes.iter().flatten().copied().collect();
    let stop = |reason| Verdict::Stop { reason };
    if known.is_empty() {
        return stop(StopReason::NoOutcome);
    }
    let stops = &config.sampling.stop_when;
    if known.iter().all(|r| *r) && stops.contains(&StopWhen::AllResolved) {
        return stop(StopReason::AllResolved);
    }
    if known.iter().all(|r| !*r) && stops.contains(&StopWhen::AllUnresolved) {
        return stop(StopReason::AllUnresolved);
    }
    let next = round_samples(config, round + 1);
    if next.end > config.max_samples_per_task() {
        return stop(StopReason::MaxPerTask);
    }
    Verdict::Continue {
        first: next.start,
        samples: next.end - next.start,
    }
}

/// What [`crate::ports::MetadataStore::decide_round`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// This decision was written (its verdict as the pool allowed).
    Applied(RoundDecision),
    /// The round was decided before: that decision.
    Existing(RoundDecision),
}

impl Decided {
    pub fn decision(&self) -> &RoundDecision {
        match self {
            Decided::Applied(d) | Decided::Existing(d) => d,
        }
    }
}

/// How long a round decided but not yet marked sent is left to the delivery that decided
/// it. A redelivery that finds such a decision younger than this does not send the round
/// too: its message comes back once the grace is over ([`Settled::BeingSent`]), and by
/// then the decider has marked it sent, or is taken for dead and the redelivery sends it.
pub const SEND_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// What [`after_outcome`] did with a sample's round.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Nothing to decide: the round is incomplete, or sampling is fixed.
    Open,
    /// This run decided the round (and sent the next one, if any).
    Decided(RoundDecision),
    /// The round was decided, and its next round sent, before.
    Done,
    /// Another delivery decided the round moments ago and is sending its next one: leave
    /// the message, and settle it again after `wait`.
    BeingSent { wait: std::time::Duration },
}

/// Run by the worker once `message`'s sample has its outcome (a committed result, or a
/// dead letter), before the message is deleted: if that completes the sample's round of an
/// adaptive campaign, decides the round and sends the next one. Idempotent: run again for
/// the same sample (a redelivery), it finishes what an interrupted run left and changes
/// nothing else.
pub async fn after_outcome(
    config: &CampaignConfig,
    message: &TaskMessage,
    queue: &dyn Queue,
    metadata: &dyn MetadataStore,
) -> Result<Settled, StoreError> {
    if !config.is_adaptive() {
        return Ok(Settled::Open);
    }
    let campaign = &message.campaign;
    let instance_id = &message.task.instance_id;
    let round = config.round_of(message.sample_index);
    let key = |sample_index| ResultKey {
        campaign: campaign.clone(),
        instance_id: instance_id.clone(),
        sample_index,
    };
    let mut outcomes = Vec::new();
    let mut missing = Vec::new();
    for sample in round_samples(config, round) {
        match metadata.result(&key(sample)).await? {
            Some(meta) => outcomes.push(Some(meta.resolved == Some(true))),
            None => missing.push(key(sample)),
        }
    }
    if !missing.is_empty() {
        // Only dead letters can stand for a missing result; most campaigns have none.
        let dead_lettered = metadata
            .campaign(campaign)
            .await?
            .is_some_and(|c| c.counts.dead_lettered > 0);
        if !dead_lettered {
            return Ok(Settled::Open);
        }
        let dead: BTreeSet<ResultKey> = metadata
            .dead_letters(campaign)
            .await?
            .into_iter()
            .map(|d| d.key)
            .collect();
        if !missing.iter().all(|k| dead.contains(k)) {
            return Ok(Settled::Open);
        }
        outcomes.extend(missing.iter().map(|_| None));
    }
    let verdict = judge(config, round, &outcomes);
    let proposed = RoundDecision {
        round: RoundKey {
            campaign: campaign.clone(),
            instance_id: instance_id.clone(),
            round,
        },
        verdict,
        resolved: outcomes.iter().filter(|o| **o == Some(true)).count() as u32,
        judged: outcomes.iter().flatten().count() as u32,
        decided_at: Utc::now(),
        sent: false,
    };
    let decided = metadata.decide_round(&proposed).await?;
    let decision = decided.decision();
    if let Verdict::Continue { first, samples } = decision.verdict
        && !decision.sent
    {
        if let Decided::Existing(found) = &decided
            && let Some(wait) = found.grace_left(Utc::now())
        {
            return Ok(Settled::BeingSent { wait });
        }
        let pending: Vec<(ResultKey, String)> = (first..first + samples)
            .map(|sample| {
                let next = TaskMessage::new(campaign, &message.task, sample);
                (next.result_key(), next.to_body())
            })
            .collect();
        let sent = crate::submit::send_samples(queue, metadata, &pending).await?;
        if sent > 0 {
            metadata.add_enqueued(campaign, sent).await?;
        }
        metadata.round_sent(&decision.round).await?;
    }
    Ok(match decided {
        Decided::Applied(decision) => Settled::Decided(decision),
        Decided::Existing(_) => Settled::Done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::Strategy;

    fn config(k: u32, spt: u32, max: u32) -> CampaignConfig {
        let mut c: CampaignConfig = toml::from_str(&format!(
            "name = \"c\"\ntasks = [\"t.jsonl\"]\nsamples_per_task = {spt}\nbudget_usd = 1\n[[models]]\nname = \"a\"\nprovider = \"replay\"\n"
        ))
        .expect("campaign");
        c.sampling.strategy = Strategy::Adaptive;
        c.sampling.round_size = Some(k);
        c.sampling.max_per_task = Some(max);
        c
    }

    /// A decision not yet sent is its decider's to send for [`SEND_GRACE`]; a clock a
    /// little behind the decider's gives the whole grace, never none.
    #[test]
    fn a_decision_is_left_to_its_decider_for_the_grace_only() {
        let decided_at = Utc::now();
        let decision = RoundDecision {
            round: RoundKey {
                campaign: "c".into(),
                instance_id: "t".into(),
                round: 0,
            },
            verdict: Verdict::Continue {
                first: 4,
                samples: 4,
            },
            resolved: 2,
            judged: 4,
            decided_at,
            sent: false,
        };
        let after = |s: i64| decision.grace_left(decided_at + chrono::Duration::seconds(s));
        assert_eq!(after(0), Some(SEND_GRACE));
        assert_eq!(after(-5), Some(SEND_GRACE));
        assert_eq!(
            after(45),
            Some(SEND_GRACE - std::time::Duration::from_secs(45))
        );
        assert_eq!(after(60), None);
        assert_eq!(after(600), None);
    }

    #[test]
    fn uniform_rounds_stop_and_mixed_ones_continue_to_the_maximum() {
        let c = config(4, 4, 12);
        let stop = |reason| Verdict::Stop { reason };
        assert_eq!(
            judge(&c, 0, &[Some(true); 4]),
            stop(StopReason::AllResolved)
        );
        assert_eq!(
            judge(&c, 0, &[Some(false); 4]),
            stop(StopReason::AllUnresolved)
        );
        let mixed = [Some(true), Some(false), Some(false), None];
        assert_eq!(
            judge(&c, 0, &mixed),
            Verdict::Continue {
                first: 4,
                samples: 4
            }
        );
        assert_eq!(
            judge(&c, 1, &mixed),
            Verdict::Continue {
                first: 8,
                samples: 4
            }
        );
        assert_eq!(judge(&c, 2, &mixed), stop(StopReason::MaxPerTask));
        assert_eq!(judge(&c, 0, &[None; 4]), stop(StopReason::NoOutcome));
        // Dead letters do not count: the known outcomes are uniform.
        assert_eq!(
            judge(&c, 0, &[Some(true), None, Some(true), Some(true)]),
            stop(StopReason::AllResolved)
        );
        let mut never = c.clone();
        never.sampling.stop_when.clear();
        assert_eq!(
            judge(&never, 0, &[Some(true); 4]),
            Verdict::Continue {
                first: 4,
                samples: 4
            }
        );
    }

    #[test]
    fn the_pool_goes_to_the_rounds_that_continue_and_a_round_that_does_not_fit_stops() {
        let c = config(2, 4, 8);
        // 3 tasks: a pool of 12, 6 planned by the first rounds.
        let plan = SamplePlan::of(&c, 3);
        assert_eq!(plan.samples, 6);
        assert_eq!(plan.adaptive, Some((12, 3)));
        let mut tally = AdaptiveTally::new(12, 3);
        let mut planned = plan.samples;
        let more = Verdict::Continue {
            first: 2,
            samples: 2,
        };
        assert_eq!(
            tally.plan(
                &mut planned,
                Verdict::Stop {
                    reason: StopReason::AllResolved
                }
            ),
            Verdict::Stop {
                reason: StopReason::AllResolved
            }
        );
        assert_eq!(tally.plan(&mut planned, more), more);
        assert_eq!(tally.plan(&mut planned, more), more);
        assert_eq!((planned, tally.open_rounds), (10, 2));
        assert_eq!(tally.plan(&mut planned, more), more);
        // 12 planned: the pool is spent, whatever the outcomes say.
        assert_eq!(
            tally.plan(&mut planned, more),
            Verdict::Stop {
                reason: StopReason::PoolSpent
            }
        );
        assert_eq!((planned, tally.open_rounds), (12, 1));
        assert_eq!(
            (
                tally.all_resolved,
                tally.pool_spent,
                tally.continued,
                tally.stopped(StopReason::PoolSpent)
            ),
            (1, 1, 3, 1)
        );
    }

    #[test]
    fn fixed_sampling_plans_every_sample_at_once() {
        let mut c = config(2, 4, 8);
        c.sampling = Default::default();
        assert_eq!(SamplePlan::of(&c, 3), SamplePlan::fixed(12));
        assert_eq!(c.round_of(3), 0);
    }
}
