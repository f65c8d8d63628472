//! Rows of the public task sets — SWE-bench, SWE-Gym, SWE-rebench, SWE-smith — as tasks
//! that are verified the way each set's own harness verifies them (see [`crate::harness`]).
//!
//! A row is a JSON object, from a JSONL line or a Parquet row alike. Every error names the
//! field and says what is allowed; a row whose test command cannot be determined is an
//! error, never verified some other way.

use crate::harness::repos::{self, CONDA_ACTIVATE};
use crate::harness::{self, Harness, LogParser, TestSpec};
use crate::task::{DEFAULT_WORKDIR, FieldError, Task, shell_quote};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Which set a task file's rows come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskFormat {
    /// Decide per row: `install_config` → SWE-rebench; `base_commit` + `test_patch` →
    /// SWE-bench; FAIL_TO_PASS + `patch` without `test_patch` → SWE-smith; else native.
    #[default]
    Auto,
    /// synthfleet's own task format (docs/FORMATS.md).
    Native,
    SweBench,
    SweGym,
    SweRebench,
    SweSmith,
}

impl TaskFormat {
    /// The format a row is read in: the declared one, or the detected one for `Auto`.
    pub fn of_row(self, row: &Map<String, Value>) -> TaskFormat {
        match self {
            TaskFormat::Auto => TaskFormat::detect(row),
            declared => declared,
        }
    }

    fn detect(row: &Map<String, Value>) -> TaskFormat {
        let has = |key: &str| row.get(key).is_some_and(|v| !v.is_null());
        if has("install_config") {
            TaskFormat::SweRebench
        } else if has("base_commit") || has("test_patch") {
            TaskFormat::SweBench
        } else if has("FAIL_TO_PASS") || has("PASS_TO_PASS") || has("image_name") {
            TaskFormat::SweSmith
        } else {
            TaskFormat::Native
        }
    }
}

/// Fields of a public row that become the task's own; the rest is provenance (`tags`).
const CONSUMED: [&str; 17] = [
    "instance_id",
    "problem_statement",
    "image",
    "image_name",
    "docker_image",
    "workdir",
    "timeout_s",
    "difficulty",
    "tags",
    "replay",
    "patch",
    "test_patch",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
    "install_config",
    "test_cmd",
    "log_parser",
];

/// Turns one row into a task.
pub fn task_from_row(row: Map<String, Value>, format: TaskFormat) -> Result<Task, FieldError> {
    let harness = match format.of_row(&row) {
        TaskFormat::Auto | TaskFormat::Native => return crate::task::native_task(row),
        TaskFormat::SweBench => Harness::SweBench,
        TaskFormat::SweGym => Harness::SweGym,
        TaskFormat::SweRebench => Harness::SweRebench,
        TaskFormat::SweSmith => Harness::SweSmith,
    };
    let row = Row(row);
    let instance_id = row.required_str("instance_id")?;
    let workdir = row
        .str("workdir")?
        .unwrap_or_else(|| DEFAULT_WORKDIR.to_owned());
    let tests = match harness {
        Harness::SweSmith => swe_smith(&row, &instance_id)?,
        _ => swe_bench(&row, harness)?,
    };
    let image = match row
        .str("image")?
        .or(row.str("image_name")?)
        .or(row.str("docker_image")?)
    {
        Some(image) => image,
        None => default_image(harness, &instance_id, &row)?,
    };
    let timeout_s = match row.0.get("timeout_s") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|&t| t > 0)
                .ok_or_else(|| FieldError::new("timeout_s", "must be a positive integer"))?,
        ),
    };
    let mut tags: BTreeMap<String, Value> = match row.0.get("tags") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => map.clone().into_iter().collect(),
        Some(_) => return Err(FieldError::new("tags", "must be an object")),
    };
    let replay = match row.0.get("replay") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| FieldError::new("replay", "must be a list of strings"))?,
    };
    let difficulty = row.0.get("difficulty").filter(|v| !v.is_null()).cloned();
    let problem_statement = row.required_str("problem_statement")?;
    for (key, value) in row.0 {
        if !CONSUMED.contains(&key.as_str()) && !value.is_null() {
            tags.insert(key, value);
        }
    }
    tags.insert("harness".to_owned(), Value::String(harness.to_string()));
    Ok(Task {
        instance_id,
        image,
        problem_statement,
        workdir,
        setup: None,
        eval: None,
        tests: Some(tests),
        timeout_s,
        tags,
        difficulty,
        replay,
    })
}

/// A row being read, with typed accessors whose errors name the field.
struct Row(Map<String, Value>);

impl Row {
    fn str(&self, key: &str) -> Result<Option<String>, FieldError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(FieldError::new(key, "must be a string")),
        }
    }

    fn required_str(&self, key: &str) -> Result<String, FieldError> {
        self.str(key)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| FieldError::new(key, format!("missing field `{key}`")))
    }

    /// FAIL_TO_PASS / PASS_TO_PASS: a list of test ids, or (as SWE-bench ships them) a
    /// JSON-encoded list in a string.
    fn tests(&self, key: &str) -> Result<Vec<String>, FieldError> {
        let list = |items: &[Value]| -> Result<Vec<String>, FieldError> {
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| FieldError::new(key, "must be a list of test ids (strings)"))
                })
                .collect()
        };
        match self.0.get(key) {
            None | Some(Value::Null) => Err(FieldError::new(
                key,
                format!("missing field `{key}` (the test ids that grade the task)"),
            )),
            Some(Value::Array(items)) => list(items),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(items)) => list(&items),
                _ => Err(FieldError::new(
                    key,
                    "is a string but not a JSON list of test ids",
                )),
            },
            Some(_) => Err(FieldError::new(key, "must be a list of test ids")),
        }
    }
}

/// The parser a row's `field` names, or an error listing the known ones.
fn log_parser_named(field: &str, name: &str) -> Result<LogParser, FieldError> {
    LogParser::from_name(name).ok_or_else(|| {
        FieldError::new(
            field,
            format!(
                "unknown log parser `{name}`; known: {}",
                LogParser::ALL.map(LogParser::as_str).join(", ")
            ),
        )
    })
}

/// SWE-bench, SWE-Gym and SWE-rebench rows: SWE-bench's eval script.
fn swe_bench(row: &Row, harness: Harness) -> Result<TestSpec, FieldError> {
    let repo = row.required_str("repo")?;
    let base_commit = row.required_str("base_commit")?;
    let test_patch = row.required_str("test_patch")?;
    let version = row.str("version")?;
    let install_config = match row.0.get("install_config") {
        None | Some(Value::Null) => None,
        Some(Value::Object(config)) => Some(config),
        // Some exports keep nested objects as JSON strings.
        Some(Value::String(_)) | Some(_) => {
            return Err(FieldError::new("install_config", "must be an object"));
        }
    };
    let known = repos::spec(&repo, version.as_deref());
    let config_str = |key: &str| -> Result<Option<String>, FieldError> {
        match install_config.and_then(|c| c.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(FieldError::new(
                &format!("install_config.{key}"),
                "must be a string",
            )),
        }
    };
    let test_cmd = match (row.str("test_cmd")?, config_str("test_cmd")?, &known) {
        (Some(cmd), _, _) | (None, Some(cmd), _) => cmd,
        (None, None, Some(known)) => known.test_cmd.clone(),
        (None, None, None) => {
            return Err(FieldError::new(
                "test_cmd",
                format!(
                    "no test command is known for repository `{repo}`: SWE-bench's table covers {}; give the row a `test_cmd` and `log_parser` (or SWE-rebench's `install_config`), or set them on the task source in the campaign",
                    repos::KNOWN.join(", ")
                ),
            ));
        }
    };
    let parser_name = match row.str("log_parser")? {
        Some(name) => Some(("log_parser", name)),
        None => config_str("log_parser")?.map(|n| ("install_config.log_parser", n)),
    };
    let log_parser = match (parser_name, &known) {
        (Some((field, name)), _) => log_parser_named(field, &name)?,
        (None, Some(known)) => known.log_parser,
        (None, None) => {
            return Err(FieldError::new(
                "log_parser",
                format!(
                    "no log parser is known for repository `{repo}`: give the row a `log_parser` ({})",
                    LogParser::ALL.map(LogParser::as_str).join(", ")
                ),
            ));
        }
    };
    let mut pre_test: Vec<String> = CONDA_ACTIVATE.map(str::to_owned).to_vec();
    match install_config {
        Some(config) => {
            if let Some(commands) = config.get("eval_commands").filter(|v| !v.is_null()) {
                let commands: Vec<String> =
                    serde_json::from_value(commands.clone()).map_err(|_| {
                        FieldError::new("install_config.eval_commands", "must be a list of strings")
                    })?;
                pre_test.extend(commands);
            }
            pre_test.extend(config_str("install")?);
        }
        None => {
            if let Some(known) = &known {
                pre_test.extend(known.eval_commands.iter().cloned());
                pre_test.extend(known.install.iter().cloned());
            }
        }
    }
    let directives = repos::test_directives(&repo, &test_patch);
    let test_cmd = std::iter::once(test_cmd)
        .chain(directives)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(TestSpec {
        harness,
        checkout: None,
        before_patch: Vec::new(),
        reset_ref: base_commit,
        reset_files: harness::modified_files(&test_patch),
        remove_files: harness::new_files(&test_patch),
        pre_test,
        test_cmd,
        log_parser,
        fail_to_pass: row.tests("FAIL_TO_PASS")?,
        pass_to_pass: row.tests("PASS_TO_PASS")?,
        gold_patch: row.str("patch")?.filter(|p| !p.trim().is_empty()),
        test_patch,
    })
}

/// SWE-smith's Python profile test command (`PythonProfile.test_cmd`): the whole suite.
const SWE_SMITH_TEST_CMD: &str = "source /opt/miniconda3/bin/activate; conda activate testbed; pytest --disable-warnings --color=no --tb=no --verbose";

/// SWE-smith rows: `patch` is the bug. Upstream keeps a branch per instance in a mirror
/// ("Bug Patch", then "Remove F2P Tests") and checks it out; when the image does not hold
/// that branch, the task's checkout rebuilds the same two commits from the row.
fn swe_smith(row: &Row, instance_id: &str) -> Result<TestSpec, FieldError> {
    let bug = row.required_str("patch")?;
    let fail_to_pass = row.tests("FAIL_TO_PASS")?;
    let pass_to_pass = row.tests("PASS_TO_PASS")?;
    let files = |tests: &[String]| -> Vec<String> {
        let mut files: Vec<String> = tests
            .iter()
            .map(|t| t.split("::").next().unwrap_or(t).to_owned())
            .collect();
        files.sort();
        files.dedup();
        files
    };
    let f2p_files = files(&fail_to_pass);
    let mut test_files = f2p_files.clone();
    test_files.extend(files(&pass_to_pass));
    test_files.sort();
    test_files.dedup();
    let log_parser = match row.str("log_parser")? {
        None => LogParser::Swesmith,
        Some(name) => log_parser_named("log_parser", &name)?,
    };
    Ok(TestSpec {
        harness: Harness::SweSmith,
        checkout: Some(swe_smith_checkout(instance_id, &bug, &f2p_files)),
        // Back to "Bug Patch": the tests the agent did not see return.
        before_patch: vec!["git checkout -q HEAD~1".to_owned()],
        reset_ref: "HEAD".to_owned(),
        reset_files: test_files,
        remove_files: Vec::new(),
        test_patch: String::new(),
        pre_test: Vec::new(),
        test_cmd: row
            .str("test_cmd")?
            .unwrap_or_else(|| SWE_SMITH_TEST_CMD.to_owned()),
        log_parser,
        fail_to_pass,
        pass_to_pass,
        gold_patch: Some(harness::reverse_diff(&bug)),
    })
}

/// The checkout that puts a SWE-smith instance's branch in place: checked out when the
/// image has it, else rebuilt — the bug committed as "Bug Patch", the FAIL_TO_PASS test
/// files removed in "Remove F2P Tests" — so that the agent's diff is its own and `HEAD~1`
/// holds the tests again.
fn swe_smith_checkout(instance_id: &str, bug: &str, f2p_files: &[String]) -> String {
    let id = shell_quote(instance_id);
    let mut bug = bug.to_owned();
    if !bug.ends_with('\n') {
        bug.push('\n');
    }
    let remove = if f2p_files.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = f2p_files.iter().map(|f| shell_quote(f)).collect();
        format!("  rm -f -- {}\n", quoted.join(" "))
    };
    format!(
        "set -euo pipefail
export GIT_CONFIG_COUNT=4 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*' \\
  GIT_CONFIG_KEY_1=user.name GIT_CONFIG_VALUE_1=swesmith \\
  GIT_CONFIG_KEY_2=user.email GIT_CONFIG_VALUE_2=swesmith@swesmith.ai \\
  GIT_CONFIG_KEY_3=commit.gpgsign GIT_CONFIG_VALUE_3=false
if git rev-parse --verify -q refs/heads/{id} >/dev/null; then
  git checkout -q {id}
else
  git checkout -q -b {id}
  git apply - <<'EOF_SWESMITH_BUG'
{bug}EOF_SWESMITH_BUG
  git add -A && git commit -q -m 'Bug Patch'
{remove}  git add -A && git commit -q --allow-empty -m 'Remove F2P Tests'
fi
"
    )
}

/// The public image name of an instance, by each set's convention.
fn default_image(harness: Harness, instance_id: &str, row: &Row) -> Result<String, FieldError> {
    let lower = instance_id.to_lowercase();
    Ok(match harness {
        Harness::SweBench => format!(
            "swebench/sweb.eval.x86_64.{}:latest",
            lower.replace("__", "_1776_")
        ),
        Harness::SweRebench => format!(
            "swerebench/sweb.eval.x86_64.{}:latest",
            lower.replace("__", "_1776_")
        ),
        Harness::SweGym => format!(
            "xingyaoww/sweb.eval.x86_64.{}:latest",
            lower.replace("__", "_s_")
        ),
        Harness::SweSmith => {
            // `repo` is the mirror, `swesmith/<owner>__<repo>.<commit8>`.
            let repo = row.str("repo")?.ok_or_else(|| {
                FieldError::new(
                    "image_name",
                    "missing: a SWE-smith row needs `image_name` (or `repo`, to derive it)",
                )
            })?;
            let name = repo.rsplit('/').next().unwrap_or(&repo);
            format!(
                "jyangballin/swesmith.x86_64.{}",
                name.replace("__", "_1776_").to_lowercase()
            )
        }
    })
}
