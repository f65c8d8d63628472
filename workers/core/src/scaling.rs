//! How many workers the fleet wants: the scaler function's rule.
//!
//! `desired = clamp(max(ceil(work / tasks_per_worker), busy), min, max)` while there is
//! work; with none, the current count is kept until every live worker has been idle for
//! `idle_before_zero`, then `min` (0 for a fleet that scales to zero). A busy worker is
//! never scaled away: the count never drops below the live workers with rollouts in flight.
//!
//! *Work* is the queue's messages (visible, in flight and delayed) but never more than the
//! samples of campaigns that accept work: messages of a paused or exhausted campaign wait
//! in the queue, deferred, for `resume`, and hold no capacity — an exhausted fleet goes to
//! zero after its idle window and stays there. *Idle since* is the latest activity a live
//! worker reports: its last rollout, or its start when it has run none (a worker that
//! reports nothing is not known to be idle, so the fleet is kept).

use crate::liveness;
use crate::ports::WorkerHeartbeat;
use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    pub min: u32,
    pub max: u32,
    /// Rollouts one worker runs at once (its `--concurrency`).
    pub tasks_per_worker: u32,
    /// How long the whole fleet must have been idle before it shrinks to `min`.
    pub idle_before_zero: TimeDelta,
}

/// What the scaler sees.
#[derive(Debug, Clone)]
pub struct FleetView<'a> {
    /// Messages waiting in the queue.
    pub visible: u64,
    /// Messages received and not yet deleted, and messages delayed (retries, deferrals).
    pub in_flight: u64,
    /// Samples of the campaigns that accept work, not yet accounted for
    /// ([`crate::budget::CampaignRecord::runnable`]): the most of the queue's messages a worker may run.
    pub runnable: u64,
    /// Every heartbeat (stale ones are ignored).
    pub beats: &'a [WorkerHeartbeat],
    /// The capacity set now.
    pub current: u32,
    pub now: DateTime<Utc>,
}

pub fn desired_workers(policy: &ScalingPolicy, fleet: &FleetView<'_>) -> u32 {
    let live: Vec<&WorkerHeartbeat> = fleet
        .beats
        .iter()
        .filter(|b| !liveness::is_stale(b, fleet.now))
        .collect();
    let busy = live.iter().filter(|b| b.in_flight > 0).count() as u32;
    let work = (fleet.visible + fleet.in_flight).min(fleet.runnable);
    let wanted = if work > 0 {
        let per = u64::from(policy.tasks_per_worker.max(1));
        u32::try_from(work.div_ceil(per)).unwrap_or(u32::MAX)
    } else {
        // `None` when a live worker does not say when it was last active.
        let activity: Option<Vec<DateTime<Utc>>> = live.iter().map(|b| b.last_active).collect();
        let idle_long_enough = activity.is_some_and(|times| {
            times
                .into_iter()
                .max()
                .is_none_or(|at| fleet.now - at >= policy.idle_before_zero)
        });
        if idle_long_enough { 0 } else { fleet.current }
    };
    wanted
        .max(busy)
        .clamp(policy.min, policy.max.max(policy.min))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::CampaignRecord;

    fn beat(
        id: &str,
        in_flight: u32,
        active_s_ago: Option<i64>,
        now: DateTime<Utc>,
    ) -> WorkerHeartbeat {
        WorkerHeartbeat {
            worker_id: id.into(),
            at: now,
            in_flight,
            completed: 0,
            version: "v".into(),
            interval_s: 30,
            last_active: active_s_ago.map(|s| now - TimeDelta::seconds(s)),
            open_breakers: Vec::new(),
        }
    }

    fn view(
        visible: u64,
        in_flight: u64,
        beats: &[WorkerHeartbeat],
        current: u32,
        now: DateTime<Utc>,
    ) -> FleetView<'_> {
        FleetView {
            visible,
            in_flight,
            runnable: u64::MAX,
            beats,
            current,
            now,
        }
    }

    #[test]
    fn scales_out_with_backlog_and_to_zero_only_after_idling() {
        let now = Utc::now();
        let policy = ScalingPolicy {
            min: 0,
            max: 10,
            tasks_per_worker: 4,
            idle_before_zero: TimeDelta::minutes(10),
        };
        let desired = |visible, in_flight, beats: &[WorkerHeartbeat], current| {
            desired_workers(&policy, &view(visible, in_flight, beats, current, now))
        };
        assert_eq!(desired(0, 0, &[], 0), 0, "nothing to do");
        assert_eq!(desired(1, 0, &[], 0), 1, "0 -> 1 when work appears");
        assert_eq!(desired(9, 0, &[], 1), 3);
        assert_eq!(desired(500, 0, &[], 3), 10, "capped");
        let busy = [
            beat("a", 2, Some(1), now),
            beat("b", 1, Some(1), now),
            beat("c", 0, Some(1), now),
        ];
        assert_eq!(desired(0, 3, &busy, 3), 2, "never below the busy workers");
        let recently = [beat("a", 0, Some(60), now)];
        assert_eq!(
            desired(0, 0, &recently, 2),
            2,
            "idle, but not for long: kept"
        );
        let long_idle = [beat("a", 0, Some(900), now)];
        assert_eq!(desired(0, 0, &long_idle, 2), 0, "to zero");
        let mut dead = beat("a", 3, Some(1), now);
        dead.at = now - TimeDelta::minutes(10);
        assert_eq!(
            desired(0, 0, &[dead], 1),
            0,
            "a dead worker's beat counts for nothing"
        );
        let floor = ScalingPolicy { min: 1, ..policy };
        assert_eq!(
            desired_workers(&floor, &view(0, 0, &long_idle, 2, now)),
            1,
            "min holds"
        );
    }

    const POLICY: ScalingPolicy = ScalingPolicy {
        min: 0,
        max: 10,
        tasks_per_worker: 4,
        idle_before_zero: TimeDelta::seconds(60),
    };

    #[test]
    fn messages_of_campaigns_that_accept_no_work_hold_no_capacity() {
        let now = Utc::now();
        let mut exhausted = CampaignRecord::new("spent", crate::MicroUsd(1), 12, now);
        exhausted.state = crate::budget::CampaignState::Exhausted;
        exhausted.counts.success = 4;
        let mut paused = CampaignRecord::new("held", crate::MicroUsd(1), 5, now);
        paused.state = crate::budget::CampaignState::Paused;
        let mut running = CampaignRecord::new("live", crate::MicroUsd(1), 10, now);
        running.counts.failed = 7;
        assert_eq!(
            (exhausted.runnable(), paused.runnable(), running.runnable()),
            (0, 0, 3)
        );
        // The budget is spent and the workers stopped: 8 deferred messages wait, delayed.
        let stopped = |runnable, beats: &[WorkerHeartbeat], current| {
            desired_workers(
                &POLICY,
                &FleetView {
                    visible: 0,
                    in_flight: 8,
                    runnable,
                    beats,
                    current,
                    now,
                },
            )
        };
        assert_eq!(stopped(0, &[], 0), 0, "no worker is started for them");
        let idle = [beat("a", 0, Some(120), now)];
        assert_eq!(stopped(0, &idle, 4), 0, "an idle fleet goes to zero");
        let recent = [beat("a", 0, Some(5), now)];
        assert_eq!(stopped(0, &recent, 4), 4, "after its idle window");
        let busy = [beat("a", 1, Some(1), now)];
        assert_eq!(
            stopped(0, &busy, 1),
            1,
            "a rollout still running keeps its worker"
        );
        // Resumed: the same messages are work again, as many as the campaign has left.
        assert_eq!(stopped(3, &[], 0), 1);
        assert_eq!(stopped(100, &[], 0), 2, "never more than the queue holds");
    }

    #[test]
    fn the_idle_window_counts_from_the_last_activity_and_unknown_is_not_idle() {
        let now = Utc::now();
        let desired =
            |beats: &[WorkerHeartbeat]| desired_workers(&POLICY, &view(0, 0, beats, 4, now));
        // The last rollout ended a second ago (the worker beats as it goes idle).
        assert_eq!(desired(&[beat("a", 0, Some(1), now)]), 4);
        // A worker that reports no activity (an older version) is not known to be idle.
        assert_eq!(
            desired(&[beat("a", 0, None, now), beat("b", 0, Some(900), now)]),
            4
        );
        assert_eq!(desired(&[beat("a", 0, Some(61), now)]), 0);
        assert_eq!(desired(&[]), 0, "no live worker: nothing to wait for");
    }
}
