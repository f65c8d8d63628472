//! Human review: a stratified sample of a campaign's trajectories, and the verdicts
//! reviewers record on them. Stored beside the trajectories (`reviews/{campaign}/`), so
//! they work on the local store and on S3 alike.

use crate::{QualityError, TrajectoryRow, read_all, read_json, write_json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use synthfleet_core::ports::{ObjectStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HumanVerdict {
    Accept,
    Reject,
}

impl HumanVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            HumanVerdict::Accept => "accept",
            HumanVerdict::Reject => "reject",
        }
    }
}

impl std::str::FromStr for HumanVerdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "accept" | "a" => Ok(HumanVerdict::Accept),
            "reject" | "r" => Ok(HumanVerdict::Reject),
            other => Err(format!("`{other}` is not a verdict: use accept or reject")),
        }
    }
}

/// One reviewer's verdict on one trajectory (the latest one counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub trajectory_id: String,
    pub verdict: HumanVerdict,
    pub reviewer: String,
    #[serde(default)]
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

/// A drawn sample: which trajectories to review, and from which stratum each came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewSample {
    pub campaign: String,
    pub seed: u64,
    pub created_at: DateTime<Utc>,
    pub strata: Vec<Stratum>,
    pub trajectory_ids: Vec<String>,
}

/// Trajectories of one model with one outcome; the sample spreads over its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stratum {
    pub model: String,
    /// `accepted`, `resolved` (verified but filtered later) or `unresolved`.
    pub outcome: String,
    pub population: u64,
    pub drawn: u64,
}

pub fn sample_key(campaign: &str) -> String {
    format!("reviews/{campaign}/sample.json")
}

pub fn review_key(campaign: &str, trajectory_id: &str) -> String {
    format!("reviews/{campaign}/verdicts/{trajectory_id}.json")
}

pub async fn load_sample(
    objects: &dyn ObjectStore,
    campaign: &str,
) -> Result<Option<ReviewSample>, QualityError> {
    match read_json(objects, &sample_key(campaign)).await {
        Ok(sample) => Ok(Some(sample)),
        Err(QualityError::Store(StoreError::NotFound { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn load_reviews(
    objects: &dyn ObjectStore,
    campaign: &str,
) -> Result<Vec<Review>, QualityError> {
    read_all(objects, &format!("reviews/{campaign}/verdicts/")).await
}

pub async fn save_sample(
    objects: &dyn ObjectStore,
    sample: &ReviewSample,
) -> Result<(), QualityError> {
    write_json(objects, &sample_key(&sample.campaign), sample).await
}

pub async fn save_review(
    objects: &dyn ObjectStore,
    campaign: &str,
    review: &Review,
) -> Result<(), QualityError> {
    write_json(
        objects,
        &review_key(campaign, &review.trajectory_id),
        review,
    )
    .await
}

fn outcome(row: &TrajectoryRow) -> &'static str {
    match (row.accepted, row.resolved) {
        (true, _) => "accepted",
        (false, true) => "resolved",
        (false, false) => "unresolved",
    }
}

/// A deterministic pseudo-random rank of an id under a seed.
fn rank(seed: u64, id: &str) -> [u8; 32] {
    Sha256::digest(format!("{seed}\0{id}").as_bytes()).into()
}

/// Draws `size` trajectories stratified by (model, outcome): each stratum gets a share
/// proportional to its size (largest remainders), at least one while the size allows;
/// inside a stratum the draw goes round the tasks so that one task cannot fill it.
pub fn draw(campaign: &str, rows: &[TrajectoryRow], size: usize, seed: u64) -> ReviewSample {
    let mut by_key: BTreeMap<(&str, &'static str), Vec<&TrajectoryRow>> = BTreeMap::new();
    for row in rows {
        by_key
            .entry((row.summary.model.as_str(), outcome(row)))
            .or_default()
            .push(row);
    }
    let size = size.min(rows.len());
    let total = rows.len().max(1) as f64;
    // (key, members, quota, what the proportional share still wants beyond the quota)
    let mut strata: Vec<_> = by_key
        .into_iter()
        .map(|(key, members)| {
            let share = members.len() as f64 / total * size as f64;
            (key, members, 0usize, share)
        })
        .collect();
    let mut left = size;
    // One each first, largest strata first, while the size allows...
    let mut by_size: Vec<usize> = (0..strata.len()).collect();
    by_size.sort_by_key(|i| std::cmp::Reverse(strata[*i].1.len()));
    for i in by_size.into_iter().take(left) {
        strata[i].2 += 1;
        strata[i].3 -= 1.0;
        left -= 1;
    }
    // ...then the rest by largest remainder (the first stratum wins a tie).
    while left > 0 {
        let Some(i) = (0..strata.len())
            .filter(|i| strata[*i].2 < strata[*i].1.len())
            .reduce(|best, i| {
                if strata[i].3 > strata[best].3 {
                    i
                } else {
                    best
                }
            })
        else {
            break;
        };
        strata[i].2 += 1;
        strata[i].3 -= 1.0;
        left -= 1;
    }
    let mut picked = Vec::new();
    let mut described = Vec::new();
    for ((model, outcome), members, want, _) in &strata {
        // Tasks in seeded order, each task's trajectories in seeded order, then round robin.
        let mut by_task: BTreeMap<&str, Vec<&TrajectoryRow>> = BTreeMap::new();
        for row in members {
            by_task
                .entry(&row.summary.instance_id)
                .or_default()
                .push(row);
        }
        let mut queues: Vec<Vec<&TrajectoryRow>> = by_task.into_values().collect();
        for queue in &mut queues {
            queue.sort_by_key(|r| std::cmp::Reverse(rank(seed, &r.summary.trajectory_id)));
        }
        queues.sort_by_key(|q| rank(seed, &q[0].summary.instance_id));
        let mut drawn = 0;
        loop {
            let before = drawn;
            for queue in queues.iter_mut() {
                if drawn < *want
                    && let Some(row) = queue.pop()
                {
                    picked.push(row.summary.trajectory_id.clone());
                    drawn += 1;
                }
            }
            if drawn == *want || drawn == before {
                break;
            }
        }
        described.push(Stratum {
            model: (*model).to_owned(),
            outcome: (*outcome).to_owned(),
            population: members.len() as u64,
            drawn: drawn as u64,
        });
    }
    ReviewSample {
        campaign: campaign.to_owned(),
        seed,
        created_at: Utc::now(),
        strata: described,
        trajectory_ids: picked,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use synthfleet_core::ports::TrajectorySummary;

    /// A row of trajectory `id` of `model` on `task`, accepted (and resolved) or not.
    pub(crate) fn row(id: &str, model: &str, task: &str, accepted: bool) -> TrajectoryRow {
        TrajectoryRow {
            summary: TrajectorySummary {
                campaign: "c".into(),
                trajectory_id: id.into(),
                instance_id: task.into(),
                sample_index: 0,
                model: model.into(),
                provider: "openai".into(),
                cost_usd: 0.0,
                input_tokens: 0,
                output_tokens: 0,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                n_steps: 3,
                created_at: Utc::now(),
                variant: None,
            },
            scaffold: "bash@1".into(),
            exit_status: "submitted".into(),
            resolved: accepted,
            reward: if accepted { 1.0 } else { 0.0 },
            duration_ms: 0,
            structural: "pass".into(),
            integrity: "pass".into(),
            execution: "pass".into(),
            heuristics: "pass".into(),
            dedup: "pass".into(),
            judge: "skipped".into(),
            rejected_at: None,
            reject_reason: None,
            accepted,
            pattern: String::new(),
            patch_hash: None,
            duplicate_of: None,
            review: None,
            suspect: false,
            hack_signals: String::new(),
            start_commit: None,
            harness_hash: None,
        }
    }

    #[test]
    fn sample_covers_every_stratum_proportionally_and_spreads_over_tasks() {
        let mut rows = Vec::new();
        // Model a: 60 accepted over 3 tasks, 20 unresolved; model b: 20 accepted.
        for i in 0..60 {
            rows.push(row(
                &format!("a-acc-{i}"),
                "a",
                &format!("t{}", i % 3),
                true,
            ));
        }
        for i in 0..20 {
            rows.push(row(&format!("a-un-{i}"), "a", "t0", false));
            rows.push(row(&format!("b-acc-{i}"), "b", "t1", true));
        }
        let sample = draw("c", &rows, 10, 7);
        assert_eq!(sample.trajectory_ids.len(), 10);
        let drawn: BTreeMap<(String, String), u64> = sample
            .strata
            .iter()
            .map(|s| ((s.model.clone(), s.outcome.clone()), s.drawn))
            .collect();
        assert_eq!(drawn[&("a".into(), "accepted".into())], 6);
        assert_eq!(drawn[&("a".into(), "unresolved".into())], 2);
        assert_eq!(drawn[&("b".into(), "accepted".into())], 2);
        // The 6 from a/accepted spread evenly over its 3 tasks.
        let picked_a: Vec<&TrajectoryRow> = rows
            .iter()
            .filter(|r| {
                sample.trajectory_ids.contains(&r.summary.trajectory_id)
                    && r.accepted
                    && r.summary.model == "a"
            })
            .collect();
        for task in ["t0", "t1", "t2"] {
            assert_eq!(
                picked_a
                    .iter()
                    .filter(|r| r.summary.instance_id == task)
                    .count(),
                2
            );
        }
        // Same seed, same sample; another seed, another one.
        assert_eq!(
            draw("c", &rows, 10, 7).trajectory_ids,
            sample.trajectory_ids
        );
        assert_ne!(
            draw("c", &rows, 10, 8).trajectory_ids,
            sample.trajectory_ids
        );
        // A size above the population takes everything once.
        let all = draw("c", &rows, 1000, 1);
        assert_eq!(all.trajectory_ids.len(), rows.len());
    }
}
