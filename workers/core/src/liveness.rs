//! Who is alive in the fleet: the rule that decides whose sandboxes may be reaped.

use crate::ports::WorkerHeartbeat;
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
}
