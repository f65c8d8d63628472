//! Task sources: the campaign file, the task files it names and its prompt-template
//! overrides, read from disk.
//!
//! A source is a JSONL file, a Parquet file (as downloaded from a dataset hub), or a
//! directory laid out as a Hugging Face dataset (`data/{split}-00000-of-00001.parquet`,
//! `{split}.jsonl`, ...). Its filters (`instance_ids`, `repos`, `limit`) apply to the raw
//! rows, so rows a campaign does not use are never parsed; the rows that remain become
//! tasks through the core's adapters ([`synthfleet_core::taskset`]). Everything is read or
//! nothing is: the first bad row stops the load, naming the file, the row and the field.

mod files;

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use synthfleet_core::campaign::{Campaign, CampaignError, TaskSource, base_dir_of};
use synthfleet_core::submit::CampaignSpec;
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
    #[error(
        "cannot read prompt template {path}: check the campaign's scaffold.templates (or its variants' templates) directory"
    )]
    Template {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a prompt template of the campaign does not compile")]
    TemplateSyntax(#[from] synthfleet_core::templates::TemplateError),
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

/// What fleet workers need of the campaign beside its tasks: its configuration and the
/// prompt-template overrides it reads from disk — the files of its `scaffold.templates`
/// directory, and of each arm's `[[variants]] templates`, named like a built-in template.
pub fn campaign_spec(campaign: &Campaign) -> Result<CampaignSpec, LoadError> {
    let templates = match &campaign.config.scaffold.templates {
        Some(dir) => read_templates(&campaign.resolve(dir))?,
        None => BTreeMap::new(),
    };
    let arm_templates = campaign
        .config
        .variants
        .iter()
        .filter_map(|v| v.templates.as_ref().map(|dir| (v, dir)))
        .map(|(v, dir)| Ok((v.name.clone(), read_templates(&campaign.resolve(dir))?)))
        .collect::<Result<_, LoadError>>()?;
    Ok(CampaignSpec {
        config: campaign.config.clone(),
        templates,
        arm_templates,
    })
}

/// The campaign's prompt templates, read and compiled ([`CampaignSpec::compile_templates`]).
pub fn load_templates(
    campaign: &Campaign,
) -> Result<synthfleet_core::templates::Templates, LoadError> {
    Ok(campaign_spec(campaign)?.compile_templates()?)
}

/// The template files of `dir` (those of [`synthfleet_core::templates::NAMES`] it has).
fn read_templates(dir: &Path) -> Result<BTreeMap<String, String>, LoadError> {
    let mut out = BTreeMap::new();
    for name in synthfleet_core::templates::NAMES {
        let path = dir.join(name);
        if path.exists() {
            let source = std::fs::read_to_string(&path)
                .map_err(|source| LoadError::Template { path, source })?;
            out.insert(name.to_owned(), source);
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn row(id: &str, repo: &str) -> String {
        serde_json::json!({
            "instance_id": id,
            "repo": repo,
            "base_commit": "abc",
            "test_patch": "diff --git a/t/test_x.py b/t/test_x.py\n--- a/t/test_x.py\n+++ b/t/test_x.py\n",
            "FAIL_TO_PASS": "[\"t/test_x.py::test_a\"]",
            "PASS_TO_PASS": "[]",
            "problem_statement": "p",
        })
        .to_string()
    }

    fn source(path: &str) -> TaskSource {
        let text = format!(
            "name = \"c\"\ntasks = [{{ path = \"{path}\" }}]\nbudget_usd = 1.0\n[[models]]\nname = \"r\"\nprovider = \"replay\"\n"
        );
        Campaign::parse(Path::new("c.toml"), &text)
            .expect("campaign")
            .tasks
            .remove(0)
    }

    #[test]
    fn a_dataset_directory_is_read_one_split_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("ds/data");
        fs::create_dir_all(&data).expect("mkdir");
        fs::write(
            data.join("test.jsonl"),
            row("psf__requests-1", "psf/requests"),
        )
        .expect("write");
        fs::write(data.join("train.jsonl"), "{ not read").expect("write");
        let mut ds = source("ds");
        let err = read_source(dir.path(), &ds).expect_err("two splits");
        assert!(
            err.to_string().contains("several splits (test, train)"),
            "{err}"
        );
        ds.split = Some("dev".into());
        let err = read_source(dir.path(), &ds).expect_err("no such split");
        assert!(
            err.to_string()
                .contains("no `dev` split here; the splits are: test, train"),
            "{err}"
        );
        ds.split = Some("test".into());
        let tasks = read_source(dir.path(), &ds).expect("test split");
        assert_eq!(tasks[0].instance_id, "psf__requests-1");
    }

    #[test]
    fn filters_apply_to_raw_rows_before_parsing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = [
            row("psf__requests-1", "psf/requests"),
            // Not selected, so never parsed: an unknown repository without a test command.
            row("acme__widgets-1", "acme/widgets"),
            row("psf__requests-2", "psf/requests"),
            row("psf__requests-3", "psf/requests"),
        ];
        fs::write(dir.path().join("t.jsonl"), lines.join("\n")).expect("write");
        let mut s = source("t.jsonl");
        s.repos = vec!["psf/requests".into()];
        s.limit = Some(2);
        let ids: Vec<String> = read_source(dir.path(), &s)
            .expect("filtered")
            .into_iter()
            .map(|t| t.instance_id)
            .collect();
        assert_eq!(ids, ["psf__requests-1", "psf__requests-2"]);
        let mut s = source("t.jsonl");
        s.instance_ids = vec!["psf__requests-3".into(), "psf__requests-9".into()];
        let err = read_source(dir.path(), &s).expect_err("unknown id");
        assert!(
            err.to_string()
                .contains("instance_ids not found in the source: psf__requests-9"),
            "{err}"
        );
        // Unfiltered, the unknown repository is an error naming its line.
        let err = read_source(dir.path(), &source("t.jsonl")).expect_err("unknown repo");
        assert!(
            err.to_string().contains("t.jsonl:2: field `test_cmd`"),
            "{err}"
        );
        // A source-level test command fills in what the row lacks.
        let mut s = source("t.jsonl");
        s.test_cmd = Some("python -m pytest -rA".into());
        s.log_parser = Some("pytest".into());
        assert_eq!(read_source(dir.path(), &s).expect("filled").len(), 4);
    }

    #[test]
    fn campaign_loads_its_sources_and_names_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("t.jsonl"),
            row("psf__requests-1", "psf/requests"),
        )
        .expect("write");
        let campaign = dir.path().join("c.toml");
        fs::write(&campaign, "name = \"c\"\ntasks = [\"t.jsonl\"]\nbudget_usd = 1.0\n[[models]]\nname = \"r\"\nprovider = \"replay\"\n").expect("write");
        let c = load_campaign(&campaign).expect("loads");
        assert_eq!(c.tasks.len(), 1);
        fs::write(dir.path().join("t.jsonl"), "{\"instance_id\":\"x\"}").expect("write");
        let err = load_campaign(&campaign).expect_err("bad task");
        assert!(
            err.to_string().contains("t.jsonl:1: field `image`"),
            "{err}"
        );
        fs::write(dir.path().join("t.parquet"), b"PAR1 but not really").expect("write");
        fs::write(&campaign, "name = \"c\"\ntasks = [\"t.parquet\"]\nbudget_usd = 1.0\n[[models]]\nname = \"r\"\nprovider = \"replay\"\n").expect("write");
        let err = load_campaign(&campaign).expect_err("bad parquet");
        assert!(
            err.to_string().contains("cannot read Parquet file"),
            "{err}"
        );
    }
}
