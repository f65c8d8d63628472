//! Resuming an interrupted rollout (invariant 12): what a checkpoint holds, which
//! checkpoint a new attempt continues, how it rebuilds the sandbox, and when it must start
//! over instead.
//!
//! A rollout writes a [`Checkpoint`] after every step. An attempt that receives a sample
//! whose earlier attempt left one continues it: a fresh sandbox replays the recorded
//! commands in order ([`replay_plan`]), each must exit as recorded, and the workdir must
//! then hash as it did when the checkpoint was written; the conversation goes on from the
//! recorded messages ([`TrajectoryRecord::continue_from`]), so no answer the model gave is
//! asked for again. When the state cannot be rebuilt faithfully, the attempt starts over
//! from step 0 and the record says why ([`Rebuild::Restarted`]).

use crate::trajectory::{Step, TrajectoryRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a rollout leaves behind at a step boundary: its record so far and the digest of
/// its workdir after the last step ([`crate::resume`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(flatten)]
    pub record: TrajectoryRecord,
    /// SHA-256 of the workdir's changes after the last recorded step (its diff against the
    /// start and its untracked files); `None` when it could not be read (no git
    /// repository), and then only exit codes check a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir_digest: Option<String>,
}

/// How a resumed attempt rebuilt its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Rebuild {
    /// The recorded commands ran again, in order, in a fresh sandbox; each exited as
    /// recorded, and the workdir hashed as recorded when `workdir_checked`.
    Replayed {
        commands: u32,
        workdir_checked: bool,
        duration_ms: u64,
    },
    /// The state could not be rebuilt faithfully, for `reason`: the attempt started over
    /// from step 0 (the earlier attempts' spend stays in the totals).
    Restarted { reason: String },
}

/// One resume of a rollout, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The worker of the attempt that resumed.
    pub worker_id: String,
    pub at: DateTime<Utc>,
    /// The attempt whose checkpoint was continued (its trajectory id) and how many steps
    /// it had recorded.
    pub from_trajectory: String,
    pub from_steps: u32,
    pub rebuild: Rebuild,
}

/// A recorded action, to run again with the exit code it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay<'a> {
    pub step: u32,
    /// The scaffold's tool (`None`: `bash`).
    pub tool: Option<&'a str>,
    /// The command (or the tool's input).
    pub command: &'a str,
    pub exit_code: i64,
}

/// The commands that rebuild the sandbox of `steps`, in order, or why it cannot be rebuilt
/// faithfully: a command killed at its timeout left whatever it had done by then, which no
/// replay reproduces.
pub fn replay_plan(steps: &[Step]) -> Result<Vec<Replay<'_>>, String> {
    steps
        .iter()
        .filter_map(|step| step.action.as_deref().map(|command| (step, command)))
        .map(|(step, command)| match (step.timed_out, step.exit_code) {
            (false, Some(exit_code)) => Ok(Replay {
                step: step.index,
                tool: step.tool.as_deref(),
                command,
                exit_code,
            }),
            (true, _) => Err(format!(
                "step {} timed out: what its command had done when it was killed cannot be reproduced",
                step.index
            )),
            (false, None) => Err(format!(
                "step {} has no exit code: its command's effect is unknown",
                step.index
            )),
        })
        .collect()
}

/// The keys under a sample's checkpoint prefix in the order a new attempt tries them: the
/// latest attempt's first (trajectory ids are ULIDs, so a greater key is a newer attempt).
pub fn newest_first(keys: &mut [String]) {
    keys.sort_unstable_by(|a, b| b.cmp(a));
}

impl TrajectoryRecord {
    /// Continues `earlier`, the record of an interrupted attempt of the same sample, in this
    /// fresh record (new trajectory id, worker and attempt). With a replayed sandbox the
    /// conversation, steps, totals and times carry over (and a submit: verification is what
    /// is left) and the rollout goes on from the next step; after a restart the spend and
    /// the time spent carry over (the totals and `llm_ms`/`sandbox_ms` say what every
    /// attempt cost), while the steps and the agent's time (`agent_ms`) are this attempt's.
    /// Either way the resume is recorded.
    pub fn continue_from(&mut self, earlier: TrajectoryRecord, resume: Resume) {
        let mut totals = earlier.totals;
        let mut timings = earlier.timings;
        if matches!(resume.rebuild, Rebuild::Replayed { .. }) {
            self.resumed_from_step = Some(earlier.steps.len() as u32);
            self.messages = earlier.messages;
            self.steps = earlier.steps;
            // The rollout began when its first attempt did.
            self.timings.started_at = timings.started_at;
            // A rollout whose agent had submitted goes straight to verification.
            self.exit_status = earlier.exit_status;
        } else {
            totals.n_steps = 0;
            // The agent starts over: its time so far no longer counts against its limit.
            timings.agent_ms = 0;
        }
        self.totals = totals;
        self.timings.llm_ms = timings.llm_ms;
        self.timings.sandbox_ms = timings.sandbox_ms;
        self.timings.infra_wait_ms = timings.infra_wait_ms;
        self.timings.agent_ms = timings.agent_ms;
        self.resumes = earlier.resumes;
        self.resumes.push(resume);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-step record, as stored.
    pub(crate) fn record() -> TrajectoryRecord {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "trajectory_id": "01OLD", "campaign": "c",
            "instance_id": "t", "sample_index": 0, "model": "m", "provider": "openai",
            "scaffold": {"name": "bash", "version": "1", "protocol": "text", "template_hash": "ab"},
            "messages": [
                {"role": "system", "content": "You are an agent."},
                {"role": "user", "content": "Fix it."},
                {"role": "assistant", "content": "```bash\nls\n```"},
                {"role": "user", "content": "a.py"}
            ],
            "steps": [{"index": 0, "action": "ls", "observation": "a.py",
                "observation_truncated": false, "exit_code": 0, "timed_out": false,
                "duration_ms": 3, "llm_duration_ms": 900, "input_tokens": 100,
                "output_tokens": 10, "cost_usd": 0.002, "llm_retries": 0, "model": "m",
                "format_error": false}],
            "patch": "", "exit_status": null,
            "totals": {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.002,
                "llm_calls": 2, "llm_retries": 0, "n_steps": 1},
            "timings": {"started_at": "2026-12-04T10:00:00Z", "finished_at": null,
                "duration_ms": 0, "llm_ms": 900, "sandbox_ms": 3, "verification_ms": 0},
            "image": "img", "image_digest": null, "worker_id": "w1", "attempt": 1
        }))
        .expect("a record")
    }

    fn step(index: u32, action: Option<&str>, exit_code: Option<i64>, timed_out: bool) -> Step {
        let mut step = record().steps[0].clone();
        step.index = index;
        step.action = action.map(str::to_owned);
        step.exit_code = exit_code;
        step.timed_out = timed_out;
        step
    }

    #[test]
    fn the_plan_replays_every_command_in_order_and_skips_steps_without_one() {
        let steps = [
            step(0, Some("ls"), Some(0), false),
            step(1, None, None, false),
            step(2, Some("false"), Some(1), false),
        ];
        assert_eq!(
            replay_plan(&steps),
            Ok(vec![
                Replay {
                    step: 0,
                    tool: None,
                    command: "ls",
                    exit_code: 0
                },
                Replay {
                    step: 2,
                    tool: None,
                    command: "false",
                    exit_code: 1
                },
            ])
        );
    }

    #[test]
    fn a_timed_out_or_unfinished_command_cannot_be_replayed() {
        let timed_out = [
            step(0, Some("ls"), Some(0), false),
            step(1, Some("sleep 999"), None, true),
        ];
        let err = replay_plan(&timed_out).expect_err("not replayable");
        assert!(err.starts_with("step 1 timed out"), "{err}");
        let unknown = [step(0, Some("ls"), None, false)];
        assert!(
            replay_plan(&unknown)
                .expect_err("not replayable")
                .contains("no exit code")
        );
    }

    #[test]
    fn the_newest_attempt_is_tried_first() {
        let mut keys = vec![
            "checkpoints/c/t/000000/01HA.json.zst".to_owned(),
            "checkpoints/c/t/000000/01HC.json.zst".to_owned(),
            "checkpoints/c/t/000000/01HB.json.zst".to_owned(),
        ];
        newest_first(&mut keys);
        assert_eq!(
            keys,
            [
                "checkpoints/c/t/000000/01HC.json.zst",
                "checkpoints/c/t/000000/01HB.json.zst",
                "checkpoints/c/t/000000/01HA.json.zst"
            ]
        );
    }

    fn resume(rebuild: Rebuild) -> Resume {
        Resume {
            worker_id: "w2".into(),
            at: Utc::now(),
            from_trajectory: "01OLD".into(),
            from_steps: 1,
            rebuild,
        }
    }

    #[test]
    fn a_replayed_resume_carries_the_conversation_and_the_spend() {
        let earlier = record();
        let mut fresh = record();
        fresh.trajectory_id = "01NEW".into();
        fresh.messages.clear();
        fresh.steps.clear();
        fresh.totals = Default::default();
        fresh.continue_from(
            earlier.clone(),
            resume(Rebuild::Replayed {
                commands: 1,
                workdir_checked: true,
                duration_ms: 5,
            }),
        );
        assert_eq!(fresh.trajectory_id, "01NEW");
        assert_eq!(fresh.messages, earlier.messages);
        assert_eq!(fresh.steps, earlier.steps);
        assert_eq!(fresh.totals, earlier.totals);
        assert_eq!(fresh.resumed_from_step, Some(earlier.steps.len() as u32));
        assert_eq!(fresh.resumes.len(), 1);
    }

    #[test]
    fn a_restart_keeps_only_the_spend_and_says_why() {
        let earlier = record();
        let mut fresh = record();
        fresh.messages.clear();
        fresh.steps.clear();
        fresh.totals = Default::default();
        fresh.continue_from(
            earlier.clone(),
            resume(Rebuild::Restarted {
                reason: "step 1 timed out".into(),
            }),
        );
        assert!(fresh.steps.is_empty() && fresh.messages.is_empty());
        assert_eq!(fresh.totals.n_steps, 0);
        assert_eq!(fresh.totals.cost_usd, earlier.totals.cost_usd);
        assert_eq!(fresh.totals.llm_calls, earlier.totals.llm_calls);
        assert_eq!(fresh.resumed_from_step, None);
        assert!(matches!(
            &fresh.resumes[0].rebuild,
            Rebuild::Restarted { reason } if reason == "step 1 timed out"
        ));
    }
}
