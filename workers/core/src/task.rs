//! Task files: JSONL, one task per line, plus the SWE-bench / SWE-smith adapter.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
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

/// Loads every task of a JSONL file, or none: the first bad line is an error.
pub fn load_task_file(path: &Path) -> Result<Vec<Task>, TaskFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_tasks(path, &text)
}

/// Parses JSONL text; `path` is only used to name the source in errors.
pub fn parse_tasks(path: &Path, text: &str) -> Result<Vec<Task>, TaskFileError> {
    let mut tasks = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let task = parse_task_line(raw).map_err(|e| match e {
            LineError::NotJson(message) => TaskFileError::NotJson {
                path: path.to_owned(),
                line,
                message,
            },
            LineError::Field { field, message } => TaskFileError::Invalid {
                path: path.to_owned(),
                line,
                field,
                message,
            },
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

enum LineError {
    NotJson(String),
    Field { field: String, message: String },
}

fn field_error(field: &str, message: impl Into<String>) -> LineError {
    LineError::Field {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn parse_task_line(raw: &str) -> Result<Task, LineError> {
    let value: Value = serde_json::from_str(raw).map_err(|e| LineError::NotJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(LineError::NotJson("the line is not a JSON object".into()));
    };
    let task = if is_swe_bench(&object) {
        swe_bench_task(object)?
    } else {
        deserialize_task(Value::Object(object))?
    };
    validate(&task)?;
    Ok(task)
}

fn deserialize_task(value: Value) -> Result<Task, LineError> {
    serde_path_to_error::deserialize::<_, Task>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports missing and unknown fields at the parent: pull the name out.
        let field = if path == "." {
            extract_backticked(&inner).unwrap_or_else(|| "(line)".to_owned())
        } else {
            path
        };
        field_error(&field, inner)
    })
}

fn extract_backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}

fn validate(task: &Task) -> Result<(), LineError> {
    let id = &task.instance_id;
    if id.is_empty() || id.len() > 200 {
        return Err(field_error("instance_id", "must be 1 to 200 characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        || id.starts_with('.')
    {
        return Err(field_error(
            "instance_id",
            format!(
                "`{id}` may only hold ASCII letters, digits and - _ . + (it becomes part of storage keys)"
            ),
        ));
    }
    if task.image.trim().is_empty() {
        return Err(field_error("image", "must name a Docker image"));
    }
    if task.problem_statement.trim().is_empty() {
        return Err(field_error("problem_statement", "must not be empty"));
    }
    if !task.workdir.starts_with('/') {
        return Err(field_error("workdir", "must be an absolute path"));
    }
    if task.timeout_s == Some(0) {
        return Err(field_error("timeout_s", "must be at least 1"));
    }
    Ok(())
}

const SWE_BENCH_KEYS: [&str; 4] = ["base_commit", "FAIL_TO_PASS", "PASS_TO_PASS", "image_name"];

fn is_swe_bench(object: &Map<String, Value>) -> bool {
    SWE_BENCH_KEYS.iter().any(|k| object.contains_key(*k))
}

/// Maps a SWE-bench / SWE-smith instance onto a [`Task`].
///
/// The image is `image_name` when given, otherwise the public SWE-bench naming scheme.
/// The eval script is the instance's own `eval` when given; otherwise, when the test ids
/// are pytest node ids, a pytest run of FAIL_TO_PASS and PASS_TO_PASS. The SWE fields are
/// kept in `tags` so that reports can group by repository.
fn swe_bench_task(mut object: Map<String, Value>) -> Result<Task, LineError> {
    let take_str =
        |object: &mut Map<String, Value>, key: &str| -> Result<Option<String>, LineError> {
            match object.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(field_error(key, "must be a string")),
            }
        };
    let instance_id = take_str(&mut object, "instance_id")?
        .ok_or_else(|| field_error("instance_id", "missing field `instance_id`"))?;
    let problem_statement = take_str(&mut object, "problem_statement")?
        .ok_or_else(|| field_error("problem_statement", "missing field `problem_statement`"))?;
    let image = match (
        take_str(&mut object, "image")?,
        take_str(&mut object, "image_name")?,
    ) {
        (Some(image), _) | (None, Some(image)) => image,
        (None, None) => format!(
            "swebench/sweb.eval.x86_64.{}:latest",
            instance_id.to_lowercase().replace("__", "_1776_")
        ),
    };
    let tests = |object: &Map<String, Value>, key: &str| -> Result<Vec<String>, LineError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| field_error(key, "must be a list of strings"))
                })
                .collect(),
            // SWE-bench ships these lists JSON-encoded as strings.
            Some(Value::String(s)) => serde_json::from_str(s)
                .map_err(|e| field_error(key, format!("is not a JSON list of test ids: {e}"))),
            Some(_) => Err(field_error(key, "must be a list of test ids")),
        }
    };
    let fail_to_pass = tests(&object, "FAIL_TO_PASS")?;
    let pass_to_pass = tests(&object, "PASS_TO_PASS")?;
    let eval = match take_str(&mut object, "eval")? {
        Some(eval) => Some(eval),
        None => pytest_eval(&fail_to_pass, &pass_to_pass),
    };
    let workdir = take_str(&mut object, "workdir")?.unwrap_or_else(default_workdir);
    let setup = take_str(&mut object, "setup")?;
    let timeout_s = match object.remove("timeout_s") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| field_error("timeout_s", "must be a positive integer"))?,
        ),
    };
    let difficulty = object.remove("difficulty");
    let mut tags: BTreeMap<String, Value> = match object.remove("tags") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => map.into_iter().collect(),
        Some(_) => return Err(field_error("tags", "must be an object")),
    };
    let replay = match object.remove("replay") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v)
            .map_err(|_| field_error("replay", "must be a list of strings"))?,
    };
    // Everything else of the instance (repo, base_commit, patch, test lists, ...) is provenance.
    for (key, value) in object {
        tags.insert(key, value);
    }
    Ok(Task {
        instance_id,
        image,
        problem_statement,
        workdir,
        setup,
        eval,
        timeout_s,
        tags,
        difficulty,
        replay,
    })
}

fn pytest_eval(fail_to_pass: &[String], pass_to_pass: &[String]) -> Option<String> {
    let ids: Vec<&String> = fail_to_pass
        .iter()
        .chain(pass_to_pass)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() || !ids.iter().all(|id| id.contains("::")) {
        return None;
    }
    let mut ids: Vec<&str> = ids.into_iter().map(String::as_str).collect();
    ids.sort_unstable();
    let quoted: Vec<String> = ids.iter().map(|id| shell_quote(id)).collect();
    Some(format!(
        "python -m pytest -rA -p no:cacheprovider {}",
        quoted.join(" ")
    ))
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
    fn swe_bench_instance_is_adapted() {
        let line = r#"{"instance_id":"astropy__astropy-12907","repo":"astropy/astropy","base_commit":"abc","problem_statement":"p","FAIL_TO_PASS":"[\"t/test_a.py::test_x\"]","PASS_TO_PASS":[]}"#;
        let task = &parse(line).expect("adapted")[0];
        assert_eq!(
            task.image,
            "swebench/sweb.eval.x86_64.astropy_1776_astropy-12907:latest"
        );
        assert_eq!(task.tags["repo"], "astropy/astropy");
        assert_eq!(
            task.eval.as_deref(),
            Some("python -m pytest -rA -p no:cacheprovider 't/test_a.py::test_x'")
        );
    }
}
