//! Execution verification: the task's eval in a fresh sandbox with the patch applied.
//! The agent's own claim (submitting) is never trusted.

use crate::rollout::{Rollouts, destroy, error_chain};
use crate::truncate_middle;
use std::time::{Duration, Instant};
use synthfleet_core::message::ResultKey;
use synthfleet_core::ports::Sandbox;
use synthfleet_core::task::Task;
use synthfleet_core::trajectory::Verification;

const PATCH_PATH: &str = "/.synthfleet/patch.diff";
const EVAL_PATH: &str = "/.synthfleet/eval.sh";
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);
const KEPT_OUTPUT_CHARS: usize = 20_000;

/// Runs verification; `Err` means it could not run (an infrastructure failure).
pub(crate) async fn verify(
    rollouts: &Rollouts,
    task: &Task,
    key: &ResultKey,
    trajectory_id: &str,
    patch: &str,
) -> Result<Verification, String> {
    let started = Instant::now();
    let sandbox = rollouts
        .create_sandbox(task, key, trajectory_id, "verify")
        .await?;
    let result = run(rollouts, sandbox.as_ref(), task, patch).await;
    destroy(sandbox.as_ref()).await;
    result.map(|mut v| {
        v.duration_ms = started.elapsed().as_millis() as u64;
        v
    })
}

async fn run(
    rollouts: &Rollouts,
    sandbox: &dyn Sandbox,
    task: &Task,
    patch: &str,
) -> Result<Verification, String> {
    let eval = task.eval.as_deref().unwrap_or("true");
    if !patch.trim().is_empty() {
        sandbox
            .write_file(PATCH_PATH, patch.as_bytes())
            .await
            .map_err(|e| error_chain(&e))?;
        let applied = sandbox
            .exec(
                &format!("git -c safe.directory='*' apply --whitespace=nowarn {PATCH_PATH}"),
                APPLY_TIMEOUT,
            )
            .await
            .map_err(|e| error_chain(&e))?;
        if applied.exit_code != Some(0) {
            return Ok(Verification {
                eval_exit_code: None,
                resolved: false,
                reward: 0.0,
                patch_applied: false,
                output: truncate_middle(&applied.output, KEPT_OUTPUT_CHARS).0,
                duration_ms: 0,
            });
        }
    }
    sandbox
        .write_file(EVAL_PATH, eval.as_bytes())
        .await
        .map_err(|e| error_chain(&e))?;
    let timeout = Duration::from_secs(rollouts.campaign.config.scaffold.eval_timeout_s);
    let out = sandbox
        .exec(&format!("bash {EVAL_PATH}"), timeout)
        .await
        .map_err(|e| error_chain(&e))?;
    let resolved = out.exit_code == Some(0) && !out.timed_out;
    let mut output = truncate_middle(&out.output, KEPT_OUTPUT_CHARS).0;
    if out.timed_out {
        output.push_str(&format!("\n[eval timed out after {}s]", timeout.as_secs()));
    }
    Ok(Verification {
        eval_exit_code: out.exit_code,
        resolved,
        reward: if resolved { 1.0 } else { 0.0 },
        patch_applied: true,
        output,
        duration_ms: 0,
    })
}
