//! How many workers the fleet wants: the scaler function's rule.
//!
//! `desired = clamp(max(ceil((visible + in_flight) / tasks_per_worker), busy), min, max)`
//! while there is work; with none (nothing visible, nothing in flight), the current count
//! is kept until every live worker has been idle for `idle_before_zero`, then `min`
//! (0 for a fleet that scales to zero). A busy worker is never scaled away: the count
//! never drops below the live workers with rollouts in flight.

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
    /// Messages received and not yet deleted.
    pub in_flight: u64,
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
    let work = fleet.visible + fleet.in_flight;
    let wanted = if work > 0 {
        let per = u64::from(policy.tasks_per_worker.max(1));
        u32::try_from(work.div_ceil(per)).unwrap_or(u32::MAX)
    } else {
        let last_active = live.iter().filter_map(|b| b.last_active).max();
        let idle_long_enough =
            last_active.is_none_or(|at| fleet.now - at >= policy.idle_before_zero);
        if idle_long_enough { 0 } else { fleet.current }
    };
    wanted
        .max(busy)
        .clamp(policy.min, policy.max.max(policy.min))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
