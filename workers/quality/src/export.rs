//! Exports: a campaign's trajectories as Parquet or a Hugging Face dataset
//! (`data/train-*.parquet` and a dataset card), as supervised, preference or RL data.
//!
//! * `parquet` / `hf`: one row per trajectory. Column names follow the public trajectory
//!   datasets trainers already load (SWE-smith, SWE-rebench): `instance_id`,
//!   `trajectory_id`, `model`, `messages` (OpenAI chat format, a list of structs:
//!   SFT-ready), `tools`, `model_patch`, `exit_status`, `resolved`, plus ours and the
//!   quality-stage verdicts. Accepted trajectories by default.
//! * `pairs` ([`pairs`]): preference pairs in TRL's conversational format — `prompt`,
//!   `chosen`, `rejected` — a resolved and an unresolved trajectory of the same task,
//!   chosen by a fixed rule.
//! * `rl` ([`rl`]): one row per verified trajectory with its reward, its group (task and
//!   round) and its token counts.
//!
//! Every row goes through [`export_row`] (the anonymisation, the verdicts), and every
//! file is written straight from Rust by arrow-rs's Parquet writer ([`writer`]).

mod pairs;
mod rl;
#[cfg(test)]
mod tests;
mod writer;

use crate::anonymize::Anonymizer;
use crate::dataset::{Column, ColumnType, TRAJECTORY_COLUMNS, col};
use crate::review::Review;
use crate::stages::Assessment;
use crate::{CampaignData, Item, LOAD_CONCURRENCY, QualityError, TrajectoryRow, load_record};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use synthfleet_core::codec::Stored;
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::trajectory::ChatMessage;
use writer::{RowWriter, Target};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Quality(#[from] QualityError),
    #[error("writing the Parquet file {}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A row field of another type than its column's: a bug of the row's type.
    #[error("turning export rows into Arrow columns")]
    Rows {
        #[source]
        source: serde_arrow::Error,
    },
    /// A row field without a column: a bug of the row's type.
    #[error(
        "the export's rows have a field `{field}` that no column holds (a bug of synthfleet: please report it)"
    )]
    Undeclared { field: String },
    #[error("encoding row group {index} of export file {file} as Parquet")]
    Encode {
        file: usize,
        index: usize,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("a background task of the export failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("the Parquet writer stopped before the export finished")]
    WriterStopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One Parquet file of trajectories.
    Parquet,
    /// A Hugging Face dataset folder of trajectories.
    Hf,
    /// Preference pairs for TRL's DPO and reward trainers, as a Hugging Face dataset folder.
    Pairs,
    /// One row per verified trajectory with its reward, group and token counts, for RL
    /// trainers, as a Hugging Face dataset folder.
    Rl,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Hf => "hf",
            Format::Pairs => "pairs",
            Format::Rl => "rl",
        }
    }

    /// The filter when none is given: accepted trajectories for supervised data; every
    /// verified one for preference and RL data, which learn from the failures too.
    pub fn default_filter(self) -> Filter {
        match self {
            Format::Parquet | Format::Hf => Filter::Accepted,
            Format::Pairs | Format::Rl => Filter::All,
        }
    }

    fn columns(self) -> Vec<Column> {
        match self {
            Format::Parquet | Format::Hf => trajectory_columns(),
            Format::Pairs => pairs::columns(),
            Format::Rl => rl::columns(),
        }
    }

    /// Only trajectories with a verification (so a reward) are rows: those never verified
    /// (an infrastructure error, the budget ran out) say nothing about the policy.
    fn verified_only(self) -> bool {
        matches!(self, Format::Pairs | Format::Rl)
    }
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
    /// Which trajectories; for `pairs`, which may be the chosen side (see [`pairs`]).
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

/// The exported columns of a trajectory: the trajectory table's, with the conversation,
/// tools and patch after the ids (where trainers look first) and the provenance hashes
/// last.
fn trajectory_columns() -> Vec<Column> {
    let (ids, rest) = TRAJECTORY_COLUMNS.split_at(3);
    let mut columns = ids.to_vec();
    columns.extend([
        MESSAGES,
        TOOLS,
        col(
            "model_patch",
            ColumnType::Varchar,
            "Final `git diff` of the working tree.",
        ),
    ]);
    columns.extend_from_slice(rest);
    columns.extend([
        col(
            "template_hash",
            ColumnType::Varchar,
            "SHA-256 of the prompt templates.",
        ),
        col(
            "image_digest",
            ColumnType::Varchar,
            "Digest of the sandbox image.",
        ),
    ]);
    columns
}

const MESSAGES: Column = col(
    "messages",
    ColumnType::Messages,
    "The conversation in OpenAI chat format: role, content, reasoning_content, tool_calls (id, type, function {name, arguments}), tool_call_id.",
);

const TOOLS: Column = col(
    "tools",
    ColumnType::Varchar,
    "Tool schemas offered to the model (JSON, OpenAI format); `[]` in text mode.",
);

/// What an export reads of a stored record ([`TrajectoryStore::load_as`]): the
/// conversation and what the rows say of it. The steps are read for their token counts
/// only: their observations (about half of a record's bytes, repeated in the tool
/// messages) are skipped by the parser, never built.
#[derive(Debug, Deserialize)]
pub struct Exported {
    schema_version: u32,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Vec<serde_json::Value>,
    patch: String,
    scaffold: ExportedScaffold,
    image_digest: Option<String>,
    steps: Vec<rl::StepTokens>,
    totals: ExportedTotals,
}

#[derive(Debug, Deserialize)]
struct ExportedScaffold {
    template_hash: String,
}

#[derive(Debug, Deserialize)]
struct ExportedTotals {
    llm_calls: u32,
}

impl Stored for Exported {
    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

/// A trajectory's row with what trainers need of the record itself.
#[derive(Serialize)]
struct ExportRow {
    #[serde(flatten)]
    row: TrajectoryRow,
    messages: Vec<ChatMessage>,
    tools: String,
    model_patch: String,
    template_hash: String,
    image_digest: Option<String>,
}

/// A row of any format, written as the row itself.
#[derive(Serialize)]
#[serde(untagged)]
enum Row {
    Trajectory(ExportRow),
    Rl(rl::RlRow),
    Pair(pairs::PairRow),
}

/// The row of a trajectory, every format's starting point: its verdicts (the stages' and
/// the review's) and its record's text, anonymised when asked.
fn export_row(
    item: &Item,
    record: Exported,
    a: &Assessment,
    review: Option<&Review>,
    anonymizer: Option<&Anonymizer>,
) -> ExportRow {
    let clean = |text: String| match anonymizer {
        Some(an) => an.apply(&text),
        None => text,
    };
    let messages = record
        .messages
        .into_iter()
        .map(|mut m| {
            m.content = m.content.map(clean);
            m.reasoning_content = m.reasoning_content.map(clean);
            for call in &mut m.tool_calls {
                call.function.arguments = clean(std::mem::take(&mut call.function.arguments));
            }
            m
        })
        .collect();
    let mut row = item.row.assessed(a, review);
    row.reject_reason = row.reject_reason.map(clean);
    ExportRow {
        row,
        messages,
        tools: serde_json::Value::Array(record.tools).to_string(),
        model_patch: clean(record.patch),
        template_hash: record.scaffold.template_hash,
        image_digest: record.image_digest,
    }
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> QualityError + '_ {
    move |source| QualityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads and verifies a record on a runtime thread of its own (checksum, zstd, JSON: the
/// costly part of an export), so that records decode on every core.
fn load(
    store: &TrajectoryStore,
    item: &Item,
) -> impl Future<Output = Result<Exported, ExportError>> + 'static {
    let (store, meta) = (store.clone(), item.meta.clone());
    let loading = tokio::spawn(async move { load_record(&store, &meta).await });
    async move { Ok(loading.await.map_err(ExportError::Task)??) }
}

/// Options that cannot go together, with what to do instead.
fn check(options: &ExportOptions) -> Result<(), QualityError> {
    let invalid = |option, rule| Err(QualityError::InvalidOption { option, rule });
    match options {
        ExportOptions {
            rows_per_shard: 0, ..
        } => invalid("--rows-per-shard", "must be at least 1"),
        ExportOptions {
            format: Format::Pairs,
            filter: Filter::Resolved,
            ..
        } => invalid(
            "--filter resolved",
            "leaves --format pairs no rejected side: use all (the default) or accepted",
        ),
        ExportOptions {
            format: Format::Pairs,
            since: Some(_),
            ..
        } => invalid(
            "--since",
            "does not apply to --format pairs: a task's pairs are drawn from all its trajectories; export the pairs again instead",
        ),
        _ => Ok(()),
    }
}

/// Writes the export and returns what it wrote. The selected records are read once, in
/// trajectory-id order (16 reads in flight, checksums verified, decoded in parallel),
/// turned into rows and written as Parquet batch by batch: memory is bounded by a few
/// batches, not the campaign. `progress` is called with (rows written, rows to write).
pub async fn export(
    data: &CampaignData,
    assessments: &[Assessment],
    store: &TrajectoryStore,
    options: &ExportOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportSummary, ExportError> {
    check(options)?;
    let format = options.format;
    let anonymizer = options.anonymize.then(Anonymizer::new);
    let selected: Vec<(&Item, &Assessment)> = data
        .items
        .iter()
        .zip(assessments)
        .filter(|(item, a)| {
            (!format.verified_only() || item.meta.resolved.is_some())
                // Pairs apply the filter to their chosen side only.
                && (format == Format::Pairs || options.filter.keeps(item, a))
                && options
                    .since
                    .is_none_or(|since| item.facts.summary.created_at > since)
        })
        .collect();
    std::fs::create_dir_all(&options.out).map_err(io(&options.out))?;
    // An export `--since` adds files beside the earlier ones, named by when it ran.
    let when = options
        .since
        .map(|_| chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    let target = match format {
        Format::Parquet => Target::File(options.out.join(match &when {
            None => format!("{}.parquet", data.name()),
            Some(w) => format!("{}-{w}.parquet", data.name()),
        })),
        Format::Hf | Format::Pairs | Format::Rl => {
            let dir = options.out.join("data");
            // A full re-export must not leave shards of an earlier, larger one behind; an
            // export `--since` adds its shards beside the earlier ones.
            if options.since.is_none() && dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            Target::Shards {
                dir,
                stamp: when.as_ref().map_or(String::new(), |w| format!("{w}-")),
                rows_per_shard: options.rows_per_shard as u64,
            }
        }
    };
    let mut out = RowWriter::create(&format.columns(), target)?;
    let row = |item: &Item, a: &Assessment, record: Exported| {
        let review = data.reviews.get(&item.meta.summary.trajectory_id);
        export_row(item, record, a, review, anonymizer.as_ref())
    };
    let mut written = 0;
    if format == Format::Pairs {
        let plan = pairs::plan(&selected, options.filter);
        let n = plan.len() as u64;
        let mut loaded = futures_util::stream::iter(&plan)
            .map(|pair| async move {
                let (chosen, rejected) = futures_util::try_join!(
                    load(store, pair.chosen.0),
                    load(store, pair.rejected.0)
                )?;
                Ok::<_, ExportError>((pair, chosen, rejected))
            })
            .buffered(LOAD_CONCURRENCY / 2);
        while let Some(next) = loaded.next().await {
            let (pair, chosen, rejected) = next?;
            let (c, r) = (pair.chosen, pair.rejected);
            out.push(Row::Pair(pairs::PairRow::of(
                row(c.0, c.1, chosen),
                row(r.0, r.1, rejected),
            )))
            .await?;
            written += 1;
            progress(written, n);
        }
    } else {
        let n = selected.len() as u64;
        let mut loaded =
            futures_util::stream::iter(&selected)
                .map(|&(item, a)| async move {
                    Ok::<_, ExportError>((item, a, load(store, item).await?))
                })
                .buffered(LOAD_CONCURRENCY);
        while let Some(next) = loaded.next().await {
            let (item, a, record) = next?;
            if format == Format::Rl {
                let tokens = rl::Tokens::of(&record);
                out.push(Row::Rl(rl::RlRow::of(
                    &data.config,
                    tokens,
                    row(item, a, record),
                )))
                .await?;
            } else {
                out.push(Row::Trajectory(row(item, a, record))).await?;
            }
            written += 1;
            progress(written, n);
        }
    }
    let (mut files, rows) = out.finish().await?;
    let mut bytes = 0;
    for file in &files {
        bytes += std::fs::metadata(file).map_err(io(file))?.len();
    }
    if format != Format::Parquet {
        // The card describes every shard in the folder, earlier exports' included.
        let all = writer::count_rows(&options.out.join("data"))?;
        let card = options.out.join("README.md");
        std::fs::write(&card, dataset_card(data, assessments, options, all)).map_err(io(&card))?;
        files.push(card);
    }
    Ok(ExportSummary { rows, files, bytes })
}

/// The dataset card: Hugging Face metadata, provenance, what a row is, and the schema.
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
    let (tags, category) = match options.format {
        Format::Parquet | Format::Hf => ("", "text-generation"),
        Format::Pairs => ("- dpo\n- preference\n", "text-generation"),
        Format::Rl => ("- reinforcement-learning\n", "reinforcement-learning"),
    };
    let mut card = format!(
        "---\npretty_name: \"synthfleet campaign {name}\"\nlicense: other\ntags:\n- synthetic\n- agent-trajectories\n- code\n- synthfleet\n{tags}task_categories:\n- {category}\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n\n# synthfleet campaign `{name}`\n\nAgent trajectories generated by [synthfleet](https://github.com/synthfleet/synthfleet): an LLM agent worked on each task in a Docker sandbox; every step, its cost and the outcome were recorded, and the final patch was verified by running the task's eval in a fresh sandbox.\n\n- Rows: {rows} ({what}, filter `{filter}`{anon})\n- Exported: {now} by synthfleet {version}\n\n{about}## Provenance\n\n- Campaign: `{name}`, {tasks} trajectories committed, budget ${budget:.2}{spent}\n",
        name = config.name,
        what = match options.format {
            Format::Parquet | Format::Hf => "trajectories",
            Format::Pairs => "preference pairs",
            Format::Rl => "verified trajectories for RL",
        },
        filter = options.filter.as_str(),
        anon = if options.anonymize {
            ", anonymised: e-mails, keys, tokens and user paths replaced"
        } else {
            ""
        },
        now = chrono::Utc::now().to_rfc3339(),
        version = env!("CARGO_PKG_VERSION"),
        about = match options.format {
            Format::Parquet | Format::Hf => String::new(),
            Format::Pairs => pairs::ABOUT.to_owned() + "\n",
            Format::Rl => rl::ABOUT.to_owned() + "\n",
        },
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
    for c in options.format.columns() {
        card += &format!("| `{}` | {} | {} |\n", c.name, c.ty.card(), c.doc);
    }
    let first = match options.format {
        Format::Parquet | Format::Hf | Format::Rl => "messages",
        Format::Pairs => "chosen",
    };
    card += &format!(
        "\n## Loading\n\n```python\nfrom datasets import load_dataset\nds = load_dataset(\"parquet\", data_files=\"data/train-*.parquet\", split=\"train\")\nprint(ds[0][\"{first}\"][0])\n```\n"
    );
    card
}
