//! The agent loop's books, as pure rules: when a step may no longer start, how long a
//! command may run, and what each call adds to the record's totals and timings.

use super::ms;
use std::time::Duration;
use synthfleet_core::MicroUsd;
use synthfleet_core::ports::ChatCompletion;
use synthfleet_core::trajectory::{ExitStatus, Step, Timings, Totals, TrajectoryRecord};

/// The agent loop's books: the agent's deadline, pushed back by the time each call spent
/// waiting on the infrastructure, and the rollout's spend against its cost limit; each
/// call is booked into the record's totals and timings.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StepBook {
    deadline: tokio::time::Instant,
    spent: MicroUsd,
    cost_limit: Option<MicroUsd>,
}

/// Step `index` as the model's answer makes it: the call's time (`llm_ms`), tokens, cost
/// and retries and the model that served it; no action or observation yet.
fn step_of_call(
    index: u32,
    completion: &ChatCompletion,
    cost: MicroUsd,
    llm_ms: u64,
    model: &str,
) -> Step {
    let usage = completion.usage;
    Step {
        index,
        action: None,
        observation: String::new(),
        observation_truncated: false,
        exit_code: None,
        timed_out: false,
        duration_ms: 0,
        llm_duration_ms: llm_ms,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_read_tokens: usage.cache_read_tokens,
        cache_write_tokens: usage.cache_write_tokens,
        cost_usd: cost.as_usd(),
        cost_estimated: usage.estimated,
        context_elided: Vec::new(),
        llm_retries: completion.retries,
        model: model.to_owned(),
        format_error: false,
        tool: None,
    }
}

/// How long a metered call took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CallTime {
    /// From the budget reservation to the reply (or the failure).
    pub elapsed: Duration,
    /// Of it, the wait for budget that other calls held.
    pub budget_wait: Duration,
}

impl StepBook {
    /// Books from `spent` on (the calls of steps carried over from an interrupted attempt).
    pub(super) fn new(
        deadline: tokio::time::Instant,
        cost_limit: Option<MicroUsd>,
        spent: MicroUsd,
    ) -> StepBook {
        StepBook {
            deadline,
            spent,
            cost_limit,
        }
    }

    /// How much of `limit` the agent has used by `now` (the limit less the time left).
    pub(super) fn used(&self, now: tokio::time::Instant, limit: Duration) -> Duration {
        limit.saturating_sub(self.deadline.saturating_duration_since(now))
    }

    /// Pushes the deadline back by `took`: time the rollout spent on the infrastructure's
    /// work (writing a checkpoint), not the agent's.
    pub(super) fn pause(&mut self, took: Duration) {
        self.deadline += took;
    }

    /// Why no further step may start at `now`: the agent's time is up, or else the
    /// rollout's cost limit is reached.
    pub(super) fn limit_reached(&self, now: tokio::time::Instant) -> Option<ExitStatus> {
        if now >= self.deadline {
            return Some(ExitStatus::Timeout);
        }
        if self.cost_limit.is_some_and(|limit| self.spent >= limit) {
            return Some(ExitStatus::CostLimit);
        }
        None
    }

    /// How long a command started at `now` may run: a step's timeout, cut to the agent's
    /// time left, but at least a second.
    pub(super) fn command_timeout(
        &self,
        now: tokio::time::Instant,
        step_timeout: Duration,
    ) -> Duration {
        step_timeout
            .min(self.deadline.saturating_duration_since(now))
            .max(Duration::from_secs(1))
    }

    /// Books a completed call (as [`StepBook::completed`]) into `record`'s totals and
    /// timings and makes its step, the next of `record`'s, answered by `model`.
    pub(super) fn completed_step(
        &mut self,
        record: &mut TrajectoryRecord,
        time: CallTime,
        completion: &ChatCompletion,
        cost: MicroUsd,
        model: &str,
    ) -> Step {
        let llm_ms = self.completed(
            &mut record.totals,
            &mut record.timings,
            time,
            completion,
            cost,
        );
        step_of_call(record.steps.len() as u32, completion, cost, llm_ms, model)
    }

    /// Books a completed call of `cost`: its tokens, cost, retries and step into `totals`,
    /// its times into `timings`, its cost against the limit. Only the model's own time
    /// counts against the agent's deadline: budget waits, rate limits, failed attempts and
    /// backoff are the infrastructure's and push the deadline back. Returns the call's LLM
    /// time in milliseconds (budget waits excluded), the step's `llm_duration_ms`.
    pub(super) fn completed(
        &mut self,
        totals: &mut Totals,
        timings: &mut Timings,
        time: CallTime,
        completion: &ChatCompletion,
        cost: MicroUsd,
    ) -> u64 {
        let waited = time.elapsed.saturating_sub(completion.generation);
        self.deadline += waited;
        timings.infra_wait_ms += ms(waited);
        let llm_ms = ms(time.elapsed.saturating_sub(time.budget_wait));
        timings.llm_ms += llm_ms;
        self.spent = self.spent.saturating_add(cost);
        let usage = completion.usage;
        totals.input_tokens += usage.input_tokens;
        totals.output_tokens += usage.output_tokens;
        totals.cache_read_tokens += usage.cache_read_tokens;
        totals.cache_write_tokens += usage.cache_write_tokens;
        totals.add_cost(cost);
        totals.llm_calls += 1;
        totals.llm_retries += completion.retries;
        totals.n_steps += 1;
        llm_ms
    }

    /// Books a call that failed (the rollout ends with it): a call, what the provider
    /// billed for it, its budget wait as the infrastructure's time and the rest as LLM time.
    pub(super) fn failed(
        totals: &mut Totals,
        timings: &mut Timings,
        time: CallTime,
        billed: MicroUsd,
    ) {
        totals.llm_calls += 1;
        totals.add_cost(billed);
        timings.infra_wait_ms += ms(time.budget_wait);
        timings.llm_ms += ms(time.elapsed.saturating_sub(time.budget_wait));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use synthfleet_core::ports::Usage;
    use synthfleet_core::trajectory::{ChatMessage, Role};
    use tokio::time::Instant;

    fn completion(generation: Duration, retries: u32) -> ChatCompletion {
        ChatCompletion {
            message: ChatMessage::text(Role::Assistant, "ok"),
            usage: Usage {
                input_tokens: 1000,
                output_tokens: 200,
                cache_read_tokens: 30,
                cache_write_tokens: 4,
                estimated: false,
            },
            retries,
            finish_reason: None,
            generation,
        }
    }

    fn timings() -> Timings {
        Timings::started(Utc::now())
    }

    #[test]
    fn only_the_models_own_time_counts_against_the_agent() {
        let start = Instant::now();
        let mut book = StepBook::new(start + Duration::from_secs(60), None, MicroUsd::ZERO);
        let (mut totals, mut timings) = (Totals::default(), timings());
        // 10 s in all: 2 s waiting for budget, 5 s generating, 3 s of retries and backoff.
        let llm_ms = book.completed(
            &mut totals,
            &mut timings,
            CallTime {
                elapsed: Duration::from_secs(10),
                budget_wait: Duration::from_secs(2),
            },
            &completion(Duration::from_secs(5), 2),
            MicroUsd(1_500),
        );
        assert_eq!(llm_ms, 8_000, "the call, budget waits excluded");
        assert_eq!(timings.llm_ms, 8_000);
        assert_eq!(timings.infra_wait_ms, 5_000, "all but the generation");
        assert_eq!(
            book.deadline,
            start + Duration::from_secs(65),
            "the deadline moves by the infrastructure's time"
        );
        assert_eq!(
            totals,
            Totals {
                input_tokens: 1000,
                output_tokens: 200,
                cache_read_tokens: 30,
                cache_write_tokens: 4,
                cost_usd: 0.0015,
                llm_calls: 1,
                llm_retries: 2,
                n_steps: 1,
            }
        );
        book.completed(
            &mut totals,
            &mut timings,
            CallTime {
                elapsed: Duration::from_secs(1),
                budget_wait: Duration::ZERO,
            },
            &completion(Duration::from_secs(1), 0),
            MicroUsd(500),
        );
        assert_eq!((totals.n_steps, totals.llm_calls), (2, 2));
        assert_eq!(totals.cost_usd, 0.002);
        assert_eq!(book.spent, MicroUsd(2_000));
        assert_eq!(
            timings.infra_wait_ms, 5_000,
            "a call with no wait adds none"
        );
        assert_eq!(book.deadline, start + Duration::from_secs(65));
    }

    #[test]
    fn a_failed_call_is_booked_with_what_it_billed() {
        let (mut totals, mut timings) = (Totals::default(), timings());
        StepBook::failed(
            &mut totals,
            &mut timings,
            CallTime {
                elapsed: Duration::from_secs(7),
                budget_wait: Duration::from_secs(3),
            },
            MicroUsd(250),
        );
        assert_eq!(
            (totals.llm_calls, totals.n_steps, totals.cost_usd),
            (1, 0, 0.00025),
            "a call, but no step"
        );
        assert_eq!((timings.llm_ms, timings.infra_wait_ms), (4_000, 3_000));
    }

    #[test]
    fn steps_stop_at_the_deadline_first_then_at_the_cost_limit() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut book = StepBook::new(deadline, Some(MicroUsd(1_000)), MicroUsd::ZERO);
        assert_eq!(book.limit_reached(start), None);
        let call = CallTime {
            elapsed: Duration::from_secs(1),
            budget_wait: Duration::ZERO,
        };
        let (mut totals, mut timings) = (Totals::default(), timings());
        book.completed(
            &mut totals,
            &mut timings,
            call,
            &completion(Duration::from_secs(1), 0),
            MicroUsd(999),
        );
        assert_eq!(book.limit_reached(start), None, "just under the limit");
        book.completed(
            &mut totals,
            &mut timings,
            call,
            &completion(Duration::from_secs(1), 0),
            MicroUsd(1),
        );
        assert_eq!(book.limit_reached(start), Some(ExitStatus::CostLimit));
        assert_eq!(
            book.limit_reached(deadline),
            Some(ExitStatus::Timeout),
            "time is checked first"
        );
        let unlimited = StepBook::new(deadline, None, MicroUsd::ZERO);
        assert_eq!(unlimited.limit_reached(start), None);
    }

    #[test]
    fn a_command_gets_the_step_timeout_cut_to_the_time_left_but_a_second_at_least() {
        let start = Instant::now();
        let book = StepBook::new(start + Duration::from_secs(100), None, MicroUsd::ZERO);
        let step = Duration::from_secs(30);
        assert_eq!(book.command_timeout(start, step), step);
        assert_eq!(
            book.command_timeout(start + Duration::from_secs(90), step),
            Duration::from_secs(10)
        );
        assert_eq!(
            book.command_timeout(start + Duration::from_secs(200), step),
            Duration::from_secs(1)
        );
    }
}
