//! Builders the tests of several crates share (feature `testing`; never in a release
//! binary).

use crate::message::ResultKey;
use crate::ports::{TrajectoryMeta, TrajectorySummary};
use crate::trajectory::{ExitStatus, RecordStatus};
use chrono::Utc;

/// A trajectory item of `key`, as a worker commits it.
pub fn sample_meta(key: &ResultKey, trajectory_id: &str) -> TrajectoryMeta {
    TrajectoryMeta {
        summary: TrajectorySummary {
            campaign: key.campaign.clone(),
            trajectory_id: trajectory_id.into(),
            instance_id: key.instance_id.clone(),
            sample_index: key.sample_index,
            model: "m".into(),
            provider: "replay".into(),
            cost_usd: 0.01,
            input_tokens: 100,
            output_tokens: 10,
            cache_read_tokens: 900,
            cache_write_tokens: 0,
            n_steps: 1,
            created_at: Utc::now(),
            variant: None,
        },
        status: RecordStatus::Success,
        exit_status: ExitStatus::Submitted,
        resolved: Some(true),
        reward: Some(1.0),
        object_key: format!("trajectories/{}/{trajectory_id}", key.campaign),
        sha256: "0".repeat(64),
        size_bytes: 1,
        worker_id: "w".into(),
        expires_at: None,
    }
}
