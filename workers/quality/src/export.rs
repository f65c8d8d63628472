//! Exports: Parquet, or a Hugging Face dataset (`data/train-*.parquet` and a dataset card).
//!
//! Column names follow the public trajectory datasets trainers already load (SWE-smith,
//! SWE-rebench): `instance_id`, `trajectory_id`, `model`, `messages` (OpenAI chat format, a
//! list of structs: SFT-ready), `tools`, `model_patch`, `exit_status`, `resolved`, plus
//! ours and the quality-stage verdicts.

use crate::anonymize::Anonymizer;
use crate::dataset::{Column, Dataset, JsonlWriter, MESSAGES_TYPE, TRAJECTORY_COLUMNS, sql_path};
use crate::review::Review;
use crate::stages::Assessment;
use crate::{CampaignData, Item, LOAD_CONCURRENCY, QualityError, TrajectoryRow};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::trajectory::{ChatMessage, TrajectoryRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One Parquet file.
    Parquet,
    /// A Hugging Face dataset folder.
    Hf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Trajectories that passed every quality stage (SFT data).
    Accepted,
    /// Verified resolved, whatever the later stages said.
    Resolved,
    /// Everything committed (RL data, analyses).
    All,
}

impl Filter {
    pub fn as_str(self) -> &'static str {
        match self {
            Filter::Accepted => "accepted",
            Filter::Resolved => "resolved",
            Filter::All => "all",
        }
    }

    fn keeps(self, item: &Item, assessment: &Assessment) -> bool {
        match self {
            Filter::Accepted => assessment.accepted,
            Filter::Resolved => item.row.resolved,
            Filter::All => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub filter: Filter,
    pub out: PathBuf,
    pub anonymize: bool,
    /// Rows per Parquet file of a Hugging Face export.
    pub rows_per_shard: usize,
    /// Only trajectories finished after this time, as new shards beside the earlier ones.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSummary {
    pub rows: u64,
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

/// The exported columns: the trajectory table's, with the conversation, tools and patch
/// after the ids (where trainers look first) and the provenance hashes last.
fn columns() -> Vec<Column> {
    let (ids, rest) = TRAJECTORY_COLUMNS.split_at(3);
    let mut columns = ids.to_vec();
    columns.extend([
        Column {
            name: "messages",
            ty: MESSAGES_TYPE,
            doc: "The conversation in OpenAI chat format: role, content, reasoning_content, tool_calls (id, type, function {name, arguments}), tool_call_id.",
        },
        Column {
            name: "tools",
            ty: "VARCHAR",
            doc: "Tool schemas offered to the model (JSON, OpenAI format); `[]` in text mode.",
        },
        Column {
            name: "model_patch",
            ty: "VARCHAR",
            doc: "Final `git diff` of the working tree.",
        },
    ]);
    columns.extend_from_slice(rest);
    columns.extend([
        Column {
            name: "template_hash",
            ty: "VARCHAR",
            doc: "SHA-256 of the prompt templates.",
        },
        Column {
            name: "image_digest",
            ty: "VARCHAR",
            doc: "Digest of the sandbox image.",
        },
    ]);
    columns
}

/// A trajectory's row with what trainers need of the record itself.
#[derive(Serialize)]
struct ExportRow<'a> {
    #[serde(flatten)]
    row: TrajectoryRow,
    messages: Vec<ChatMessage>,
    tools: String,
    model_patch: String,
    template_hash: &'a str,
    image_digest: Option<&'a str>,
}

fn export_row<'a>(
    item: &Item,
    record: &'a TrajectoryRecord,
    a: &Assessment,
    review: Option<&Review>,
    anonymizer: Option<&Anonymizer>,
) -> ExportRow<'a> {
    let clean = |text: &str| match anonymizer {
        Some(an) => an.apply(text),
        None => text.to_owned(),
    };
    let messages = record
        .messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.content = m.content.as_deref().map(clean);
            m.reasoning_content = m.reasoning_content.as_deref().map(clean);
            for call in &mut m.tool_calls {
                call.function.arguments = clean(&call.function.arguments);
            }
            m
        })
        .collect();
    let mut row = item.row.assessed(a, review);
    row.reject_reason = row.reject_reason.as_deref().map(clean);
    ExportRow {
        row,
        messages,
        tools: serde_json::Value::Array(record.tools.clone()).to_string(),
        model_patch: clean(&record.patch),
        template_hash: &record.scaffold.template_hash,
        image_digest: record.image_digest.as_deref(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QualityError + '_ {
    move |source| QualityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the export and returns what it wrote. The selected records are read once, in
/// trajectory-id order (16 reads in flight, checksums verified), and go shard by shard
/// through a scratch JSONL file straight into DuckDB's Parquet writer: memory and scratch
/// space are bounded by one shard, not the campaign. `progress` is called with
/// (rows written, rows selected).
pub async fn export(
    data: &CampaignData,
    assessments: &[Assessment],
    store: &TrajectoryStore,
    options: &ExportOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportSummary, QualityError> {
    if options.rows_per_shard == 0 {
        return Err(QualityError::InvalidOption {
            option: "--rows-per-shard",
            rule: "must be at least 1",
        });
    }
    let anonymizer = options.anonymize.then(Anonymizer::new);
    let selected: Vec<(&Item, &Assessment)> = data
        .items
        .iter()
        .zip(assessments)
        .filter(|(item, a)| {
            options.filter.keeps(item, a)
                && options
                    .since
                    .is_none_or(|since| item.facts.summary.created_at > since)
        })
        .collect();
    let n = selected.len() as u64;
    std::fs::create_dir_all(&options.out).map_err(io(&options.out))?;
    // An export `--since` adds files beside the earlier ones, named by when it ran.
    let when = options
        .since
        .map(|_| chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    let stamp = when.as_ref().map_or(String::new(), |w| format!("{w}-"));
    let targets: Vec<(PathBuf, u64)> = match options.format {
        Format::Parquet => vec![(
            options.out.join(match &when {
                None => format!("{}.parquet", data.name()),
                Some(w) => format!("{}-{w}.parquet", data.name()),
            }),
            n,
        )],
        Format::Hf => {
            let dir = options.out.join("data");
            // A full re-export must not leave shards of an earlier, larger one behind; an
            // export `--since` adds its shards beside the earlier ones.
            if options.since.is_none() && dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let per = options.rows_per_shard as u64;
            let shards = n.div_ceil(per).max(1);
            (0..shards)
                .map(|i| {
                    (
                        dir.join(format!("train-{stamp}{i:05}-of-{shards:05}.parquet")),
                        per.min(n - i * per),
                    )
                })
                .collect()
        }
    };
    let dataset = Dataset::new()?;
    let mut records = futures_util::stream::iter(selected)
        .map(|(item, a)| async move { Ok::<_, QualityError>((item, a, item.record(store).await?)) })
        .buffered(LOAD_CONCURRENCY);
    let (mut files, mut bytes, mut written) = (Vec::new(), 0, 0u64);
    for (path, rows) in targets {
        let jsonl = dataset.scratch_file("shard.jsonl");
        let mut out = JsonlWriter::create(&jsonl)?;
        for _ in 0..rows {
            let Some(next) = records.next().await else {
                break;
            };
            let (item, a, record) = next?;
            let review = data.reviews.get(&item.meta.summary.trajectory_id);
            out.write(&export_row(item, &record, a, review, anonymizer.as_ref()))?;
            written += 1;
            progress(written, n);
        }
        out.finish()?;
        dataset.jsonl_to_parquet(&columns(), &jsonl, &path)?;
        std::fs::remove_file(&jsonl).map_err(io(&jsonl))?;
        bytes += std::fs::metadata(&path).map_err(io(&path))?.len();
        files.push(path);
    }
    if options.format == Format::Hf {
        // The card describes every shard in the folder, earlier exports' included.
        let shards = options.out.join("data/train-*.parquet");
        let rows: u64 = dataset.query_one::<serde_json::Value>(&format!(
            "SELECT count(*)::UBIGINT AS n FROM read_parquet('{}')",
            sql_path(&shards)
        ))?["n"]
            .as_u64()
            .unwrap_or(n);
        let card = options.out.join("README.md");
        std::fs::write(&card, dataset_card(data, assessments, options, rows)).map_err(io(&card))?;
        files.push(card);
    }
    Ok(ExportSummary {
        rows: n,
        files,
        bytes,
    })
}

/// The dataset card: Hugging Face metadata, provenance and schema.
fn dataset_card(
    data: &CampaignData,
    assessments: &[Assessment],
    options: &ExportOptions,
    rows: u64,
) -> String {
    let config = &data.config;
    let scaffolds: BTreeSet<&str> = data
        .items
        .iter()
        .map(|i| i.facts.scaffold_detail.as_str())
        .collect();
    let images: BTreeSet<&str> = data.items.iter().map(|i| i.facts.image.as_str()).collect();
    let funnel = crate::stages::funnel(assessments, data.judged.is_some());
    let mut card = format!(
        "---\npretty_name: \"synthfleet campaign {name}\"\nlicense: other\ntags:\n- synthetic\n- agent-trajectories\n- code\n- synthfleet\ntask_categories:\n- text-generation\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n\n# synthfleet campaign `{name}`\n\nAgent trajectories generated by [synthfleet](https://github.com/synthfleet/synthfleet): an LLM agent worked on each task in a Docker sandbox; every step, its cost and the outcome were recorded, and the final patch was verified by running the task's eval in a fresh sandbox.\n\n- Rows: {rows} (filter `{filter}`{anon})\n- Exported: {now} by synthfleet {version}\n\n## Provenance\n\n- Campaign: `{name}`, {tasks} trajectories committed, budget ${budget:.2}{spent}\n",
        name = config.name,
        filter = options.filter.as_str(),
        anon = if options.anonymize {
            ", anonymised: e-mails, keys, tokens and user paths replaced"
        } else {
            ""
        },
        now = chrono::Utc::now().to_rfc3339(),
        version = env!("CARGO_PKG_VERSION"),
        tasks = data.items.len(),
        budget = config.budget_usd,
        spent = data
            .record
            .as_ref()
            .map(|r| format!(", ${:.4} spent", r.ledger.spent.as_usd()))
            .unwrap_or_default(),
    );
    card += "- Models:\n";
    for m in &config.models {
        card += &format!(
            "  - `{}`: provider `{}`, model `{}`{}\n",
            m.name,
            m.provider,
            m.model_id(),
            m.endpoint
                .as_deref()
                .map(|e| format!(", endpoint {e}"))
                .unwrap_or_default()
        );
    }
    card += "- Scaffolds:\n";
    for s in &scaffolds {
        card += &format!("  - {s}\n");
    }
    card += "- Sandbox images:\n";
    for i in &images {
        card += &format!("  - `{i}`\n");
    }
    card += "- Quality funnel (trajectories surviving each stage):";
    for (stage, n) in &funnel {
        card += &format!(" {stage} {n} →");
    }
    card = card.trim_end_matches(" →").to_owned()
        + "\n\n## Schema\n\n| column | type | description |\n|---|---|---|\n";
    for c in columns() {
        let ty = if c.name == "messages" {
            "list<struct>".to_owned()
        } else {
            c.ty.to_lowercase()
        };
        card += &format!("| `{}` | {ty} | {} |\n", c.name, c.doc);
    }
    card += "\n## Loading\n\n```python\nfrom datasets import load_dataset\nds = load_dataset(\"parquet\", data_files=\"data/train-*.parquet\", split=\"train\")\nprint(ds[0][\"messages\"][0])\n```\n";
    card
}
