//! Continuing an interrupted attempt (invariant 12; the rules are
//! [`synthfleet_core::resume`]): its checkpoint found, its sandbox state rebuilt in a fresh
//! sandbox by replaying the recorded commands, or else a clean restart with the reason.

use super::Rollouts;
use super::sandbox::workdir_digest;
use chrono::Utc;
use std::time::{Duration, Instant};
use synthfleet_core::error_chain;
use synthfleet_core::message::ResultKey;
use synthfleet_core::ports::Sandbox;
use synthfleet_core::resume::{Checkpoint, Rebuild, Resume, replay_plan};
use synthfleet_core::store::Found;
use synthfleet_core::trajectory::TrajectoryRecord;
use tracing::{info, warn};

/// What an attempt continues: the checkpoint found, before its sandbox is rebuilt.
pub(super) struct Resuming {
    found: Found,
}

/// What rebuilding came to: the resume to record, the record it continues (none when the
/// checkpoint could not be read), and whether the sandbox holds replayed state that a
/// clean restart must throw away.
pub(super) struct Rebuilt {
    pub resume: Resume,
    pub earlier: Option<TrajectoryRecord>,
    pub dirty: bool,
}

impl Rollouts {
    /// The checkpoint this attempt continues: with `scaffold.resume` on, the newest an
    /// earlier attempt of the sample left. A failed listing starts the rollout over (it
    /// costs the earlier steps' calls again, never a wrong record).
    pub(super) async fn resuming(&self, key: &ResultKey) -> Option<Resuming> {
        // An external agent's own state cannot be rebuilt: it starts over.
        if !self.campaign.config.scaffold.resume
            || self.campaign.scaffold_kind_for(key.sample_index) == "external"
        {
            return None;
        }
        match self.store.latest_checkpoint(key).await {
            Ok(found) => found.map(|found| Resuming { found }),
            Err(e) => {
                warn!(error = %error_chain(&e), "listing the sample's checkpoints failed; the rollout starts from step 0");
                None
            }
        }
    }

    /// Brings `sandbox` (fresh, started at `start_commit`) to the state the checkpoint's
    /// agent had: every recorded command again, in order, each exiting as recorded, then
    /// the workdir's digest compared with the checkpoint's. Says how, or why it could not.
    pub(super) async fn rebuild(
        &self,
        resuming: Resuming,
        sandbox: &dyn Sandbox,
        workdir: &str,
        start_commit: Option<&str>,
    ) -> Rebuilt {
        let from_trajectory = resuming.found.trajectory_id().to_owned();
        let resume = |from_steps: u32, rebuild: Rebuild| Resume {
            worker_id: self.worker_id.clone(),
            at: Utc::now(),
            from_trajectory: from_trajectory.clone(),
            from_steps,
            rebuild,
        };
        let checkpoint = match resuming.found.checkpoint {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                let reason = format!(
                    "the checkpoint {} could not be read: {}",
                    resuming.found.key,
                    error_chain(&e)
                );
                warn!(%reason, "starting the rollout over");
                return Rebuilt {
                    resume: resume(0, Rebuild::Restarted { reason }),
                    earlier: None,
                    dirty: false,
                };
            }
        };
        let from_steps = checkpoint.record.steps.len() as u32;
        let started = Instant::now();
        let (rebuild, dirty) = match self
            .replay(&checkpoint, sandbox, workdir, start_commit)
            .await
        {
            Ok((commands, workdir_checked)) => (
                Rebuild::Replayed {
                    commands,
                    workdir_checked,
                    duration_ms: started.elapsed().as_millis() as u64,
                },
                false,
            ),
            Err((reason, dirty)) => {
                warn!(%reason, from_steps, "the sandbox state cannot be rebuilt; starting the rollout over");
                (Rebuild::Restarted { reason }, dirty)
            }
        };
        if matches!(rebuild, Rebuild::Replayed { .. }) {
            info!(from_steps, from = %from_trajectory, "resuming the rollout");
        }
        Rebuilt {
            resume: resume(from_steps, rebuild),
            earlier: Some(checkpoint.record),
            dirty,
        }
    }

    /// Replays the checkpoint's commands; returns how many ran and whether the workdir was
    /// checked, or why the state differs (and whether the sandbox was touched).
    async fn replay(
        &self,
        checkpoint: &Checkpoint,
        sandbox: &dyn Sandbox,
        workdir: &str,
        start_commit: Option<&str>,
    ) -> Result<(u32, bool), (String, bool)> {
        let earlier = &checkpoint.record;
        let started_at = earlier
            .environment
            .as_ref()
            .and_then(|e| e.start_commit.as_deref());
        if started_at != start_commit {
            return Err((
                format!(
                    "the task's starting commit changed ({} then, {} now)",
                    started_at.unwrap_or("none"),
                    start_commit.unwrap_or("none")
                ),
                false,
            ));
        }
        if let (Some(then), Some(now)) = (&earlier.image_digest, sandbox.image_digest())
            && then != now
        {
            return Err((
                format!("the task's image changed ({then} then, {now} now)"),
                false,
            ));
        }
        let plan = replay_plan(&earlier.steps).map_err(|reason| (reason, false))?;
        let scaffold =
            Rollouts::scaffold(&earlier.scaffold.name).map_err(|reason| (reason, false))?;
        let timeout = Duration::from_secs(self.campaign.config.scaffold.step_timeout_s);
        for replay in &plan {
            let out = scaffold
                .run(sandbox, replay.tool, replay.command, timeout)
                .await
                .map_err(|e| {
                    (
                        format!("replaying step {}: {}", replay.step, error_chain(&e)),
                        true,
                    )
                })?;
            if out.timed_out || out.exit_code != Some(replay.exit_code) {
                let now = if out.timed_out {
                    "timed out".to_owned()
                } else {
                    out.exit_code
                        .map_or("exited without a code".into(), |c| format!("exited {c}"))
                };
                return Err((
                    format!(
                        "step {} {now} on replay where it had exited {}",
                        replay.step, replay.exit_code
                    ),
                    true,
                ));
            }
        }
        let Some(then) = &checkpoint.workdir_digest else {
            return Ok((plan.len() as u32, false));
        };
        match workdir_digest(sandbox, workdir, start_commit).await {
            Some(now) if &now == then => Ok((plan.len() as u32, true)),
            Some(_) => Err((
                format!(
                    "after replaying {} commands the workdir differs from the checkpoint's",
                    plan.len()
                ),
                true,
            )),
            None => Err(("the replayed workdir could not be read".into(), true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{
        self, CAMPAIGN, MemorySandboxes, ScriptedChat, TestBed, exited, task_row,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use synthfleet_core::ports::MetadataStore;
    use synthfleet_core::resume::Rebuild;
    use synthfleet_core::trajectory::TrajectoryRecord;

    const COMMANDS: [&str; 4] = [
        "echo a >> notes",
        "echo b >> notes",
        "make",
        "echo c >> notes",
    ];
    const DIGEST: &str = "5f3a0c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    /// The first attempt fails (an unavailable model) when asking for step 3, after three
    /// steps were checkpointed; the retry runs with `resume` as given and the commands
    /// answered by `answers`. Returns the committed record, the turns the model was asked
    /// for, and the sandboxes' log.
    async fn interrupted_at_step_3(
        resume: bool,
        answers: impl Fn(&str) -> Option<synthfleet_core::ports::ExecOutput> + Send + Sync + 'static,
    ) -> (TrajectoryRecord, Vec<usize>, testing::SandboxLog) {
        let bed = TestBed::submitted(&[task_row("t1")], 1).await;
        let sandboxes = MemorySandboxes::answering(move |command| {
            if command.contains("sha256sum") {
                return Some(exited(0, &format!("{DIGEST}  -\n")));
            }
            answers(command)
        });
        let asked = Arc::new(Mutex::new(Vec::new()));
        let mut rollouts = bed.rollouts(
            ScriptedChat::running_failing_once(&COMMANDS, 3, asked.clone()),
            Arc::new(sandboxes.clone()),
        );
        let mut campaign = (*bed.campaign).clone();
        campaign.config.scaffold.resume = resume;
        Arc::get_mut(&mut rollouts).expect("one owner").campaign = Arc::new(campaign);
        let worker = bed.worker(rollouts, testing::config());
        let (summary, _) = bed.run(&worker).await;
        assert_eq!((summary.committed, summary.retried), (1, 1), "{summary:?}");
        let metas = bed.metadata.trajectories(CAMPAIGN).await.expect("list");
        let record = bed.store.load(&metas[0]).await.expect("load");
        let asked = asked.lock().expect("asked").clone();
        (record, asked, sandboxes.log())
    }

    fn actions(record: &TrajectoryRecord) -> Vec<Option<&str>> {
        record.steps.iter().map(|s| s.action.as_deref()).collect()
    }

    #[tokio::test]
    async fn a_retried_sample_continues_from_its_last_step_without_asking_the_model_again() {
        let (record, asked, log) = interrupted_at_step_3(true, |_| None).await;
        assert_eq!(
            asked,
            vec![0, 1, 2, 3, 3, 4],
            "each recorded step asked once"
        );
        assert_eq!(record.resumed_from_step, Some(3));
        assert_eq!(record.resumes.len(), 1);
        assert_eq!(record.resumes[0].from_steps, 3);
        assert!(
            matches!(
                record.resumes[0].rebuild,
                Rebuild::Replayed {
                    commands: 3,
                    workdir_checked: true,
                    ..
                }
            ),
            "{:?}",
            record.resumes[0]
        );
        assert_eq!(
            actions(&record),
            vec![
                Some(COMMANDS[0]),
                Some(COMMANDS[1]),
                Some(COMMANDS[2]),
                Some(COMMANDS[3]),
                None
            ]
        );
        assert!(
            record
                .steps
                .iter()
                .enumerate()
                .all(|(i, s)| s.index as usize == i)
        );
        // Every call of both attempts is in the spend: 6 calls at 100 in and 20 out.
        assert_eq!((record.totals.llm_calls, record.totals.n_steps), (6, 5));
        assert_eq!(
            record.totals.input_tokens, 500,
            "the failed call used no tokens"
        );
        assert_eq!(record.attempt, 2);
        // The first attempt ran each command once, the replay each of the first three again.
        let ran = |c: &str| log.commands.iter().filter(|x| x.as_str() == c).count();
        assert_eq!(COMMANDS.map(ran), [2, 2, 2, 1], "{:?}", log.commands);
        assert!(record.verification.is_some_and(|v| v.resolved));
    }

    #[tokio::test]
    async fn with_resume_off_a_retried_sample_starts_over() {
        let (record, asked, _) = interrupted_at_step_3(false, |_| None).await;
        assert_eq!(asked, vec![0, 1, 2, 3, 0, 1, 2, 3, 4]);
        assert_eq!(record.resumed_from_step, None);
        assert!(record.resumes.is_empty());
        assert_eq!(record.steps.len(), 5);
    }

    #[tokio::test]
    async fn a_command_that_exits_otherwise_on_replay_restarts_the_rollout_with_the_reason() {
        // `make` passes the first time and fails ever after.
        let makes = AtomicUsize::new(0);
        let (record, asked, log) = interrupted_at_step_3(true, move |command| {
            (command == "make" && makes.fetch_add(1, Ordering::SeqCst) > 0)
                .then(|| exited(2, "make: *** missing"))
        })
        .await;
        assert_eq!(record.resumed_from_step, None);
        let Rebuild::Restarted { reason } = &record.resumes[0].rebuild else {
            panic!("{:?}", record.resumes[0]);
        };
        assert_eq!(reason, "step 2 exited 2 on replay where it had exited 0");
        assert_eq!(
            asked,
            vec![0, 1, 2, 3, 0, 1, 2, 3, 4],
            "the restart asks again"
        );
        // The attempt's first sandbox, the one the replay dirtied, a clean one for the
        // restart, and a verifier's for each attempt.
        assert_eq!(log.created, 5, "{log:?}");
        assert_eq!(record.steps.len(), 5);
        assert_eq!(record.totals.n_steps, 5);
        assert_eq!(
            record.totals.llm_calls, 9,
            "both attempts' calls are in the spend"
        );
    }
}
