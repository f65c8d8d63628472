//! `synthfleet-jobs`: the DuckDB side of synthfleet (quality stages, reports, exports,
//! review). A binary of its own so that workers and Lambdas never link DuckDB;
//! `synthfleet assess|report|export|review` run it.

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use synthfleet_backend::Backend;
use synthfleet_llm::{ModelGuards, ModelPool};
use synthfleet_quality::export::{ExportOptions, Filter, Format};
use synthfleet_quality::review::{self, HumanVerdict, Review};
use synthfleet_quality::stages::{Assessment, Stage};
use synthfleet_quality::{CampaignData, judge, report, stages};
use synthfleet_term::entry::{self, LogArgs};
use synthfleet_term::{BackendArgs, logging, render};

#[derive(Parser)]
#[command(
    name = "synthfleet-jobs",
    version,
    about = "synthfleet's quality jobs on DuckDB: assess, report, export, review."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

/// Which campaign, and where its data lives.
#[derive(Args)]
struct Target {
    /// Campaign name, or its campaign file (whose [storage] gives the local state dir).
    campaign: String,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the quality stages (and the LLM judge, when configured: it spends budget) and
    /// record every trajectory's verdicts.
    Assess {
        #[command(flatten)]
        target: Target,
    },
    /// Report: outcomes, cost, tokens, funnel, diversity, review agreement.
    Report {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Export trajectories as Parquet or a Hugging Face dataset: supervised data, or
    /// preference pairs and RL rows of the verified trajectories.
    Export {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "hf")]
        format: ExportFormat,
        /// Which trajectories [default: accepted for parquet and hf; all (verified) for
        /// pairs and rl]. For pairs it chooses the chosen side: all or accepted.
        #[arg(long, value_enum)]
        filter: Option<ExportFilter>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Replace e-mail addresses, keys, tokens and user names in paths.
        #[arg(long)]
        anonymize: bool,
        /// Rows per Parquet file of a Hugging Face export (written in batches of 500
        /// rows: memory does not grow with it).
        #[arg(long, default_value_t = EXPORT_ROWS_PER_SHARD)]
        rows_per_shard: usize,
        /// Only trajectories finished after this time (RFC 3339, e.g. the previous
        /// export's), written as new shards beside the earlier ones in --out (not with
        /// --format pairs, which pairs each task's trajectories as a whole).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Assess, then publish the report (JSON and the HTML dashboard) and a Hugging Face
    /// export into the campaign's own store: `reports/{campaign}/` and
    /// `exports/{campaign}/` (S3 on AWS). What the finalize function's job task runs.
    Publish {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "accepted")]
        filter: ExportFilter,
        /// Replace e-mail addresses, keys, tokens and user names in paths.
        #[arg(long)]
        anonymize: bool,
    },
    /// Human review of a stratified sample.
    #[command(subcommand)]
    Review(ReviewCommand),
}

#[derive(Subcommand)]
enum ReviewCommand {
    /// Draw a sample stratified by model and outcome, spread over tasks.
    Sample {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 20)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Review the sample's pending trajectories one by one in the terminal.
    Next {
        #[command(flatten)]
        target: Target,
        #[arg(long, env = "USER", default_value = "reviewer")]
        reviewer: String,
    },
    /// Record one verdict (for scripts and other tools).
    Record {
        #[command(flatten)]
        target: Target,
        trajectory_id: String,
        #[arg(long)]
        verdict: HumanVerdict,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, env = "USER", default_value = "reviewer")]
        reviewer: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Html,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// One Parquet file of trajectories.
    Parquet,
    /// A Hugging Face dataset folder of trajectories (data/train-*.parquet, README.md).
    Hf,
    /// Preference pairs (prompt, chosen, rejected) for TRL's DPO and reward trainers: a
    /// resolved and an unresolved trajectory of the same task, as a Hugging Face folder.
    Pairs,
    /// One row per verified trajectory with its reward, group (task and round) and token
    /// counts, for RL trainers, as a Hugging Face folder.
    Rl,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFilter {
    Accepted,
    Resolved,
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log.log_format, None);
    entry::run(async {
        run(cli.command).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Opens the backend and loads the campaign's data, with a progress bar on a terminal.
async fn open(target: &Target) -> anyhow::Result<(Backend, CampaignData)> {
    let path = Path::new(&target.campaign);
    let campaign = if target.campaign.ends_with(".toml") || path.is_file() {
        Some(synthfleet_tasks::load_campaign(path)?)
    } else {
        None
    };
    let name = campaign
        .as_ref()
        .map_or(target.campaign.clone(), |c| c.name().to_owned());
    let backend = Backend::open_existing(&target.backend.config()?, campaign.as_ref()).await?;
    let bar = logging::progress_bar(
        None,
        std::io::stderr().is_terminal(),
        "reading trajectories {bar:30} {pos}/{len}",
    );
    let data = CampaignData::load(backend.store(), &name, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await
    .with_context(|| format!("loading campaign `{name}` ({})", backend.describe()))?;
    bar.finish_and_clear();
    Ok((backend, data))
}

/// Rows per Parquet file of a Hugging Face export, by default.
const EXPORT_ROWS_PER_SHARD: usize = 5_000;

/// Exports with a progress bar on a terminal.
async fn export(
    backend: &Backend,
    data: &CampaignData,
    assessments: &[Assessment],
    options: &ExportOptions,
) -> anyhow::Result<synthfleet_quality::export::ExportSummary> {
    let bar = logging::progress_bar(
        None,
        std::io::stderr().is_terminal(),
        "exporting {bar:30} {pos}/{len}",
    );
    let summary = synthfleet_quality::export::export(
        data,
        assessments,
        backend.store(),
        options,
        &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .await?;
    bar.finish_and_clear();
    Ok(summary)
}

/// Runs the stages and records the verdicts.
async fn assess(backend: &Backend, data: &CampaignData) -> anyhow::Result<Vec<Assessment>> {
    let assessments = data.assess();
    data.publish(backend.store().objects.as_ref(), &assessments)
        .await
        .context("recording the verdicts")?;
    Ok(assessments)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Assess { target } => {
            let (backend, mut data) = open(&target).await?;
            if data.config.quality.judge.is_some() {
                let pool = ModelPool::new(&data.config.models, &ModelGuards::default())
                    .context("the judge's model")?;
                let before = data.assess();
                let judged = judge::run(&mut data, &before, backend.store(), &pool).await?;
                println!(
                    "judge: {} judged ({} pass), {} malformed replies, {} left for lack of budget, ${:.4}",
                    judged.judged,
                    judged.passed,
                    judged.malformed,
                    judged.out_of_budget,
                    judged.cost_usd
                );
            }
            let assessments = assess(&backend, &data).await?;
            println!("campaign {}: quality funnel", data.name());
            for (stage, n) in stages::funnel(&assessments, data.judged.is_some()) {
                println!("  {stage:<11} {n}");
            }
        }
        Command::Report {
            target,
            format,
            out,
        } => {
            let (backend, data) = open(&target).await?;
            let assessments = assess(&backend, &data).await?;
            let report = report::build(&data, &assessments)?;
            let text = match format {
                ReportFormat::Text => report.to_text(),
                ReportFormat::Json => report.to_json(),
                ReportFormat::Html => report.to_html()?,
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
        }
        Command::Export {
            target,
            format,
            filter,
            out,
            anonymize,
            rows_per_shard,
            since,
        } => {
            let (backend, data) = open(&target).await?;
            let assessments = assess(&backend, &data).await?;
            let format = match format {
                ExportFormat::Parquet => Format::Parquet,
                ExportFormat::Hf => Format::Hf,
                ExportFormat::Pairs => Format::Pairs,
                ExportFormat::Rl => Format::Rl,
            };
            let options = ExportOptions {
                format,
                filter: filter.map_or(format.default_filter(), Filter::from),
                out,
                anonymize,
                rows_per_shard,
                since,
            };
            let summary = export(&backend, &data, &assessments, &options).await?;
            println!(
                "exported {} rows of campaign {} ({} bytes):",
                summary.rows,
                data.name(),
                summary.bytes
            );
            for file in summary.files {
                println!("  {}", file.display());
            }
            if summary.rows == 0 && options.format == Format::Pairs {
                eprintln!(
                    "note: no task has both a resolved and an unresolved verified trajectory (on one scaffold) to pair; `synthfleet report {}` shows the outcomes by task",
                    target.campaign
                );
            } else if summary.rows == 0 {
                eprintln!(
                    "note: no trajectory matched --filter {}; `synthfleet report {}` shows the funnel and why",
                    options.filter.as_str(),
                    target.campaign
                );
            }
        }
        Command::Publish {
            target,
            filter,
            anonymize,
        } => {
            let (backend, data) = open(&target).await?;
            let assessments = assess(&backend, &data).await?;
            let report = report::build(&data, &assessments)?;
            let objects = backend.store().objects.as_ref();
            let name = data.name().to_owned();
            for (file, text) in [
                ("report.json", report.to_json()),
                ("dashboard.html", report.to_html()?),
            ] {
                let key = format!("reports/{name}/{file}");
                objects
                    .put(&key, text.into_bytes())
                    .await
                    .with_context(|| format!("publishing {key}"))?;
                println!("published {key}");
            }
            let scratch = tempfile::tempdir().context("creating a scratch directory")?;
            let options = ExportOptions {
                format: Format::Hf,
                filter: filter.into(),
                out: scratch.path().to_owned(),
                anonymize,
                rows_per_shard: EXPORT_ROWS_PER_SHARD,
                since: None,
            };
            let summary = export(&backend, &data, &assessments, &options).await?;
            for file in &summary.files {
                let relative = file.strip_prefix(scratch.path()).unwrap_or(file);
                let key = format!("exports/{name}/{}", relative.display());
                let bytes =
                    std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                objects
                    .put(&key, bytes)
                    .await
                    .with_context(|| format!("publishing {key}"))?;
                println!("published {key}");
            }
            println!(
                "campaign {name}: report and {} exported rows published ({})",
                summary.rows,
                backend.describe()
            );
        }
        Command::Review(command) => review_command(command).await?,
    }
    Ok(())
}

impl From<ExportFilter> for Filter {
    fn from(filter: ExportFilter) -> Filter {
        match filter {
            ExportFilter::Accepted => Filter::Accepted,
            ExportFilter::Resolved => Filter::Resolved,
            ExportFilter::All => Filter::All,
        }
    }
}

async fn review_command(command: ReviewCommand) -> anyhow::Result<()> {
    match command {
        ReviewCommand::Sample { target, size, seed } => {
            let (backend, data) = open(&target).await?;
            let assessments = assess(&backend, &data).await?;
            let rows: Vec<_> = data.rows(&assessments).collect();
            let sample = review::draw(data.name(), &rows, size, seed);
            review::save_sample(backend.store().objects.as_ref(), &sample).await?;
            println!(
                "sampled {} of {} trajectories of campaign {} (seed {seed}):",
                sample.trajectory_ids.len(),
                rows.len(),
                data.name()
            );
            for s in &sample.strata {
                println!(
                    "  {:<24} {:<10} {} of {}",
                    s.model, s.outcome, s.drawn, s.population
                );
            }
            println!(
                "review them with `synthfleet review next {}`",
                target.campaign
            );
        }
        ReviewCommand::Next { target, reviewer } => {
            let (backend, data) = open(&target).await?;
            let sample = data.sample.as_ref().with_context(|| {
                format!(
                    "campaign {} has no review sample yet: draw one with `synthfleet review sample {}`",
                    data.name(),
                    target.campaign
                )
            })?;
            let assessments = data.assess();
            let pending: Vec<&String> = sample
                .trajectory_ids
                .iter()
                .filter(|id| !data.reviews.contains_key(*id))
                .collect();
            println!(
                "{} of {} sampled trajectories to review",
                pending.len(),
                sample.trajectory_ids.len()
            );
            let stdin = std::io::stdin();
            let mut lines = stdin.lock().lines();
            for (i, id) in pending.iter().enumerate() {
                let Some(at) = data.position(id) else {
                    println!("{id}: no longer stored (expired?); skipped");
                    continue;
                };
                let record = data.items[at].record(backend.store()).await?;
                println!("\n===== {} of {} =====", i + 1, pending.len());
                print!("{}", render::render(&record, false));
                println!(
                    "patch:\n{}",
                    if record.patch.is_empty() {
                        "(none)"
                    } else {
                        &record.patch
                    }
                );
                println!("automatic verdicts:");
                for stage in Stage::ALL {
                    let v = assessments[at].verdict(stage);
                    println!(
                        "  {:<11} {}{}",
                        stage.as_str(),
                        v.label(),
                        v.reason().map(|r| format!(": {r}")).unwrap_or_default()
                    );
                }
                print!("verdict? [a]ccept / [r]eject (then an optional note), [s]kip, [q]uit: ");
                std::io::stdout().flush()?;
                let Some(line) = lines.next().transpose()? else {
                    break;
                };
                let line = line.trim();
                let (word, note) = line.split_once(' ').unwrap_or((line, ""));
                let verdict = match word {
                    "q" | "quit" => break,
                    "s" | "skip" | "" => continue,
                    other => match other.parse::<HumanVerdict>() {
                        Ok(v) => v,
                        Err(e) => {
                            println!("{e}; skipped");
                            continue;
                        }
                    },
                };
                let note = (!note.trim().is_empty()).then(|| note.trim().to_owned());
                record_review(
                    &backend,
                    &data,
                    &record.trajectory_id,
                    verdict,
                    &reviewer,
                    note,
                )
                .await?;
                println!("recorded: {}", verdict.as_str());
            }
        }
        ReviewCommand::Record {
            target,
            trajectory_id,
            verdict,
            note,
            reviewer,
        } => {
            let (backend, data) = open(&target).await?;
            data.position(&trajectory_id).with_context(|| {
                format!("no trajectory {trajectory_id} in campaign {}", data.name())
            })?;
            record_review(&backend, &data, &trajectory_id, verdict, &reviewer, note).await?;
            println!("recorded {} for {trajectory_id}", verdict.as_str());
        }
    }
    Ok(())
}

/// Stores one reviewer's verdict (the latest one counts).
async fn record_review(
    backend: &Backend,
    data: &CampaignData,
    trajectory_id: &str,
    verdict: HumanVerdict,
    reviewer: &str,
    note: Option<String>,
) -> anyhow::Result<()> {
    let review = Review {
        trajectory_id: trajectory_id.to_owned(),
        verdict,
        reviewer: reviewer.to_owned(),
        note,
        at: chrono::Utc::now(),
    };
    review::save_review(backend.store().objects.as_ref(), data.name(), &review)
        .await
        .with_context(|| format!("storing the verdict on {trajectory_id}"))
}
