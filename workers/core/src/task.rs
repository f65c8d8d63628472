//! Tasks and task files (JSONL, one task per line). Rows of the public task sets are
//! turned into tasks by [`crate::taskset`].

use crate::harness::TestSpec;
use crate::taskset::{TaskFormat, task_from_row};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_WORKDIR: &str = "/testbed";

/// One unit of work: an image, a problem and (optionally) a way to verify a solution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub instance_id: String,
    /// Docker image the sandbox starts from.
    pub image: String,
    pub problem_statement: String,
    #[serde(default = "default_workdir")]
    pub workdir: String,
    /// Shell run in the sandbox before the agent starts (and before eval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// Shell script run in a fresh sandbox with the final patch applied; exit 0 = solved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<String>,
    /// Per-test verification as a public set's harness does it (instead of `eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSpec>,
    /// Wall-clock limit for the whole rollout; overrides the campaign's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<Value>,
    /// Scripted actions for the keyless `replay` provider (one shell command per step;
    /// `submit` ends the rollout). Ignored by real models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replay: Vec<String>,
}

fn default_workdir() -> String {
    DEFAULT_WORKDIR.to_owned()
}

impl Task {
    /// Whether a rollout of this task can be verified (by `eval` or by `tests`).
    pub fn is_verifiable(&self) -> bool {
        self.eval.is_some() || self.tests.is_some()
    }

    /// SHA-256 of everything that decides this task's grade: its setup, its eval script
    /// and its harness's test specification (checkout, reset, test patch, command, parser,
    /// graded tests). Equal hashes mean the same grading.
    pub fn harness_hash(&self) -> String {
        #[derive(Serialize)]
        struct Graded<'a> {
            setup: &'a Option<String>,
            eval: &'a Option<String>,
            tests: &'a Option<TestSpec>,
        }
        let graded = Graded {
            setup: &self.setup,
            eval: &self.eval,
            tests: &self.tests,
        };
        // Serialising plain strings and lists cannot fail; an empty hash input would still
        // be a stable (if useless) fingerprint.
        let bytes = serde_json::to_vec(&graded).unwrap_or_default();
        crate::codec::sha256_hex(&bytes)
    }
}

/// A field of a task row is wrong: which one and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A task file could not be used. Names the file, the line and the field.
#[derive(Debug, thiserror::Error)]
pub enum TaskFileError {
    #[error("cannot read task file {path}: check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{path}:{line}: not valid JSON ({message}); each line must be one JSON object")]
    NotJson {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{path}:{line}: instance_id `{instance_id}` already appears on line {first_line}; instance ids must be unique"
    )]
    Duplicate {
        path: PathBuf,
        line: usize,
        instance_id: String,
        first_line: usize,
    },
    #[error("{path}: no tasks found; a task file holds one JSON object per line")]
    Empty { path: PathBuf },
}

/// Parses JSONL text; `path` is only used to name the source in errors.
pub fn parse_tasks(path: &Path, text: &str) -> Result<Vec<Task>, TaskFileError> {
    tasks_from_rows(path, jsonl_rows(path, text), TaskFormat::Auto)
}

/// The rows of JSONL text, numbered by line (from 1); blank lines are skipped and a line
/// that is not a JSON object is an error naming `path` and the line.
pub fn jsonl_rows<'a>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(usize, Map<String, Value>), TaskFileError>> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, raw)| !raw.trim().is_empty())
        .map(move |(index, raw)| {
            let line = index + 1;
            let not_json = |message: String| TaskFileError::NotJson {
                path: path.to_owned(),
                line,
                message,
            };
            match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(row)) => Ok((line, row)),
                Ok(_) => Err(not_json("the line is not a JSON object".into())),
                Err(e) => Err(not_json(e.to_string())),
            }
        })
}

/// Turns numbered rows (line or row numbers, from 1) into tasks: all, or the first error,
/// naming `path`, the number and the field. Instance ids must be unique.
pub fn tasks_from_rows(
    path: &Path,
    rows: impl IntoIterator<Item = Result<(usize, Map<String, Value>), TaskFileError>>,
    format: TaskFormat,
) -> Result<Vec<Task>, TaskFileError> {
    let mut tasks = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        let (line, row) = row?;
        let task = task_from_row(row, format)
            .and_then(|task| validate(&task).map(|()| task))
            .map_err(|FieldError { field, message }| TaskFileError::Invalid {
                path: path.to_owned(),
                line,
                field,
                message,
            })?;
        if let Some(&first_line) = seen.get(&task.instance_id) {
            return Err(TaskFileError::Duplicate {
                path: path.to_owned(),
                line,
                instance_id: task.instance_id,
                first_line,
            });
        }
        seen.insert(task.instance_id.clone(), line);
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Err(TaskFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(tasks)
}

/// A row in synthfleet's own format.
pub(crate) fn native_task(row: Map<String, Value>) -> Result<Task, FieldError> {
    let task = serde_path_to_error::deserialize::<_, Task>(Value::Object(row)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports missing and unknown fields at the parent: pull the name out.
        let field = if path == "." {
            extract_backticked(&inner).unwrap_or_else(|| "(line)".to_owned())
        } else {
            path
        };
        FieldError::new(&field, inner)
    })?;
    if task.eval.is_some() && task.tests.is_some() {
        return Err(FieldError::new(
            "tests",
            "give either `eval` (a script, exit 0 = solved) or `tests` (per-test grading), not both",
        ));
    }
    Ok(task)
}

fn extract_backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}

fn validate(task: &Task) -> Result<(), FieldError> {
    let id = &task.instance_id;
    if id.is_empty() || id.len() > 200 {
        return Err(FieldError::new(
            "instance_id",
            "must be 1 to 200 characters",
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        || id.starts_with('.')
    {
        return Err(FieldError::new(
            "instance_id",
            format!(
                "`{id}` may only hold ASCII letters, digits and - _ . + (it becomes part of storage keys)"
            ),
        ));
    }
    if task.image.trim().is_empty() {
        return Err(FieldError::new("image", "must name a Docker image"));
    }
    if task.problem_statement.trim().is_empty() {
        return Err(FieldError::new("problem_statement", "must not be empty"));
    }
    if !task.workdir.starts_with('/') {
        return Err(FieldError::new("workdir", "must be an absolute path"));
    }
    if task.timeout_s == Some(0) {
        return Err(FieldError::new("timeout_s", "must be at least 1"));
    }
    Ok(())
}

/// Quotes a string for POSIX `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Task>, TaskFileError> {
        parse_tasks(Path::new("tasks.jsonl"), text)
    }

    #[test]
    fn parses_minimal_task_with_defaults() {
        let tasks = parse(r#"{"instance_id":"a-1","image":"img","problem_statement":"fix it"}"#)
            .expect("valid");
        assert_eq!(tasks[0].workdir, "/testbed");
        assert!(tasks[0].eval.is_none());
    }

    #[test]
    fn missing_field_names_line_and_field() {
        let text = "{\"instance_id\":\"a\",\"image\":\"i\",\"problem_statement\":\"p\"}\n\n{\"instance_id\":\"b\",\"problem_statement\":\"p\"}\n";
        let err = parse(text).expect_err("missing image");
        let msg = err.to_string();
        assert!(msg.starts_with("tasks.jsonl:3: field `image`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err =
            parse(r#"{"instance_id":"a","image":"i","problem_statement":"p","timeout_s":"soon"}"#)
                .expect_err("bad type");
        assert!(err.to_string().contains("field `timeout_s`"), "{err}");
    }

    #[test]
    fn unknown_field_is_an_error() {
        let err = parse(r#"{"instance_id":"a","image":"i","problem_statement":"p","imgae":"x"}"#)
            .expect_err("unknown");
        assert!(err.to_string().contains("field `imgae`"), "{err}");
    }

    #[test]
    fn bad_json_and_duplicates_and_ids() {
        assert!(matches!(
            parse("{not json"),
            Err(TaskFileError::NotJson { line: 1, .. })
        ));
        let dup = "{\"instance_id\":\"a\",\"image\":\"i\",\"problem_statement\":\"p\"}\n{\"instance_id\":\"a\",\"image\":\"i\",\"problem_statement\":\"p\"}";
        assert!(matches!(
            parse(dup),
            Err(TaskFileError::Duplicate {
                line: 2,
                first_line: 1,
                ..
            })
        ));
        let err = parse(r#"{"instance_id":"../etc","image":"i","problem_statement":"p"}"#)
            .expect_err("bad id");
        assert!(err.to_string().contains("field `instance_id`"), "{err}");
        assert!(matches!(parse("\n\n"), Err(TaskFileError::Empty { .. })));
    }

    #[test]
    fn native_task_takes_either_eval_or_tests() {
        let line = r#"{"instance_id":"a","image":"i","problem_statement":"p","eval":"true","tests":{"harness":"swe-bench","reset_ref":"HEAD","reset_files":[],"test_cmd":"pytest -rA","log_parser":"pytest","FAIL_TO_PASS":[],"PASS_TO_PASS":[]}}"#;
        let err = parse(line).expect_err("both");
        assert!(err.to_string().contains("field `tests`"), "{err}");
    }
}
