//! Task files on disk: which files a source names, and their rows as JSON objects.

use crate::SourceError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use synthfleet_core::task::TaskFileError;

/// A row with its number in its file (the line for JSONL, from 1).
pub(crate) type NumberedRow = Result<(usize, Map<String, Value>), TaskFileError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jsonl,
    Parquet,
}

fn kind(path: &Path) -> Option<Kind> {
    match path.extension()?.to_str()? {
        "jsonl" | "json" | "ndjson" => Some(Kind::Jsonl),
        "parquet" => Some(Kind::Parquet),
        _ => None,
    }
}

/// The split a dataset file belongs to: its name up to the first `-` or `.`
/// (`test-00000-of-00001.parquet`, `test.jsonl`), as the dataset hub names them.
fn split_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.split(['-', '.']).next().map(str::to_owned)
}

/// The files of a source: the file itself, or the task files of a dataset directory that
/// belong to `split` (required when the directory holds several splits), sorted by path.
pub fn dataset_files(root: &Path, split: Option<&str>) -> Result<Vec<PathBuf>, SourceError> {
    let layout = |message: String| SourceError::Layout {
        path: root.to_owned(),
        message,
    };
    if !root.is_dir() {
        if split.is_some() {
            return Err(layout(
                "`split` selects files of a dataset directory; this is a single file".into(),
            ));
        }
        if kind(root).is_none() && root.exists() {
            return Err(layout(
                "unknown task file type: use .jsonl (one JSON object per line) or .parquet".into(),
            ));
        }
        return Ok(vec![root.to_owned()]);
    }
    let mut files = Vec::new();
    collect(root, &mut files, 0).map_err(|source| TaskFileError::Read {
        path: root.to_owned(),
        source,
    })?;
    files.sort();
    let splits: BTreeSet<String> = files.iter().filter_map(|f| split_of(f)).collect();
    let chosen = match (split, splits.len()) {
        (_, 0) => {
            return Err(layout(
                "no task files (.jsonl or .parquet) in this directory".into(),
            ));
        }
        (Some(split), _) if splits.contains(split) => split.to_owned(),
        (Some(split), _) => {
            return Err(layout(format!(
                "no `{split}` split here; the splits are: {}",
                splits.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        (None, 1) => splits.into_iter().next().unwrap_or_default(),
        (None, _) => {
            return Err(layout(format!(
                "the directory holds several splits ({}): choose one with `split = \"...\"`",
                splits.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
    };
    Ok(files
        .into_iter()
        .filter(|f| split_of(f).as_deref() == Some(chosen.as_str()))
        .collect())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>, depth: usize) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() && depth < 3 {
            collect(&path, files, depth + 1)?;
        } else if kind(&path).is_some() {
            files.push(path);
        }
    }
    Ok(())
}

/// The rows of a task file, numbered from 1.
pub(crate) fn rows(path: &Path) -> Result<Box<dyn Iterator<Item = NumberedRow>>, SourceError> {
    match kind(path) {
        Some(Kind::Parquet) => parquet_rows(path),
        _ => jsonl_rows(path),
    }
}

fn jsonl_rows(path: &Path) -> Result<Box<dyn Iterator<Item = NumberedRow>>, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let rows: Vec<NumberedRow> = synthfleet_core::task::jsonl_rows(path, &text).collect();
    if rows.is_empty() {
        return Err(TaskFileError::Empty {
            path: path.to_owned(),
        }
        .into());
    }
    Ok(Box::new(rows.into_iter()))
}

fn parquet_rows(path: &Path) -> Result<Box<dyn Iterator<Item = NumberedRow>>, SourceError> {
    let parquet = |source| SourceError::Parquet {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|source| TaskFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(parquet)?;
    let mut rows = Vec::new();
    for (index, row) in reader.get_row_iter(None).map_err(parquet)?.enumerate() {
        let row = row.map_err(parquet)?;
        match row.to_json_value() {
            Value::Object(object) => rows.push(Ok((index + 1, object))),
            _ => {
                return Err(SourceError::Layout {
                    path: path.to_owned(),
                    message: format!("row {} is not a record", index + 1),
                });
            }
        }
    }
    Ok(Box::new(rows.into_iter()))
}
