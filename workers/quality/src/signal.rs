//! The learning signal of a campaign's samples, for group-based RL (GRPO, DAPO): samples
//! are drawn in groups — a task's round ([`CampaignConfig::round_of`]; a fixed campaign's
//! round is all its samples of the task) — and a group whose samples all resolved the task,
//! or none did, has no advantage to learn from. The share of trajectories in groups with
//! mixed outcomes is what adaptive sampling raises; each task's pass rate, with its 95 %
//! Wilson interval, is what it decides by.

use crate::experiment::wilson;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use synthfleet_core::campaign::CampaignConfig;
use synthfleet_core::sampling::AdaptiveTally;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// `fixed` or `adaptive`.
    pub strategy: String,
    pub round_size: u32,
    /// (task, round) groups with at least one trajectory, and those with mixed outcomes.
    pub groups: u64,
    pub mixed_groups: u64,
    pub trajectories: u64,
    /// Trajectories in groups with mixed outcomes, and their share of all.
    pub signal_trajectories: u64,
    pub signal_share: f64,
    /// Adaptive sampling's account from the campaign item: the pool, the rounds added,
    /// the tasks stopped and why.
    pub tally: Option<AdaptiveTally>,
    pub tasks: Vec<TaskRate>,
}

/// One task's pass rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRate {
    pub instance_id: String,
    pub trajectories: u64,
    pub resolved: u64,
    pub rounds: u32,
    pub pass_rate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// The signal of `samples` — (instance, sample index, resolved) of every trajectory.
pub fn sampling<'a>(
    config: &CampaignConfig,
    tally: Option<&AdaptiveTally>,
    samples: impl IntoIterator<Item = (&'a str, u32, bool)>,
) -> Sampling {
    // (instance, round) → (trajectories, resolved)
    let mut groups: BTreeMap<(&str, u32), (u64, u64)> = BTreeMap::new();
    for (instance, sample, resolved) in samples {
        let g = groups
            .entry((instance, config.round_of(sample)))
            .or_default();
        g.0 += 1;
        g.1 += u64::from(resolved);
    }
    let mixed = |(n, r): &(u64, u64)| *r > 0 && r < n;
    let trajectories: u64 = groups.values().map(|g| g.0).sum();
    let signal: u64 = groups.values().filter(|g| mixed(g)).map(|g| g.0).sum();
    let mut tasks: BTreeMap<&str, (u64, u64, u32)> = BTreeMap::new();
    for ((instance, _), (n, r)) in &groups {
        let t = tasks.entry(instance).or_default();
        (t.0, t.1, t.2) = (t.0 + n, t.1 + r, t.2 + 1);
    }
    Sampling {
        strategy: if config.is_adaptive() {
            "adaptive"
        } else {
            "fixed"
        }
        .to_owned(),
        round_size: config.round_size(),
        groups: groups.len() as u64,
        mixed_groups: groups.values().filter(|g| mixed(g)).count() as u64,
        trajectories,
        signal_trajectories: signal,
        signal_share: if trajectories == 0 {
            0.0
        } else {
            signal as f64 / trajectories as f64
        },
        tally: tally.cloned(),
        tasks: tasks
            .into_iter()
            .map(|(instance_id, (n, r, rounds))| {
                let (ci_low, ci_high) = wilson(r, n);
                TaskRate {
                    instance_id: instance_id.to_owned(),
                    trajectories: n,
                    resolved: r,
                    rounds,
                    pass_rate: r as f64 / n.max(1) as f64,
                    ci_low,
                    ci_high,
                }
            })
            .collect(),
    }
}

impl Sampling {
    pub fn to_text(&self, task_rows: usize) -> String {
        let mut out = format!(
            "\nSampling: {} (groups of {}): learning signal {:.1}% of trajectories ({} of {} in mixed-outcome groups; {} of {} groups mixed)\n",
            self.strategy,
            self.round_size,
            self.signal_share * 100.0,
            self.signal_trajectories,
            self.trajectories,
            self.mixed_groups,
            self.groups
        );
        if let Some(t) = &self.tally {
            out += &format!(
                "  pool {} samples for {} tasks; {} rounds added for mixed outcomes; tasks stopped: {}\n",
                t.pool,
                t.tasks,
                t.continued,
                t.stopped_text().unwrap_or_else(|| "none".to_owned())
            );
        }
        out += "  task                            n  resolved  rounds  pass rate [95% interval]\n";
        for t in self.tasks.iter().take(task_rows) {
            out += &format!(
                "  {:<30} {:>3} {:>9} {:>7}  {:>5.1}% [{:.1}%, {:.1}%]\n",
                t.instance_id,
                t.trajectories,
                t.resolved,
                t.rounds,
                t.pass_rate * 100.0,
                t.ci_low * 100.0,
                t.ci_high * 100.0
            );
        }
        if self.tasks.len() > task_rows {
            out += &format!(
                "  ... and {} more tasks (--format json lists them all)\n",
                self.tasks.len() - task_rows
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synthfleet_core::campaign::Strategy;

    #[test]
    fn the_signal_is_the_share_of_trajectories_in_mixed_groups() {
        let mut config: CampaignConfig = toml::from_str(
            "name = \"c\"\ntasks = [\"t.jsonl\"]\nsamples_per_task = 4\nbudget_usd = 1\n[[models]]\nname = \"a\"\nprovider = \"replay\"\n",
        )
        .expect("campaign");
        // Fixed: one group of 4 per task. `a` mixed, `b` all resolved.
        let samples = [
            ("a", 0, true),
            ("a", 1, false),
            ("a", 2, false),
            ("a", 3, false),
            ("b", 0, true),
            ("b", 1, true),
            ("b", 2, true),
            ("b", 3, true),
        ];
        let s = sampling(&config, None, samples);
        assert_eq!((s.groups, s.mixed_groups, s.signal_trajectories), (2, 1, 4));
        assert!((s.signal_share - 0.5).abs() < 1e-9);
        assert_eq!(s.tasks[0].resolved, 1);
        assert!(
            (s.tasks[0].ci_low - 0.0456).abs() < 1e-3,
            "{:?}",
            s.tasks[0]
        );
        // Adaptive rounds of 2: `a`'s second round (2, 3) is uniform.
        config.sampling.strategy = Strategy::Adaptive;
        config.sampling.round_size = Some(2);
        let s = sampling(&config, None, samples);
        assert_eq!((s.groups, s.mixed_groups, s.signal_trajectories), (4, 1, 2));
        assert_eq!(s.tasks[0].rounds, 2);
        assert!(s.to_text(10).contains("learning signal 25.0%"));
    }
}
