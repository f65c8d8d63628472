//! Task sources (`tasks = [...]`): a file or dataset directory given as a path, or as a
//! table with its format, split and filters; anything else is an error that says what
//! is allowed.

use crate::taskset::TaskFormat;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where tasks come from: `"tasks.jsonl"`, or
/// `{ path = "SWE-bench_Verified/", split = "test", repos = ["django/django"], limit = 50 }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSource {
    /// A JSONL or Parquet file, or a directory laid out as a Hugging Face dataset
    /// (`data/{split}-*.parquet` or `*.jsonl`).
    pub path: PathBuf,
    #[serde(default)]
    pub format: TaskFormat,
    /// The split to read from a dataset directory (`train`, `test`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Only these instances (each must exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<String>,
    /// Only rows whose `repo` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
    /// At most this many tasks (the first, in file order, after the other filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The test command for rows that carry none and whose repository SWE-bench's table
    /// does not know (e.g. SWE-Gym's repositories); the test files are appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_cmd: Option<String>,
    /// The log parser for rows that carry none (`pytest`, `django`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_parser: Option<String>,
}

impl TaskSource {
    fn of_path(path: PathBuf) -> TaskSource {
        TaskSource {
            path,
            format: TaskFormat::Auto,
            split: None,
            instance_ids: Vec::new(),
            repos: Vec::new(),
            limit: None,
            test_cmd: None,
            log_parser: None,
        }
    }
}

/// A source is a path or a table; anything else is an error that says so.
impl<'de> Deserialize<'de> for TaskSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TaskSource, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            path: PathBuf,
            #[serde(default)]
            format: TaskFormat,
            #[serde(default)]
            split: Option<String>,
            #[serde(default)]
            instance_ids: Vec<String>,
            #[serde(default)]
            repos: Vec<String>,
            #[serde(default)]
            limit: Option<usize>,
            #[serde(default)]
            test_cmd: Option<String>,
            #[serde(default)]
            log_parser: Option<String>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TaskSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a task file path or a table { path = ..., format, split, instance_ids, repos, limit, test_cmd, log_parser }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TaskSource, E> {
                Ok(TaskSource::of_path(PathBuf::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TaskSource, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(TaskSource {
                    path: t.path,
                    format: t.format,
                    split: t.split,
                    instance_ids: t.instance_ids,
                    repos: t.repos,
                    limit: t.limit,
                    test_cmd: t.test_cmd,
                    log_parser: t.log_parser,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}
