//! What the agent's sandbox starts from: the task's starting state and nothing that reveals
//! a solution (SPEC invariant 10).
//!
//! Public task images are clones: SWE-bench's are reset to `base_commit` with the later
//! history (and tags pointing at the fixing commits) still in `.git`; a SWE-smith instance
//! is "Initial commit" → "Bug Patch" → "Remove F2P Tests", so the commit before the bug holds
//! the answer. An agent that reads history could copy the fix and be graded resolved.
//!
//! So, once the task's setup and checkout have run and before the agent's first step, the
//! workdir's repository is replaced by a new one holding **exactly one commit**: the
//! starting tree (everything tracked or untracked-but-not-ignored in the workdir, as the
//! agent will see it), made with a fixed author, date and message so that every sample of a
//! task starts from the same commit id. No other commit, branch, tag, remote, stash, reflog,
//! `ORIG_HEAD`/`FETCH_HEAD`, hook or config survives, and the object database holds only the
//! objects of that commit: they are copied into a fresh repository, never left behind as
//! unreachable objects. One commit (rather than the base commit and its ancestors) because
//! an ancestor can hold the answer too (SWE-smith's commit before "Bug Patch").
//!
//! Git submodules keep their own repositories (`.git/modules`), moved as they are: their
//! history is theirs, not the task's. A workdir whose repository lives elsewhere (a worktree,
//! or `.git` as a file) cannot be cleaned and is an error; a workdir that is no git repository
//! has nothing to clean (the patch of such a task cannot be read either).
//!
//! Verification never depends on the agent's sandbox: it runs in a fresh sandbox of the
//! image, rebuilt from the task row (see `harness`), where the history the harness needs
//! (SWE-bench's `base_commit`, SWE-smith's "Bug Patch") is intact.

use crate::task::shell_quote;

/// The marker line before the starting commit's id in the isolation script's output.
const MARKER: &str = "synthfleet-start:";
/// Printed instead of a commit when the workdir is no git repository.
const NO_REPOSITORY: &str = "none";

/// The commit the starting state is recorded as: fixed, so its id depends on the tree only.
pub const START_AUTHOR: &str = "synthfleet";
pub const START_EMAIL: &str = "start@synthfleet.invalid";
pub const START_DATE: &str = "2000-01-01T00:00:00+0000";
pub const START_MESSAGE: &str = "Starting state";

/// The shell script, run in the agent's sandbox as the repository's owner (the sandbox
/// user) after the task's setup and checkout, that leaves the workdir's repository holding
/// the starting state only. Its last line is read by [`parse_start`].
pub fn isolation_script(workdir: &str) -> String {
    let dir = shell_quote(workdir);
    format!(
        r#"set -euo pipefail
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'
export GIT_AUTHOR_NAME={START_AUTHOR} GIT_AUTHOR_EMAIL={START_EMAIL} GIT_AUTHOR_DATE='{START_DATE}'
export GIT_COMMITTER_NAME={START_AUTHOR} GIT_COMMITTER_EMAIL={START_EMAIL} GIT_COMMITTER_DATE='{START_DATE}'
# Few processes: starting one costs tens of milliseconds in a loaded sandbox.
cd {dir}
if [ -d .git ]; then
  top=$PWD
elif top=$(git rev-parse --show-toplevel 2>/dev/null); then
  cd "$top"
else
  echo '{MARKER} {NO_REPOSITORY}'
  exit 0
fi
if [ ! -d .git ]; then
  echo "the repository of $top keeps its history outside the workdir (.git is not a directory: a worktree or a submodule), so it cannot be reduced to the starting state" >&2
  exit 3
fi
# The starting tree: the index brought up to the working tree (tracked files stay, even
# ignored ones; new files not ignored join).
git add -A
tree=$(git write-tree)
commit=$(git commit-tree "$tree" -m '{START_MESSAGE}' </dev/null)
# The new repository is made inside .git (only .git need be writable), then takes its
# place: everything else of the old one goes.
fresh=.git/synthfleet-start
if [ -e "$fresh" ]; then rm -rf "$fresh"; fi
trap 'rm -rf "$fresh"' EXIT
mkdir -p "$fresh/objects/pack" "$fresh/refs/heads" "$fresh/refs/tags" "$fresh/info"
# Only the objects of the starting commit, packed straight into the new repository.
echo "$commit" | git pack-objects -q --revs --window=0 "$fresh/objects/pack/pack" >/dev/null
echo 'ref: refs/heads/main' >"$fresh/HEAD"
echo "$commit" >"$fresh/refs/heads/main"
if [ ${{#commit}} -eq 64 ]; then
  printf '[core]\n\trepositoryformatversion = 1\n\tbare = false\n[extensions]\n\tobjectformat = sha256\n' >"$fresh/config"
else
  printf '[core]\n\trepositoryformatversion = 0\n\tbare = false\n' >"$fresh/config"
fi
# Moved as they are: the index (write-tree wrote it: it matches the starting tree, so
# nothing is hashed again), a split index's shared files, submodules' own repositories,
# the local ignore list.
shopt -s dotglob nullglob
keep=(.git/index .git/sharedindex.*)
if [ -d .git/modules ]; then keep+=(.git/modules); fi
mv -- "${{keep[@]}}" "$fresh/"
if [ -f .git/info/exclude ]; then mv .git/info/exclude "$fresh/info/"; fi
trap - EXIT
old=()
for entry in .git/*; do
  if [ "$entry" != "$fresh" ]; then old+=("$entry"); fi
done
rm -rf -- "${{old[@]}}"
mv -- "$fresh"/* .git/
rmdir "$fresh"
echo "{MARKER} $commit"
"#
    )
}

/// What the isolation script reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The repository holds this one commit.
    Commit(String),
    /// The workdir is no git repository: there was no history to remove.
    NoRepository,
}

impl Start {
    pub fn commit(&self) -> Option<&str> {
        match self {
            Start::Commit(id) => Some(id),
            Start::NoRepository => None,
        }
    }
}

/// The starting commit from the isolation script's output (its last marker line); `None`
/// when the output has no marker (the script did not finish).
pub fn parse_start(output: &str) -> Option<Start> {
    let value = output
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix(MARKER))?
        .trim();
    if value == NO_REPOSITORY {
        return Some(Start::NoRepository);
    }
    let is_id = (40..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit());
    is_id.then(|| Start::Commit(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_is_read_from_the_last_marker() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse_start(&format!("noise\n{MARKER} {id}\n")),
            Some(Start::Commit(id.to_owned()))
        );
        assert_eq!(
            parse_start(&format!("{MARKER} {NO_REPOSITORY}")),
            Some(Start::NoRepository)
        );
        assert_eq!(parse_start("fatal: something"), None);
        assert_eq!(parse_start(&format!("{MARKER} not-an-id")), None);
    }

    #[test]
    fn the_script_quotes_the_workdir_and_fixes_the_commit() {
        let script = isolation_script("/work dir/it's");
        assert!(script.contains(r"cd '/work dir/it'\''s'"), "{script}");
        assert!(script.contains(START_DATE));
        assert!(script.contains("git pack-objects"));
    }
}
