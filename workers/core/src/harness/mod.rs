//! How a task from a public set is verified: the test specification a task carries, the
//! eval script built from it, the test-log parsers and the grading.
//!
//! It follows SWE-bench's harness (`harness/test_spec`, `harness/grading`,
//! `harness/log_parsers`): in a fresh sandbox the candidate patch is applied, every file
//! the test patch touches is reset to the reference commit, the test patch is applied, the
//! tests run between two markers, the log between the markers is parsed per test id, and
//! the task is resolved iff every FAIL_TO_PASS test passes and every PASS_TO_PASS test
//! still passes. Which repository runs which command lives in [`repos`]; how the rows of
//! each public set become such a specification lives in [`crate::taskset`].

mod grade;
mod logs;
pub mod repos;

pub use grade::{Grade, Resolution, SkipRule, TestSplit};
pub use logs::{LogParser, TestStatus};

use crate::task::shell_quote;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The line the eval script prints right before the tests start (SWE-bench's).
pub const START_TEST_OUTPUT: &str = ">>>>> Start Test Output";
/// The line the eval script prints right after the tests end (SWE-bench's).
pub const END_TEST_OUTPUT: &str = ">>>>> End Test Output";
/// Printed when the test patch does not apply: the task's harness is broken.
pub const TEST_PATCH_FAILED: &str = ">>>>> Test Patch Failed";
/// SWE-bench's heredoc delimiter for the test patch.
const HEREDOC: &str = "EOF_114329324912";

/// The ways SWE-bench's `run_evaluation` tries to apply a patch, in order. The first that
/// succeeds wins; if none does, the patch did not apply.
pub const APPLY_COMMANDS: [&str; 3] = [
    "git apply --verbose",
    "git apply --verbose --reject",
    "patch --batch --fuzz=5 -p1 -i",
];

/// The public harness a task's verification reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Harness {
    SweBench,
    SweGym,
    SweRebench,
    SweSmith,
}

impl Harness {
    /// How this harness counts a skipped test.
    pub fn skips(self) -> SkipRule {
        match self {
            Harness::SweBench | Harness::SweGym => SkipRule::FailToPassFails,
            Harness::SweRebench | Harness::SweSmith => SkipRule::Uncounted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Harness::SweBench => "swe-bench",
            Harness::SweGym => "swe-gym",
            Harness::SweRebench => "swe-rebench",
            Harness::SweSmith => "swe-smith",
        }
    }
}

impl fmt::Display for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a task's tests are run and graded. Built by the task-set adapters; travels with
/// the task in its queue message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    pub harness: Harness,
    /// Shell run in the workdir, as the sandbox user, whenever a sandbox of the task is
    /// created (after the task's `setup`): puts the instance's code in place (SWE-smith:
    /// the instance's branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<String>,
    /// Shell lines run in the workdir before the candidate patch is applied (SWE-smith:
    /// `git checkout HEAD~1`, back to the commit that still holds the tests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before_patch: Vec<String>,
    /// The commit the files of `reset_files` are restored from before the test patch is
    /// applied (SWE-bench: `base_commit`).
    pub reset_ref: String,
    /// Files reset to `reset_ref` before the tests, so no edit of the agent's to a test
    /// file survives (SWE-bench: the files `test_patch` modifies).
    pub reset_files: Vec<String>,
    /// Files removed before the test patch is applied, so that it can create them (SWE-bench:
    /// the files `test_patch` creates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_files: Vec<String>,
    /// The diff that adds or updates the tests; may be empty (SWE-smith keeps the tests in
    /// the reference commit).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub test_patch: String,
    /// Shell lines run first, in order: activating the environment, exports, installs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_test: Vec<String>,
    /// The test command, with its directives (the test files to run).
    pub test_cmd: String,
    pub log_parser: LogParser,
    #[serde(rename = "FAIL_TO_PASS")]
    pub fail_to_pass: Vec<String>,
    #[serde(rename = "PASS_TO_PASS")]
    pub pass_to_pass: Vec<String>,
    /// The reference solution (`validate --gold` runs it through this same verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_patch: Option<String>,
}

impl TestSpec {
    /// The eval script, run with `bash` in the verification sandbox after the candidate
    /// patch was applied: SWE-bench's `make_eval_script_list`, minus its informational
    /// `git show` / `git diff` output and with the markers echoed rather than traced.
    pub fn eval_script(&self, workdir: &str) -> String {
        let dir = shell_quote(workdir);
        let mut lines = vec![
            "set -uo pipefail".to_owned(),
            // Without writing a global git config: the repository may belong to another uid.
            "export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'"
                .to_owned(),
            format!("cd {dir}"),
        ];
        lines.extend(self.pre_test.iter().cloned());
        lines.push(format!("cd {dir}"));
        lines.push("git status --short".to_owned());
        let reset = self.reset_command();
        lines.extend(reset.iter().cloned());
        if !self.test_patch.trim().is_empty() {
            let mut patch = self.test_patch.clone();
            if !patch.ends_with('\n') {
                patch.push('\n');
            }
            lines.push(format!(
                "git apply -v - <<'{HEREDOC}' || echo '{TEST_PATCH_FAILED}'\n{patch}{HEREDOC}"
            ));
        }
        lines.push(format!("echo '{START_TEST_OUTPUT}'"));
        lines.push(self.test_cmd.clone());
        lines.push(format!("echo '{END_TEST_OUTPUT}'"));
        lines.extend(reset);
        lines.join("\n") + "\n"
    }

    /// SWE-bench's reset: modified test files back to the reference commit, created ones
    /// removed.
    fn reset_command(&self) -> Vec<String> {
        let quoted = |files: &[String]| -> String {
            files
                .iter()
                .map(|f| shell_quote(f))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut commands = Vec::new();
        if !self.reset_files.is_empty() {
            commands.push(format!(
                "git checkout {} {}",
                shell_quote(&self.reset_ref),
                quoted(&self.reset_files)
            ));
        }
        if !self.remove_files.is_empty() {
            commands.push(format!("rm -f {}", quoted(&self.remove_files)));
        }
        commands
    }

    /// Grades the output of [`TestSpec::eval_script`] as SWE-bench's `get_logs_eval` does:
    /// the text between the markers is parsed (the whole output when that names no test);
    /// an output without both markers means the tests never ran.
    pub fn grade(&self, output: &str) -> Grade {
        let Some(log) = test_output(output) else {
            return Grade::nothing_ran(&self.fail_to_pass, &self.pass_to_pass);
        };
        let mut statuses = self.log_parser.parse(log);
        if statuses.is_empty() {
            statuses = self.log_parser.parse(output);
        }
        Grade::of(
            &self.fail_to_pass,
            &self.pass_to_pass,
            &statuses,
            self.harness.skips(),
        )
    }
}

/// The part of an eval log between the start and end markers.
pub fn test_output(output: &str) -> Option<&str> {
    let (_, after) = output.split_once(START_TEST_OUTPUT)?;
    let (log, _) = after.split_once(END_TEST_OUTPUT)?;
    Some(log)
}

/// Files a unified diff modifies (`--- a/<path>`), in order, without repeats — SWE-bench's
/// `get_modified_files`. Files the diff creates (`--- /dev/null`) are not listed.
pub fn modified_files(diff: &str) -> Vec<String> {
    unique(diff.lines().filter_map(|line| line.strip_prefix("--- a/")))
}

/// Files a unified diff creates (`--- /dev/null` followed by `+++ b/<path>`) — SWE-bench's
/// `get_new_files`.
pub fn new_files(diff: &str) -> Vec<String> {
    let lines: Vec<&str> = diff.lines().collect();
    unique(lines.windows(2).filter_map(|pair| {
        (pair[0].trim_end() == "--- /dev/null")
            .then(|| pair[1].strip_prefix("+++ b/"))
            .flatten()
    }))
}

fn unique<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for path in paths {
        // git appends a tab to names with spaces; the path ends before it.
        let path = path
            .split('\t')
            .next()
            .unwrap_or(path)
            .trim_end()
            .to_owned();
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files
}

/// Every file a unified diff touches (`diff --git a/x b/<path>`), in order, without repeats.
pub fn touched_files(diff: &str) -> Vec<String> {
    unique(diff.lines().filter_map(|line| {
        line.strip_prefix("diff --git a/")
            .and_then(|rest| rest.rsplit_once(" b/"))
            .map(|(_, path)| path)
    }))
}

/// The diff that undoes `diff`: what `git apply -R` would apply. Used for SWE-smith, whose
/// rows carry the bug, so its reference solution is the bug reversed. Within a hunk, each
/// run of changed lines lists its removals before its additions, as git writes them.
pub fn reverse_diff(diff: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    // The current run of changed lines: (removed, added), already reversed.
    let mut removed: Vec<String> = Vec::new();
    let mut added: Vec<String> = Vec::new();
    let mut in_hunk = false;
    let lines: Vec<&str> = diff.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let changed = in_hunk && (line.starts_with('+') || line.starts_with('-'));
        if !changed {
            out.append(&mut removed);
            out.append(&mut added);
        }
        if changed {
            let rest = &line[1..];
            if line.starts_with('+') {
                removed.push(format!("-{rest}"));
            } else {
                added.push(format!("+{rest}"));
            }
        } else if let Some(header) = line.strip_prefix("@@ ") {
            in_hunk = true;
            out.push(reverse_hunk_header(header).unwrap_or_else(|| line.to_owned()));
        } else if in_hunk && (line.starts_with(' ') || line.starts_with('\\') || line.is_empty()) {
            out.push(line.to_owned());
        } else {
            in_hunk = false;
            if let Some(rest) = line.strip_prefix("diff --git a/")
                && let Some((a, b)) = rest.rsplit_once(" b/")
            {
                out.push(format!("diff --git a/{b} b/{a}"));
            } else if let Some(mode) = line.strip_prefix("new file mode ") {
                out.push(format!("deleted file mode {mode}"));
            } else if let Some(mode) = line.strip_prefix("deleted file mode ") {
                out.push(format!("new file mode {mode}"));
            } else if let Some(index) = line.strip_prefix("index ") {
                // `index <old>..<new>[ mode]`
                let (hashes, mode) = index
                    .split_once(' ')
                    .map_or((index, None), |(h, m)| (h, Some(m)));
                out.push(match (hashes.split_once(".."), mode) {
                    (Some((old, new)), Some(mode)) => format!("index {new}..{old} {mode}"),
                    (Some((old, new)), None) => format!("index {new}..{old}"),
                    (None, _) => line.to_owned(),
                });
            } else if line.starts_with("--- ")
                && let Some(next) = lines.get(i + 1).filter(|n| n.starts_with("+++ "))
            {
                out.push(format!("--- {}", swap_prefix(&next[4..], "b/", "a/")));
                out.push(format!("+++ {}", swap_prefix(&line[4..], "a/", "b/")));
                i += 1;
            } else {
                out.push(line.to_owned());
            }
        }
        i += 1;
    }
    out.append(&mut removed);
    out.append(&mut added);
    let mut text = out.join("\n");
    if diff.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn swap_prefix(path: &str, from: &str, to: &str) -> String {
    match path.strip_prefix(from) {
        Some(rest) => format!("{to}{rest}"),
        None => path.to_owned(),
    }
}

/// `-a,b +c,d @@ rest` → `@@ -c,d +a,b @@ rest`.
fn reverse_hunk_header(header: &str) -> Option<String> {
    let (ranges, rest) = header.split_once(" @@")?;
    let (old, new) = ranges.split_once(' ')?;
    let old = old.strip_prefix('-')?;
    let new = new.strip_prefix('+')?;
    Some(format!("@@ -{new} +{old} @@{rest}"))
}

#[cfg(test)]
mod tests;
