//! `[sampling]`: how many samples each task gets. `fixed` (the default) gives every task
//! `samples_per_task`; `adaptive` gives each a first round and more rounds only to the
//! tasks whose outcomes are mixed — the ones a group-based RL trainer learns from — out of
//! the same pool of `tasks × samples_per_task` samples. The decisions are
//! [`crate::sampling`]'s.

use super::CampaignConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every task gets `samples_per_task` samples.
    #[default]
    Fixed,
    /// Rounds of `round_size` samples while a task's outcomes are mixed.
    Adaptive,
}

/// What ends a task's sampling after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopWhen {
    /// Every sample of the round resolved the task.
    AllResolved,
    /// No sample of the round resolved it.
    AllUnresolved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    pub strategy: Strategy,
    /// Samples per round (adaptive): the group a trainer compares. Default: 4, at most
    /// `samples_per_task`.
    pub round_size: Option<u32>,
    /// Samples one task may get in all (adaptive), a whole number of rounds. Default:
    /// 4 × `samples_per_task` rounded down to whole rounds.
    pub max_per_task: Option<u32>,
    /// Which uniform rounds stop a task; both by default. An empty list never stops one
    /// early (rounds go on to `max_per_task` while the pool lasts).
    pub stop_when: Vec<StopWhen>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            strategy: Strategy::Fixed,
            round_size: None,
            max_per_task: None,
            stop_when: vec![StopWhen::AllResolved, StopWhen::AllUnresolved],
        }
    }
}

impl SamplingConfig {
    pub(super) fn is_default(&self) -> bool {
        *self == SamplingConfig::default()
    }
}

impl CampaignConfig {
    pub fn is_adaptive(&self) -> bool {
        self.sampling.strategy == Strategy::Adaptive
    }

    /// The samples of one round: a group of samples of one task drawn together. A fixed
    /// campaign has one round of `samples_per_task`.
    pub fn round_size(&self) -> u32 {
        match self.sampling.strategy {
            Strategy::Fixed => self.samples_per_task,
            Strategy::Adaptive => self
                .sampling
                .round_size
                .unwrap_or(4)
                .min(self.samples_per_task)
                .max(1),
        }
    }

    /// The round a sample belongs to (samples are numbered round after round).
    pub fn round_of(&self, sample_index: u32) -> u32 {
        sample_index / self.round_size().max(1)
    }

    /// The most samples one task may get.
    pub fn max_samples_per_task(&self) -> u32 {
        match self.sampling.strategy {
            Strategy::Fixed => self.samples_per_task,
            Strategy::Adaptive => self.sampling.max_per_task.unwrap_or_else(|| {
                let k = self.round_size();
                self.samples_per_task.saturating_mul(4) / k * k
            }),
        }
    }

    /// The samples the campaign's first submission asks of one task: all of them, or the
    /// first round.
    pub fn first_samples_per_task(&self) -> u32 {
        match self.sampling.strategy {
            Strategy::Fixed => self.samples_per_task,
            Strategy::Adaptive => self.round_size(),
        }
    }

    /// What each of `tasks` tasks gets, for people: "4 samples", or the first round and
    /// the adaptive limits.
    pub fn describe_sampling(&self, tasks: usize) -> String {
        match self.sampling.strategy {
            Strategy::Fixed => format!("{} samples", self.samples_per_task),
            Strategy::Adaptive => format!(
                "a first round of {} (adaptive sampling: up to {} per task, {} in all)",
                self.round_size(),
                self.max_samples_per_task(),
                tasks as u64 * u64::from(self.samples_per_task)
            ),
        }
    }

    /// `[sampling]`: a round of at least one sample, at most `samples_per_task`; a
    /// per-task maximum of whole rounds.
    pub(super) fn validate_sampling(&self) -> Result<(), String> {
        let s = &self.sampling;
        if s.strategy == Strategy::Fixed {
            if s.round_size.is_some() || s.max_per_task.is_some() {
                return Err(
                    "`round_size` and `max_per_task` apply to `strategy = \"adaptive\"` only; set it or remove them"
                        .into(),
                );
            }
            return Ok(());
        }
        if let Some(k) = s.round_size
            && (k == 0 || k > self.samples_per_task)
        {
            return Err(format!(
                "`round_size = {k}` must be from 1 to `samples_per_task` ({})",
                self.samples_per_task
            ));
        }
        let (max, k) = (self.max_samples_per_task(), self.round_size());
        if max < k || max % k != 0 {
            return Err(format!(
                "`max_per_task = {max}` must be a whole number of rounds (`round_size` = {k}; e.g. {})",
                k * (max / k).max(1)
            ));
        }
        Ok(())
    }
}
