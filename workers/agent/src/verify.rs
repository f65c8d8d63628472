//! Execution verification: the patch applied in a fresh sandbox, then the task's eval
//! script, or — for tasks of a public set — its harness's eval script, graded per test.
//! The agent's own claim (submitting) is never trusted.

use crate::rollout::destroy;
use crate::truncate_middle;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use synthfleet_core::campaign::Campaign;
use synthfleet_core::harness::{APPLY_COMMANDS, Grade, TEST_PATCH_FAILED};
use synthfleet_core::ports::{ExecOutput, Sandbox, SandboxError, SandboxProvider, SandboxSpec};
use synthfleet_core::start::{self, Start};
use synthfleet_core::task::Task;
use synthfleet_core::trajectory::Verification;

/// In the sandbox's scratch space, which every sandbox user may write.
const PATCH_PATH: &str = "/tmp/.synthfleet/patch.diff";
const EVAL_PATH: &str = "/tmp/.synthfleet/eval.sh";
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);
const KEPT_OUTPUT_CHARS: usize = 20_000;
/// Lets git work in a repository another uid owns, without writing a global config.
const GIT_SAFE: &str =
    "export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'";

/// Why a sandbox could not be made ready, or a verification could not run (an
/// infrastructure failure or a broken task, never a verdict on the patch). Its chain
/// (`synthfleet_core::error_chain`) is the text a record, a fact or a gold report keeps.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The sandbox engine failed: creating the sandbox, running a command in it or writing
    /// a file to it (the error names the container and the operation).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A step of the sandbox's setup exited non-zero or timed out.
    #[error("{step} {}{}: {output}", exit_text(*.exit_code), timed_out_text(*.timed_out))]
    Setup {
        step: SetupStep,
        exit_code: Option<i64>,
        timed_out: bool,
        /// The step's output, cut in the middle.
        output: String,
    },
    /// The script reducing the repository to its starting state exited non-zero or timed out.
    #[error(
        "reducing the repository of {workdir} to its starting state {}{}: {output}",
        exit_text(*.exit_code),
        timed_out_text(*.timed_out)
    )]
    Isolation {
        workdir: String,
        exit_code: Option<i64>,
        timed_out: bool,
        output: String,
    },
    /// The isolation script succeeded but did not print the starting commit.
    #[error("reducing {workdir} to its starting state printed no starting commit: {output}")]
    NoStartCommit { workdir: String, output: String },
    /// The task's `before_patch` commands failed in the verification sandbox.
    #[error("preparing the verification sandbox failed ({commands}): {output}")]
    Prepare { commands: String, output: String },
    /// The test log was cut at the sandbox's output cap and the grade is not `resolved`:
    /// tests may be missing from it.
    #[error(
        "the test log exceeded the sandbox's output cap (sandbox.max_output_bytes = {max_output_bytes} bytes), so tests may be missing from it; raise the cap to verify this task"
    )]
    OutputCapped { max_output_bytes: usize },
}

/// A step of a sandbox's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStep {
    /// The task's `setup`, as root.
    Task,
    /// The instance's checkout, as the sandbox user.
    Checkout,
}

impl std::fmt::Display for SetupStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SetupStep::Task => "task setup",
            SetupStep::Checkout => "the instance's checkout",
        })
    }
}

/// How a command ended, for an error's text: `exited with 2`, or `was killed` when it has
/// no exit code (a timeout or a signal).
pub(crate) fn exit_text(exit_code: Option<i64>) -> String {
    match exit_code {
        Some(code) => format!("exited with {code}"),
        None => "was killed".to_owned(),
    }
}

fn timed_out_text(timed_out: bool) -> &'static str {
    if timed_out { " (timed out)" } else { "" }
}

/// A command's output as an error keeps it: cut in the middle.
fn kept(out: &ExecOutput) -> String {
    truncate_middle(&out.output, 2000).0
}

/// Creates sandboxes for a campaign's tasks and verifies patches in them.
pub struct Verifier<'a> {
    pub campaign: &'a Campaign,
    pub sandboxes: &'a dyn SandboxProvider,
}

impl Verifier<'_> {
    /// A sandbox of `task`'s image with the task's setup done (as root, capabilities still
    /// dropped) and the instance's code checked out (as the sandbox user). It is labelled
    /// with the campaign only: the rollouts of a campaign share one spec, so a warm pool
    /// can make their sandboxes ahead (which rollout uses which is in the worker's log).
    pub(crate) async fn create_sandbox(
        &self,
        task: &Task,
    ) -> Result<Box<dyn Sandbox>, VerifyError> {
        let spec = SandboxSpec {
            image: task.image.clone(),
            workdir: task.workdir.clone(),
            labels: BTreeMap::from([(
                "synthfleet.campaign".to_owned(),
                self.campaign.name().to_owned(),
            )]),
            limits: self.campaign.config.sandbox.clone(),
        };
        let sandbox = self.sandboxes.create(&spec).await?;
        let steps = [
            (SetupStep::Task, task.setup.as_deref(), true),
            (
                SetupStep::Checkout,
                task.tests.as_ref().and_then(|t| t.checkout.as_deref()),
                false,
            ),
        ];
        for (step, script, as_root) in steps {
            let Some(script) = script else { continue };
            let out = if as_root {
                sandbox.exec_root(script, self.eval_timeout()).await
            } else {
                sandbox.exec(script, self.eval_timeout()).await
            };
            let failure = match out {
                Ok(out) if out.exit_code == Some(0) => None,
                Ok(out) => Some(VerifyError::Setup {
                    step,
                    exit_code: out.exit_code,
                    timed_out: out.timed_out,
                    output: kept(&out),
                }),
                Err(e) => Some(VerifyError::Sandbox(e)),
            };
            if let Some(failure) = failure {
                destroy(sandbox.as_ref()).await;
                return Err(failure);
            }
        }
        Ok(sandbox)
    }

    /// The agent's sandbox: as [`Verifier::create_sandbox`], then the workdir's repository
    /// reduced to the starting state (`synthfleet_core::start`: one commit, nothing that
    /// reveals a solution), as the sandbox user who owns it. Returns the starting commit.
    pub(crate) async fn create_agent_sandbox(
        &self,
        task: &Task,
    ) -> Result<(Box<dyn Sandbox>, Start), VerifyError> {
        let sandbox = self.create_sandbox(task).await?;
        let out = sandbox
            .exec(&start::isolation_script(&task.workdir), self.eval_timeout())
            .await;
        let start = match out {
            Ok(out) if out.exit_code == Some(0) => {
                start::parse_start(&out.output).ok_or_else(|| VerifyError::NoStartCommit {
                    workdir: task.workdir.clone(),
                    output: kept(&out),
                })
            }
            Ok(out) => Err(VerifyError::Isolation {
                workdir: task.workdir.clone(),
                exit_code: out.exit_code,
                timed_out: out.timed_out,
                output: kept(&out),
            }),
            Err(e) => Err(VerifyError::Sandbox(e)),
        };
        match start {
            Ok(start) => Ok((sandbox, start)),
            Err(failure) => {
                destroy(sandbox.as_ref()).await;
                Err(failure)
            }
        }
    }

    fn eval_timeout(&self) -> Duration {
        Duration::from_secs(self.campaign.config.scaffold.eval_timeout_s)
    }

    /// Verifies `patch` in a fresh sandbox; `Err` means verification could not run (an
    /// infrastructure failure, not a verdict).
    pub async fn verify(&self, task: &Task, patch: &str) -> Result<Verification, VerifyError> {
        let started = Instant::now();
        let sandbox = self.create_sandbox(task).await;
        self.verify_in(sandbox, task, patch, started).await
    }

    /// Verifies `patch` in `sandbox`, a fresh one from [`Verifier::create_sandbox`] (made
    /// ahead, while the agent worked), and removes it; the duration counts from `started`.
    pub(crate) async fn verify_in(
        &self,
        sandbox: Result<Box<dyn Sandbox>, VerifyError>,
        task: &Task,
        patch: &str,
        started: Instant,
    ) -> Result<Verification, VerifyError> {
        let sandbox = sandbox?;
        let result = self.run(sandbox.as_ref(), task, patch).await;
        destroy(sandbox.as_ref()).await;
        result.map(|mut v| {
            v.duration_ms = started.elapsed().as_millis() as u64;
            v
        })
    }

    async fn run(
        &self,
        sandbox: &dyn Sandbox,
        task: &Task,
        patch: &str,
    ) -> Result<Verification, VerifyError> {
        // Everything runs as the sandbox user, who owns the repository (root in the public
        // sets' images, as their harnesses run): root without capabilities could not write
        // to a repository another uid owns.
        let exec = |command: String, timeout: Duration| async move {
            sandbox.exec(&command, timeout).await
        };
        if let Some(tests) = &task.tests
            && !tests.before_patch.is_empty()
        {
            let script = std::iter::once(GIT_SAFE.to_owned())
                .chain(tests.before_patch.iter().cloned())
                .collect::<Vec<_>>()
                .join(" && ");
            let out = exec(script, APPLY_TIMEOUT).await?;
            if out.exit_code != Some(0) {
                return Err(VerifyError::Prepare {
                    commands: tests.before_patch.join("; "),
                    output: kept(&out),
                });
            }
        }
        if !patch.trim().is_empty() {
            sandbox.write_file(PATCH_PATH, patch.as_bytes()).await?;
            // SWE-bench's order: strict, then with rejects, then `patch` with fuzz.
            let mut failures = Vec::new();
            let mut applied = false;
            for command in APPLY_COMMANDS {
                let out = exec(
                    format!("{GIT_SAFE} && {command} {PATCH_PATH}"),
                    APPLY_TIMEOUT,
                )
                .await?;
                if out.exit_code == Some(0) {
                    applied = true;
                    break;
                }
                failures.push(format!("$ {command}\n{}", out.output));
            }
            if !applied {
                let grade = task
                    .tests
                    .as_ref()
                    .map(|t| Grade::nothing_ran(&t.fail_to_pass, &t.pass_to_pass));
                return Ok(verification(
                    task,
                    false,
                    grade,
                    None,
                    false,
                    truncate_middle(&failures.join("\n"), KEPT_OUTPUT_CHARS).0,
                ));
            }
        }
        let script = match &task.tests {
            Some(tests) => tests.eval_script(&task.workdir),
            None => task.eval.clone().unwrap_or_else(|| "true".to_owned()),
        };
        sandbox.write_file(EVAL_PATH, script.as_bytes()).await?;
        let timeout = self.eval_timeout();
        let out = exec(format!("bash {EVAL_PATH}"), timeout).await?;
        let mut output = truncate_middle(&out.output, KEPT_OUTPUT_CHARS).0;
        if out.timed_out {
            output.push_str(&format!("\n[eval timed out after {}s]", timeout.as_secs()));
        }
        let Some(tests) = &task.tests else {
            let resolved = out.exit_code == Some(0) && !out.timed_out;
            return Ok(verification(
                task,
                resolved,
                None,
                out.exit_code,
                true,
                output,
            ));
        };
        let grade = if out.timed_out {
            Grade::nothing_ran(&tests.fail_to_pass, &tests.pass_to_pass)
        } else {
            tests.grade(&out.output)
        };
        if out.truncated && !grade.resolved() {
            return Err(VerifyError::OutputCapped {
                max_output_bytes: self.campaign.config.sandbox.max_output_bytes,
            });
        }
        if out.output.contains(TEST_PATCH_FAILED) {
            output.push_str("\n[the task's test_patch did not apply: its harness is broken]");
        }
        Ok(verification(
            task,
            grade.resolved(),
            Some(grade),
            out.exit_code,
            true,
            output,
        ))
    }
}

/// The record of one verification: the reward follows `resolved`, the per-test outcomes
/// the grade, when the task is graded per test.
fn verification(
    task: &Task,
    resolved: bool,
    grade: Option<Grade>,
    eval_exit_code: Option<i64>,
    patch_applied: bool,
    output: String,
) -> Verification {
    let (fail_to_pass, pass_to_pass, resolution) = match grade {
        Some(g) => (
            Some(g.fail_to_pass),
            Some(g.pass_to_pass),
            Some(g.resolution),
        ),
        None => (None, None, None),
    };
    Verification {
        eval_exit_code,
        resolved,
        reward: if resolved { 1.0 } else { 0.0 },
        patch_applied,
        output,
        duration_ms: 0,
        harness: task.tests.as_ref().map(|t| t.harness),
        fail_to_pass,
        pass_to_pass,
        resolution,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synthfleet_core::error_chain;

    /// Records, facts and gold reports keep these texts: what failed, how it ended, its output.
    #[test]
    fn verification_errors_say_what_failed_and_how_it_ended() {
        let setup = VerifyError::Setup {
            step: SetupStep::Checkout,
            exit_code: Some(2),
            timed_out: true,
            output: "boom".into(),
        };
        assert_eq!(
            error_chain(&setup),
            "the instance's checkout exited with 2 (timed out): boom"
        );
        let isolation = VerifyError::Isolation {
            workdir: "/repo".into(),
            exit_code: None,
            timed_out: false,
            output: "killed".into(),
        };
        assert_eq!(
            error_chain(&isolation),
            "reducing the repository of /repo to its starting state was killed: killed"
        );
        let engine = SandboxError::Docker {
            container: "c1".into(),
            operation: "creating a container".into(),
            source: Box::new(std::io::Error::other("engine gone")),
        };
        assert_eq!(
            error_chain(&VerifyError::from(engine)),
            "sandbox c1: creating a container failed: engine gone",
            "an engine failure reads as the engine's error, its cause once"
        );
    }
}
