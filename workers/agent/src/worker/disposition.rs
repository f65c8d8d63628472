//! A message's fate, decided without I/O: [`disposition`] over the [`Facts`] learned so far.

use super::WorkerConfig;
use crate::campaigns::ResolveError;
use crate::rollout::Interrupted;
use std::time::Duration;
use synthfleet_core::budget::{CampaignRecord, CampaignState};
use synthfleet_core::campaign::NotAdmitted;
use synthfleet_core::error_chain;
use synthfleet_core::message::TaskMessage;
use synthfleet_core::trajectory::{ExitStatus, TrajectoryRecord};

/// The longest a retry is delayed (SQS's longest message delay).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(900);

/// What decides a delivery's fate, in the order it is learned: each fact is looked up only
/// once those before it let the message on ([`disposition`] says [`Disposition::Next`]).
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    pub message: &'a TaskMessage,
    /// Deliveries of this message so far (1 on the first).
    pub receive_count: u32,
    /// Whether the message's campaign was found and owns the sample.
    pub admission: Option<Admission>,
    /// The campaign's item: its state, or none.
    pub campaign: Option<Standing>,
    /// Whether the sample has a committed result already.
    pub has_result: Option<bool>,
    /// How its rollout ended.
    pub rollout: Option<Outcome>,
}

impl<'a> Facts<'a> {
    /// A delivery of `message`, nothing looked up yet.
    pub fn new(message: &'a TaskMessage, receive_count: u32) -> Facts<'a> {
        Facts {
            message,
            receive_count,
            admission: None,
            campaign: None,
            has_result: None,
            rollout: None,
        }
    }
}

/// Whether a worker can run the message's sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The campaign is known and the sample is one of its own.
    Admitted,
    /// No worker can: the campaign is unknown or invalid, or the sample is not one of its.
    Refused(String),
    /// This worker cannot now (a key variable it lacks, the store out of reach); another
    /// worker, or this one later, may.
    Unavailable(String),
}

impl Admission {
    /// What [`Campaign::admits`](synthfleet_core::campaign::Campaign::admits) said.
    pub fn of(admits: Result<(), NotAdmitted>) -> Admission {
        match admits {
            Ok(()) => Admission::Admitted,
            Err(reason) => Admission::Refused(reason.to_string()),
        }
    }
}

impl From<ResolveError> for Admission {
    /// The error's chain is the reason a dead letter or a hand-back gives.
    fn from(e: ResolveError) -> Admission {
        let reason = error_chain(&e);
        if e.is_transient() {
            Admission::Unavailable(reason)
        } else {
            Admission::Refused(reason)
        }
    }
}

/// What the campaign's item says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// There is none: the campaign was never submitted.
    Missing,
    /// The campaign's state, and why it is in it.
    Is {
        state: CampaignState,
        reason: Option<String>,
    },
}

impl Standing {
    pub fn of(item: Option<CampaignRecord>) -> Standing {
        match item {
            None => Standing::Missing,
            Some(record) => Standing::Is {
                state: record.state,
                reason: record.state_reason,
            },
        }
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Cut off before its record was finished: by the worker's interrupt (`signalled`), or
    /// else because the message's lease could not be extended.
    Stopped { signalled: bool },
    /// With a finished record of this exit status and error.
    Finished {
        exit_status: Option<ExitStatus>,
        error: Option<String>,
    },
}

impl Outcome {
    /// The outcome of `run`, whose cut-off came from a signal when `interrupted`.
    pub fn of(run: &Result<TrajectoryRecord, Interrupted>, interrupted: bool) -> Outcome {
        match run {
            Err(Interrupted) => Outcome::Stopped {
                signalled: interrupted,
            },
            Ok(record) => Outcome::Finished {
                exit_status: record.exit_status.clone(),
                error: record.error.clone(),
            },
        }
    }
}

/// What [`disposition`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Nothing yet: learn the next fact (with every fact before the rollout known: run it).
    Next,
    /// A finished record: commit it; the message is then deleted.
    Commit,
    Fate(Fate),
}

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// To the dead-letter queue with `reason`; with `sample`, recorded as the sample's dead
    /// letter too (counted, so the campaign can finish).
    DeadLetter { reason: String, sample: bool },
    /// Back as it was after `delay`, costing no attempt, for a worker that can serve the
    /// campaign (this one cannot now, for `reason`).
    HandBack { reason: String, delay: Duration },
    /// Back as it was at once, costing no attempt: a signal stopped the rollout.
    Release,
    /// Back as it was after `delay`, costing no attempt: the campaign accepts no work now
    /// (paused, exhausted, or the budget refused a call), for `reason`. With `stop_worker`
    /// the worker stops taking work (the local runner).
    Defer {
        reason: String,
        delay: Duration,
        stop_worker: bool,
    },
    /// Attempt `attempt` failed on the infrastructure with `error`: a fresh copy carrying
    /// one more failure, visible after `delay`.
    Retry {
        attempt: u32,
        error: String,
        delay: Duration,
    },
    /// Left in flight, to be redelivered when its visibility ends: the lease was lost.
    Leave,
    /// Deleted: the sample has its result (this delivery's, or another's when `duplicate`).
    Delete { duplicate: bool },
}

/// A delivery's fate from the facts known so far, or [`Disposition::Next`] while it needs
/// the next one. The rules, in order:
///
/// * a message whose campaign no worker can run, or that is no sample of its campaign, is
///   dead-lettered; one this worker cannot serve now is handed back after `defer_delay`;
/// * one delivered `max_receives` times is a poison task: dead-lettered with its record;
/// * one of a campaign without an item is dead-lettered with its record; one of a campaign
///   that accepts no work is deferred;
/// * one whose sample has a result is a duplicate: deleted;
/// * after the rollout: a lost lease leaves the message, a signal releases it, a budget
///   refusal defers it, an infrastructure error retries it with exponential backoff until
///   `max_attempts` attempts failed and then dead-letters it; any other record is committed.
pub(crate) fn disposition(facts: &Facts<'_>, config: &WorkerConfig) -> Disposition {
    let message = facts.message;
    let dead =
        |reason: String, sample: bool| Disposition::Fate(Fate::DeadLetter { reason, sample });
    let defer = |reason: String| {
        Disposition::Fate(Fate::Defer {
            reason,
            delay: if config.stop_when_campaign_stops {
                Duration::ZERO
            } else {
                config.defer_delay
            },
            stop_worker: config.stop_when_campaign_stops,
        })
    };
    match &facts.admission {
        None => return Disposition::Next,
        Some(Admission::Refused(reason)) => return dead(reason.clone(), false),
        Some(Admission::Unavailable(reason)) => {
            return Disposition::Fate(Fate::HandBack {
                reason: reason.clone(),
                delay: config.defer_delay,
            });
        }
        Some(Admission::Admitted) => {}
    }
    // Real failures re-send a fresh copy, so a receive count this high means workers kept
    // dying on this message: a poison task, dead-lettered with its record now rather than
    // moved aside silently by the queue's redrive policy.
    if facts.receive_count >= config.max_receives {
        return dead(
            format!(
                "delivered {} times to workers that never finished it (they crashed, were killed or lost the lease): a poison task?",
                facts.receive_count
            ),
            true,
        );
    }
    let (state, reason) = match &facts.campaign {
        None => return Disposition::Next,
        Some(Standing::Missing) => {
            return dead(
                format!(
                    "campaign `{}` has no campaign item; submit the campaign first",
                    message.campaign
                ),
                true,
            );
        }
        Some(Standing::Is { state, reason }) => (*state, reason),
    };
    if !state.accepts_work() {
        return defer(format!(
            "campaign `{}` is {}{}",
            message.campaign,
            state.as_str(),
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    match facts.has_result {
        None => return Disposition::Next,
        Some(true) => return Disposition::Fate(Fate::Delete { duplicate: true }),
        Some(false) => {}
    }
    let (exit_status, error) = match &facts.rollout {
        None => return Disposition::Next,
        Some(Outcome::Stopped { signalled: false }) => return Disposition::Fate(Fate::Leave),
        // Stopped by a signal, not by the sample: handed back without costing an attempt.
        Some(Outcome::Stopped { signalled: true }) => return Disposition::Fate(Fate::Release),
        Some(Outcome::Finished { exit_status, error }) => (exit_status, error),
    };
    match exit_status {
        // Not the agent's failure: the sample runs again if the budget is raised.
        Some(ExitStatus::BudgetExhausted) => defer(
            error
                .clone()
                .unwrap_or_else(|| "campaign budget exhausted".into()),
        ),
        Some(status @ ExitStatus::Error(_)) => {
            let error = format!("{status}: {}", error.as_deref().unwrap_or_default());
            let attempt = message.attempt();
            if attempt >= config.max_attempts {
                dead(
                    format!("gave up after {attempt} attempts; last error: {error}"),
                    true,
                )
            } else {
                Disposition::Fate(Fate::Retry {
                    attempt,
                    error,
                    delay: retry_delay(config.retry_backoff, attempt),
                })
            }
        }
        _ => Disposition::Commit,
    }
}

/// The delay before attempt `attempt + 1`: `backoff`, doubled per failed attempt, at most
/// [`MAX_RETRY_DELAY`].
pub(crate) fn retry_delay(backoff: Duration, attempt: u32) -> Duration {
    backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::message;
    use synthfleet_core::ports::LlmError;
    use synthfleet_core::trajectory::ErrorKind;

    fn running() -> Standing {
        Standing::Is {
            state: CampaignState::Running,
            reason: None,
        }
    }

    fn finished(exit_status: ExitStatus, error: Option<&str>) -> Outcome {
        Outcome::Finished {
            exit_status: Some(exit_status),
            error: error.map(str::to_owned),
        }
    }

    fn dead(reason: &str, sample: bool) -> Disposition {
        Disposition::Fate(Fate::DeadLetter {
            reason: reason.into(),
            sample,
        })
    }

    /// Every rule of [`disposition`], in the order the worker learns the facts.
    #[test]
    fn each_message_meets_the_fate_its_facts_decide() {
        let config = WorkerConfig {
            max_attempts: 3,
            max_receives: 5,
            retry_backoff: Duration::from_secs(10),
            defer_delay: Duration::from_secs(300),
            stop_when_campaign_stops: false,
            ..WorkerConfig::default()
        };
        let local = WorkerConfig {
            stop_when_campaign_stops: true,
            ..config.clone()
        };
        let first = message(0);
        let last = message(2);
        // Each row: what is known (the facts before it being those that let the message
        // on), the configuration, and the decision.
        struct Row<'a> {
            what: &'a str,
            facts: Facts<'a>,
            config: &'a WorkerConfig,
            expected: Disposition,
        }
        let facts = |message: &'static TaskMessage| Facts::new(message, 1);
        // Leaked so that rows can borrow them for the whole table.
        let first: &'static TaskMessage = Box::leak(Box::new(first));
        let last: &'static TaskMessage = Box::leak(Box::new(last));
        let admitted = |message| Facts {
            admission: Some(Admission::Admitted),
            ..facts(message)
        };
        let standing = |message, standing| Facts {
            campaign: Some(standing),
            ..admitted(message)
        };
        let fresh = |message| Facts {
            has_result: Some(false),
            ..standing(message, running())
        };
        let rolled = |message, outcome| Facts {
            rollout: Some(outcome),
            ..fresh(message)
        };
        let rows = [
            Row {
                what: "first, the campaign is looked up",
                facts: facts(first),
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "a campaign no worker can run",
                facts: Facts {
                    admission: Some(Admission::from(ResolveError::NeverSubmitted {
                        campaign: "x".into(),
                    })),
                    ..facts(first)
                },
                config: &config,
                expected: dead(
                    "campaign `x` was never submitted (no spec in the object store)",
                    false,
                ),
            },
            Row {
                what: "a sample that is not the campaign's",
                facts: Facts {
                    admission: Some(Admission::of(Err(NotAdmitted::ForeignInstance {
                        campaign: "x".into(),
                        instance_id: "t9".into(),
                    }))),
                    ..facts(first)
                },
                config: &config,
                expected: dead("instance `t9` is not a task of campaign `x`", false),
            },
            Row {
                what: "a campaign this worker cannot serve now",
                facts: Facts {
                    admission: Some(Admission::from(ResolveError::Models(LlmError::Config(
                        "KEY is not set".into(),
                    )))),
                    ..facts(first)
                },
                config: &config,
                expected: Disposition::Fate(Fate::HandBack {
                    reason: "model configuration: KEY is not set".into(),
                    delay: Duration::from_secs(300),
                }),
            },
            Row {
                what: "admitted: the campaign's item is looked up",
                facts: admitted(first),
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "delivered max_receives times: a poison task",
                facts: Facts {
                    receive_count: 5,
                    ..admitted(first)
                },
                config: &config,
                expected: dead(
                    "delivered 5 times to workers that never finished it (they crashed, were killed or lost the lease): a poison task?",
                    true,
                ),
            },
            Row {
                what: "one delivery short of max_receives",
                facts: Facts {
                    receive_count: 4,
                    ..admitted(first)
                },
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "a campaign without an item",
                facts: standing(first, Standing::Missing),
                config: &config,
                expected: dead(
                    "campaign `demo` has no campaign item; submit the campaign first",
                    true,
                ),
            },
            Row {
                what: "a paused campaign, on a fleet worker",
                facts: standing(
                    first,
                    Standing::Is {
                        state: CampaignState::Paused,
                        reason: Some("by alice".into()),
                    },
                ),
                config: &config,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "campaign `demo` is paused: by alice".into(),
                    delay: Duration::from_secs(300),
                    stop_worker: false,
                }),
            },
            Row {
                what: "an exhausted campaign, on the local runner",
                facts: standing(
                    first,
                    Standing::Is {
                        state: CampaignState::Exhausted,
                        reason: None,
                    },
                ),
                config: &local,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "campaign `demo` is exhausted".into(),
                    delay: Duration::ZERO,
                    stop_worker: true,
                }),
            },
            Row {
                what: "a done campaign",
                facts: standing(
                    first,
                    Standing::Is {
                        state: CampaignState::Done,
                        reason: None,
                    },
                ),
                config: &config,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "campaign `demo` is done".into(),
                    delay: Duration::from_secs(300),
                    stop_worker: false,
                }),
            },
            Row {
                what: "a running campaign: whether the sample has a result is looked up",
                facts: standing(first, running()),
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "a sample with a result: a duplicate delivery",
                facts: Facts {
                    has_result: Some(true),
                    ..standing(first, running())
                },
                config: &config,
                expected: Disposition::Fate(Fate::Delete { duplicate: true }),
            },
            Row {
                what: "a sample without one: the rollout runs",
                facts: fresh(first),
                config: &config,
                expected: Disposition::Next,
            },
            Row {
                what: "the lease was lost",
                facts: rolled(first, Outcome::Stopped { signalled: false }),
                config: &config,
                expected: Disposition::Fate(Fate::Leave),
            },
            Row {
                what: "a signal stopped the rollout",
                facts: rolled(first, Outcome::Stopped { signalled: true }),
                config: &config,
                expected: Disposition::Fate(Fate::Release),
            },
            Row {
                what: "the budget refused a call",
                facts: rolled(
                    first,
                    finished(ExitStatus::BudgetExhausted, Some("budget of $1 reached")),
                ),
                config: &config,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "budget of $1 reached".into(),
                    delay: Duration::from_secs(300),
                    stop_worker: false,
                }),
            },
            Row {
                what: "the budget refused a call, no reason given",
                facts: rolled(first, finished(ExitStatus::BudgetExhausted, None)),
                config: &local,
                expected: Disposition::Fate(Fate::Defer {
                    reason: "campaign budget exhausted".into(),
                    delay: Duration::ZERO,
                    stop_worker: true,
                }),
            },
            Row {
                what: "an infrastructure error on the first attempt",
                facts: rolled(
                    first,
                    finished(ExitStatus::Error(ErrorKind::Sandbox), Some("docker died")),
                ),
                config: &config,
                expected: Disposition::Fate(Fate::Retry {
                    attempt: 1,
                    error: "error:sandbox: docker died".into(),
                    delay: Duration::from_secs(10),
                }),
            },
            Row {
                what: "an infrastructure error on the last attempt",
                facts: rolled(
                    last,
                    finished(ExitStatus::Error(ErrorKind::LlmUnavailable), Some("503")),
                ),
                config: &config,
                expected: dead(
                    "gave up after 3 attempts; last error: error:llm_unavailable: 503",
                    true,
                ),
            },
            Row {
                what: "a submitted record",
                facts: rolled(first, finished(ExitStatus::Submitted, None)),
                config: &config,
                expected: Disposition::Commit,
            },
            Row {
                what: "the agent's own limits are outcomes, committed",
                facts: rolled(first, finished(ExitStatus::Timeout, None)),
                config: &config,
                expected: Disposition::Commit,
            },
            Row {
                what: "a context overflow is an outcome, not an infrastructure error",
                facts: rolled(
                    first,
                    finished(ExitStatus::ContextExceeded, Some("too long")),
                ),
                config: &config,
                expected: Disposition::Commit,
            },
        ];
        for row in rows {
            assert_eq!(
                disposition(&row.facts, row.config),
                row.expected,
                "{}",
                row.what
            );
        }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_sqs_longest_delay() {
        let backoff = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=8)
            .map(|attempt| retry_delay(backoff, attempt).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 900]);
        assert_eq!(retry_delay(Duration::ZERO, 3), Duration::ZERO);
        assert_eq!(retry_delay(Duration::MAX, u32::MAX), MAX_RETRY_DELAY);
    }
}
