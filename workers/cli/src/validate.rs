//! `synthfleet validate`: every check `run` would make before starting, and no more; with
//! `--gold`, each task's reference patch and the empty patch through the real verification.

use anyhow::Context;
use clap::Args;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use synthfleet_agent::{GoldEvent, validate_gold};
use synthfleet_backend::Backend;
use synthfleet_backend::local;
use synthfleet_core::campaign::Campaign;
use synthfleet_core::gold::{self, Problem};
use synthfleet_core::ports::SandboxProvider;
use synthfleet_llm::{ModelGuards, ModelPool};
use synthfleet_term::BackendArgs;
use synthfleet_term::logging;

#[derive(Args)]
pub struct ValidateArgs {
    /// The campaign file (TOML).
    campaign: PathBuf,
    /// Also run every task's reference patch and the empty patch through verification (in
    /// Docker) and store the verdicts, so `skip_broken_tasks = true` can leave broken tasks
    /// out.
    #[arg(long)]
    gold: bool,
    /// Sandboxes at once for --gold (one per run).
    #[arg(short = 'j', long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// With --gold: run each patch N times (every run in a fresh sandbox) and mark a task
    /// flaky, so broken, when a FAIL_TO_PASS or PASS_TO_PASS test changes outcome between
    /// runs of the same patch (for a task graded by its eval script only, `resolved`).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "gold", value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let path = &args.campaign;
    let campaign = synthfleet_tasks::load_campaign(path)?;
    let templates = synthfleet_tasks::load_templates(&campaign)
        .context("loading the scaffold's prompt templates")?;
    ModelPool::new(&campaign.config.models, &ModelGuards::default())
        .context("checking the model pool")?;
    let images: std::collections::BTreeSet<&str> =
        campaign.tasks.iter().map(|t| t.image.as_str()).collect();
    let unverifiable = campaign.tasks.iter().filter(|t| !t.is_verifiable()).count();
    let mut harnesses: BTreeMap<&str, usize> = BTreeMap::new();
    for task in &campaign.tasks {
        let name = task.tests.as_ref().map_or(
            if task.eval.is_some() {
                "eval script"
            } else {
                "none"
            },
            |t| t.harness.as_str(),
        );
        *harnesses.entry(name).or_default() += 1;
    }
    println!(
        "{}: valid. {} tasks x {}, {} models, budget ${}, templates {}",
        path.display(),
        campaign.tasks.len(),
        campaign.config.describe_sampling(campaign.tasks.len()),
        campaign.config.models.len(),
        campaign.config.budget_usd,
        templates
            .hash(&campaign.config.scaffold.kind)
            .get(..12)
            .unwrap_or_default()
    );
    println!(
        "verification: {}",
        harnesses
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "images: {}",
        images.iter().copied().collect::<Vec<_>>().join(", ")
    );
    if unverifiable > 0 {
        println!(
            "warning: {unverifiable} tasks have no eval script; their trajectories cannot be verified"
        );
    }
    if !args.gold {
        return Ok(ExitCode::SUCCESS);
    }
    gold_validation(&args, &campaign).await
}

async fn gold_validation(args: &ValidateArgs, campaign: &Campaign) -> anyhow::Result<ExitCode> {
    let backend = Backend::open(&args.backend.config()?, Some(campaign)).await?;
    let worker_id = match &backend {
        Backend::Local { dir, .. } => format!("{}-gold", local::worker_id(dir)),
        Backend::Aws { .. } => format!("gold-{}", ulid::Ulid::new()),
    };
    let sandboxes = crate::run::ready_sandboxes(campaign, &worker_id).await?;
    let bar = logging::progress_bar(
        Some(campaign.tasks.len() as u64),
        std::io::stderr().is_terminal(),
        "{spinner} gold [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    );
    let events = |event: GoldEvent| match event {
        GoldEvent::Checked { instance_id, .. } => {
            bar.inc(1);
            bar.set_message(instance_id);
        }
    };
    let report = validate_gold(
        campaign,
        &sandboxes,
        usize::from(args.concurrency),
        args.repeat,
        &events,
    )
    .await;
    bar.finish_and_clear();
    sandboxes.reap().await?;
    gold::put_report(backend.store().objects.as_ref(), &report)
        .await
        .context("storing the gold report")?;

    let broken = report.broken();
    let flaky = report.flaky();
    let mut errors = 0;
    for task in &report.tasks {
        match &task.problem {
            None => println!("ok       {}", task.instance_id),
            Some(
                p @ (Problem::GoldFails { .. } | Problem::EmptyPasses | Problem::Flaky { .. }),
            ) => {
                println!("BROKEN   {}: {p}", task.instance_id)
            }
            Some(p @ Problem::Unchecked { .. }) => println!("unchecked {}: {p}", task.instance_id),
            Some(p @ Problem::Error { .. }) => {
                errors += 1;
                println!("ERROR    {}: {p}", task.instance_id)
            }
        }
    }
    println!(
        "gold validation of {}: {} tasks, {} sound, {} broken, {} errors{}; report stored at {} ({})",
        campaign.name(),
        report.tasks.len(),
        report.tasks.iter().filter(|t| t.problem.is_none()).count(),
        broken.len(),
        errors,
        if args.repeat > 1 {
            format!(
                "; {} flaky over {} runs of each patch",
                flaky.len(),
                args.repeat
            )
        } else {
            String::new()
        },
        gold::report_key(campaign.name()),
        backend.describe()
    );
    if !broken.is_empty() {
        println!(
            "{}",
            if campaign.config.skip_broken_tasks {
                "the campaign sets skip_broken_tasks: run and submit leave the broken tasks out"
            } else {
                "set skip_broken_tasks = true in the campaign to leave the broken tasks out"
            }
        );
    }
    Ok(if broken.is_empty() && errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
