//! The rollout's sandbox glue: the final patch read out of the agent's sandbox, and a
//! sandbox removed (or left to the reaper).

use crate::truncate_middle;
use crate::verify::exit_text;
use std::time::Duration;
use synthfleet_core::error_chain;
use synthfleet_core::ports::{Sandbox, SandboxError};
use synthfleet_core::task::shell_quote;
use tracing::warn;

/// Time allowed to read the final patch out of the sandbox.
const PATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the final patch could not be read. Its chain is what the record keeps.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PatchError {
    /// Running `git diff` in the sandbox failed (the error names the container).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The diff was cut at the sandbox's output cap.
    #[error("the patch is larger than the sandbox output cap (sandbox.max_output_bytes)")]
    TooLarge,
    /// `git diff` exited non-zero (or was killed: no exit code).
    #[error("git diff in {workdir} {}: {output}", exit_text(*.exit_code))]
    Diff {
        workdir: String,
        exit_code: Option<i64>,
        /// Its output, cut in the middle.
        output: String,
    },
}

/// `git diff` of the workdir against the starting commit (so commits the agent made are
/// part of its answer), new files included; against HEAD when the start is unknown.
pub(super) async fn read_patch(
    sandbox: &dyn Sandbox,
    workdir: &str,
    start: Option<&str>,
) -> Result<String, PatchError> {
    let dir = shell_quote(workdir);
    let base = start.unwrap_or("HEAD");
    let command = format!(
        "git -c safe.directory='*' -C {dir} add -A >/dev/null && git -c safe.directory='*' -C {dir} diff --cached --binary {base}"
    );
    let out = sandbox.exec(&command, PATCH_TIMEOUT).await?;
    match out.exit_code {
        Some(0) if !out.truncated => Ok(out.output),
        Some(0) => Err(PatchError::TooLarge),
        exit_code => Err(PatchError::Diff {
            workdir: workdir.to_owned(),
            exit_code,
            output: truncate_middle(&out.output, 1000).0,
        }),
    }
}

/// Time allowed to hash the workdir.
const DIGEST_TIMEOUT: Duration = Duration::from_secs(60);

/// SHA-256 of the workdir's state: its diff against the starting commit (against HEAD
/// when the start is unknown) and its untracked files, names and contents. It writes
/// nothing the agent can see (no index, object or file of the repository; a scratch
/// directory in /tmp, removed), so the agent never sees it was taken. `None`
/// when it cannot be read (no git repository): a replay is then checked on exit codes
/// alone.
pub(super) async fn workdir_digest(
    sandbox: &dyn Sandbox,
    workdir: &str,
    start: Option<&str>,
) -> Option<String> {
    let git = "git -c safe.directory='*'";
    // Git's own index is never written: `git diff` may refresh the stat data of the index
    // it reads, so it reads a copy. Untracked names go NUL-separated (any name hashes).
    let command = format!(
        r#"set -o pipefail; cd {dir} && index=$({git} rev-parse --git-path index) && scratch=$(mktemp -d) && trap 'rm -rf "$scratch"' EXIT && {{ [ ! -f "$index" ] || {{ cp -- "$index" "$scratch/index" && export GIT_INDEX_FILE="$scratch/index"; }}; }} && {{ {git} diff --binary {base} && {git} ls-files -z -o --exclude-standard > "$scratch/untracked" && cat "$scratch/untracked" && xargs -0 -r {git} hash-object -- < "$scratch/untracked"; }} | sha256sum"#,
        dir = shell_quote(workdir),
        base = start.unwrap_or("HEAD"),
    );
    let out = match sandbox.exec(&command, DIGEST_TIMEOUT).await {
        Ok(out) => out,
        Err(e) => {
            warn!(container = sandbox.id(), error = %error_chain(&e), "hashing the workdir failed");
            return None;
        }
    };
    let digest = out.output.lines().last()?.split_whitespace().next()?;
    (out.exit_code == Some(0)
        && digest.len() == 64
        && digest.bytes().all(|b| b.is_ascii_hexdigit()))
    .then(|| digest.to_owned())
}

/// Removes `sandbox`; a failure is logged and left to the reaper.
pub(crate) async fn destroy(sandbox: &dyn Sandbox) {
    if let Err(e) = sandbox.destroy().await {
        warn!(container = sandbox.id(), error = %error_chain(&e), "removing a sandbox failed; the reaper will remove it");
    }
}
