//! Task sources: the campaign file and the task files it names, read from disk.
//!
//! A source is a JSONL file, a Parquet file (as downloaded from a dataset hub), or a
//! directory laid out as a Hugging Face dataset (`data/{split}-00000-of-00001.parquet`,
//! `{split}.jsonl`, ...). Its filters (`instance_ids`, `repos`, `limit`) apply to the raw
//! rows, so rows a campaign does not use are never parsed; the rows that remain become
//! tasks through the core's adapters ([`synthfleet_core::taskset`]). Everything is read or
//! nothing is: the first bad row stops the load, naming the file, the row and the field.

mod files;

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use synthfleet_core::campaign::{Campaign, CampaignError, TaskSource, base_dir_of};
use synthfleet_core::task::{Task, TaskFileError, tasks_from_rows};
use synthfleet_core::taskset::TaskFormat;

pub use files::dataset_files;

/// The campaign file or one of its sources could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read campaign file {path}: check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Tasks(#[from] TaskFileError),
    #[error(
        "cannot read Parquet file {path}: is it a Parquet file as downloaded from the dataset hub (snappy, zstd, lz4 or gzip compressed)?"
    )]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error(
        "{path}: instance_ids not found in the source: {}; check the ids (and the split)",
        ids.join(", ")
    )]
    UnknownInstances { path: PathBuf, ids: Vec<String> },
}

/// Reads, validates and resolves a campaign file, loading every task source.
pub fn load_campaign(path: &Path) -> Result<Campaign, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = Campaign::parse(path, &text)?;
    let base_dir = base_dir_of(path);
    let mut tasks = Vec::new();
    for source in &config.tasks {
        tasks.extend(read_source(&base_dir, source)?);
    }
    Ok(Campaign::with_tasks(config, path.to_owned(), tasks)?)
}

/// The tasks of one source, its filters applied, in file order.
pub fn read_source(base_dir: &Path, source: &TaskSource) -> Result<Vec<Task>, SourceError> {
    let root = base_dir.join(&source.path);
    let files = dataset_files(&root, source.split.as_deref())?;
    let wanted: BTreeSet<&str> = source.instance_ids.iter().map(String::as_str).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut tasks = Vec::new();
    let mut left = source.limit.unwrap_or(usize::MAX);
    for file in &files {
        if left == 0 {
            break;
        }
        let mut rows = Vec::new();
        for row in files::rows(file)? {
            let (number, mut row) = row?;
            if !keep(source, &wanted, &row) {
                continue;
            }
            if let Some(Value::String(id)) = row.get("instance_id") {
                seen.insert(id.clone());
            }
            if source.format.of_row(&row) != TaskFormat::Native {
                fill(&mut row, "test_cmd", source.test_cmd.as_deref());
                fill(&mut row, "log_parser", source.log_parser.as_deref());
            }
            rows.push(Ok((number, row)));
            left -= 1;
            if left == 0 {
                break;
            }
        }
        if !rows.is_empty() {
            tasks.extend(tasks_from_rows(file, rows, source.format)?);
        }
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|id| !seen.contains(**id))
        .map(|id| (*id).to_owned())
        .collect();
    // With a limit, ids past it were not looked for.
    if !missing.is_empty() && source.limit.is_none() {
        return Err(SourceError::UnknownInstances {
            path: root,
            ids: missing,
        });
    }
    if tasks.is_empty() {
        return Err(SourceError::Layout {
            path: root,
            message: "no task matches the source's filters (instance_ids, repos, limit)".into(),
        });
    }
    Ok(tasks)
}

fn keep(source: &TaskSource, wanted: &BTreeSet<&str>, row: &Map<String, Value>) -> bool {
    let field = |key: &str| row.get(key).and_then(Value::as_str);
    (wanted.is_empty() || field("instance_id").is_some_and(|id| wanted.contains(id)))
        && (source.repos.is_empty()
            || field("repo").is_some_and(|repo| source.repos.iter().any(|r| r == repo)))
}

/// A source-level default for a field the row does not carry.
fn fill(row: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(value) = value
        && row.get(key).is_none_or(Value::is_null)
    {
        row.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}
