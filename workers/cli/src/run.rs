//! `synthfleet run`: a whole campaign on this machine.

use anyhow::Context;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthfleet_agent::{Rollouts, SingleCampaign, Worker, WorkerConfig, WorkerEvent};
use synthfleet_backend::local::{self, Local};
use synthfleet_core::campaign::Campaign;
use synthfleet_core::lifecycle::{self, Finish};
use synthfleet_core::liveness::{self, Reclaim};
use synthfleet_core::ports::{Queue, SandboxProvider};
use synthfleet_core::sampling::{RoundDecision, Verdict};
use synthfleet_llm::{ModelGuards, ModelPool, Wallet};
use synthfleet_sandbox::DockerSandboxes;
use synthfleet_term::logging::{self, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

#[derive(Args)]
pub struct RunArgs {
    /// The campaign file (TOML).
    campaign: PathBuf,
    /// Rollouts to run at once.
    #[arg(short = 'j', long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// State directory (queue, metadata, trajectories); default: the campaign's [storage] dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// First delay before a sample that hit an infrastructure failure is retried, in seconds.
    #[arg(long, default_value_t = 10.0)]
    retry_backoff_s: f64,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    host: crate::worker::HostArgs,
}

/// Docker reachable, the campaign's container runtime installed and every task image
/// present: checked before any sample is taken, so a run stops at once with what to do.
pub async fn ready_sandboxes(
    campaign: &Campaign,
    worker_id: &str,
) -> anyhow::Result<DockerSandboxes> {
    let sandboxes = DockerSandboxes::connect(worker_id)?;
    sandboxes.ping().await?;
    sandboxes
        .check_runtime(campaign.config.sandbox.runtime.as_deref())
        .await?;
    let images: std::collections::BTreeSet<&str> =
        campaign.tasks.iter().map(|t| t.image.as_str()).collect();
    let missing = sandboxes.missing_images(images).await?;
    if !missing.is_empty() {
        anyhow::bail!(
            "task images not available locally: {}\nbuild them (the quick start's: examples/quickstart/build-image.sh), `docker pull` or load them (docs/FORMATS.md, \"Images\"); synthfleet never pulls on its own",
            missing.join(", ")
        );
    }
    Ok(sandboxes)
}

pub async fn run(args: RunArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let campaign = Arc::new(synthfleet_tasks::load_campaign(&args.campaign)?);
    let dir = local::state_dir(&campaign, args.state_dir.as_deref());
    let worker_id = local::worker_id(&dir);

    let templates = synthfleet_tasks::load_templates(&campaign)
        .context("loading the scaffold's prompt templates")?;
    let guards = ModelGuards::default();
    let pool =
        ModelPool::new(&campaign.config.models, &guards).context("setting up the model pool")?;
    let sandboxes = ready_sandboxes(&campaign, &worker_id).await?;
    // Only now, with everything checked, is any state created.
    let local = Local::open(&dir)?;
    let queue = Arc::new(local.queue(campaign.name()));
    let report = synthfleet_backend::submit(&campaign, queue.as_ref(), &local.store).await?;
    let total = report.total;
    if let Some(record) = local.store.metadata.campaign(campaign.name()).await?
        && !record.state.accepts_work()
    {
        // Nothing is dequeued for a campaign that accepts no work.
        println!(
            "campaign {} is {}{}\nraise budget_usd (or resume the campaign) and run again to finish",
            campaign.name(),
            record.state.as_str(),
            record
                .state_reason
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::from(2));
    }

    let show_bar = !args.no_progress && std::io::stderr().is_terminal();
    let bar = logging::progress_bar(
        Some(total),
        show_bar,
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    );
    logging::init(log_format, show_bar.then_some(&bar));
    let reaped = sandboxes.reap().await?;
    let recovered = queue.recover_in_flight().await?;
    // This process holds the state directory exclusively: every lease left in it belongs to
    // a run that died mid-call.
    let metadata = synthfleet_local::LocalMetadata::new(&local.state);
    for lease in liveness::reclaim_leases(&metadata, Reclaim::All).await? {
        eprintln!(
            "campaign {}: {} was held in a budget slice by a run that died; booked as spent (the provider may have billed it)",
            lease.campaign, lease.amount
        );
    }
    for repaired in liveness::audit_ledgers(&metadata).await? {
        eprintln!(
            "campaign {}: the ledger reserved {} where its slices hold {}; repaired (the difference is booked as spent)",
            repaired.campaign, repaired.found.reserved, repaired.found.held
        );
    }
    let tasks = campaign.tasks.len() - report.excluded.len();
    eprintln!(
        "campaign {}: {tasks} tasks x {} = {total}; {} enqueued now, {} already done, {} already queued; state in {}{}",
        campaign.name(),
        campaign.config.describe_sampling(tasks),
        report.enqueued,
        report.already_done,
        report.already_queued,
        dir.display(),
        if reaped > 0 {
            format!("; removed {reaped} leftover sandboxes")
        } else {
            String::new()
        }
    );
    if !report.excluded.is_empty() {
        eprintln!(
            "left out {} task(s) that gold validation found broken: {}",
            report.excluded.len(),
            report.excluded.join(", ")
        );
    }
    if recovered > 0 {
        eprintln!(
            "{recovered} tasks were in flight when an earlier run stopped; they run again now"
        );
    }
    let already = local
        .store
        .metadata
        .campaign(campaign.name())
        .await?
        .map(|c| c.finished())
        .unwrap_or(0);
    bar.set_position(already);

    let warm = args.host.pool(sandboxes.clone(), args.concurrency);
    let wallet = Arc::new(Wallet::new(local.store.metadata.clone(), &worker_id));
    let rollouts = Arc::new(Rollouts {
        campaign: campaign.clone(),
        pool: Arc::new(pool),
        sandboxes: Arc::new(warm.clone()),
        store: local.store.clone(),
        templates: Arc::new(templates),
        worker_id: worker_id.clone(),
        wallet: wallet.clone(),
        secrets: Rollouts::secrets_of(&campaign),
    });
    let config = WorkerConfig {
        worker_id: worker_id.clone(),
        concurrency: usize::from(args.concurrency),
        max_attempts: local::MAX_ATTEMPTS,
        max_receives: local::MAX_RECEIVES,
        retry_backoff: Duration::try_from_secs_f64(args.retry_backoff_s.max(0.0))
            .unwrap_or(Duration::from_secs(10)),
        ..WorkerConfig::default()
    };
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ninterrupted: stopping rollouts, releasing their tasks and removing sandboxes (Ctrl-C again to force)"
                );
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let events = {
        let bar = bar.clone();
        Arc::new(move |event: WorkerEvent| match event {
            WorkerEvent::Started { key, attempt } => bar.set_message(format!(
                "{}#{} started (attempt {attempt})",
                key.instance_id, key.sample_index
            )),
            WorkerEvent::Step { key, step, action } => {
                let action = action.unwrap_or_default();
                let short: String = action
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(40)
                    .collect();
                bar.set_message(format!(
                    "{}#{} step {}: {short}",
                    key.instance_id,
                    key.sample_index,
                    step + 1
                ));
            }
            WorkerEvent::Finished {
                key,
                exit_status,
                resolved,
                ..
            } => {
                bar.inc(1);
                let verdict = match resolved {
                    Some(true) => "resolved",
                    Some(false) => "not resolved",
                    None => "unverified",
                };
                bar.println(format!(
                    "  {}#{}: {exit_status}, {verdict}",
                    key.instance_id, key.sample_index
                ));
            }
            WorkerEvent::DeadLettered { key, reason } => {
                if key.is_some() {
                    bar.inc(1);
                }
                let name = key
                    .map(|k| format!("{}#{}", k.instance_id, k.sample_index))
                    .unwrap_or("message".into());
                bar.println(format!("  {name}: dead-lettered: {reason}"));
            }
            WorkerEvent::Retrying {
                key,
                attempt,
                error,
            } => bar.println(format!(
                "  {}#{}: attempt {attempt} failed, will retry: {error}",
                key.instance_id, key.sample_index
            )),
            WorkerEvent::Duplicate { .. } => bar.inc(1),
            WorkerEvent::CampaignStopped { reason } => bar.println(format!("  stopping: {reason}")),
            WorkerEvent::RoundDecided { decision } => {
                let RoundDecision {
                    round,
                    verdict,
                    resolved,
                    judged,
                    ..
                } = decision;
                let what = match verdict {
                    Verdict::Continue { samples, .. } => {
                        bar.inc_length(u64::from(samples));
                        format!("mixed, {samples} more samples")
                    }
                    Verdict::Stop { reason } => format!("stopped: {}", reason.as_str()),
                };
                bar.println(format!(
                    "  {} round {}: {resolved}/{judged} resolved, {what}",
                    round.instance_id, round.round
                ));
            }
        }) as Arc<dyn Fn(WorkerEvent) + Send + Sync>
    };

    let started = Instant::now();
    let worker = Worker::new(
        Arc::new(SingleCampaign(rollouts)),
        queue.clone(),
        local.store.metadata.clone(),
        wallet,
        config,
    )
    .sharing_model_guards(guards);
    // Every task image of the campaign is about to be used: none is removed for room.
    let keep = campaign.tasks.iter().map(|t| t.image.clone()).collect();
    let worker = args.host.guard_disk(worker, &warm, keep);
    let summary = worker
        .run(cancel.clone(), cancel.clone(), events)
        .instrument(info_span!("campaign", campaign = %campaign.name(), worker = %worker_id))
        .await;
    bar.finish_and_clear();
    warm.shutdown().await;
    // Backstop: whatever the run left (it should be nothing) is removed now.
    let leftovers = sandboxes.reap().await?;

    let metadata = local.store.metadata.clone();
    let record = metadata
        .campaign(campaign.name())
        .await?
        .context("the campaign item vanished during the run")?;
    let stats = queue.stats().await?;
    let drained = stats.visible == 0 && stats.in_flight == 0;
    if drained
        && !summary.interrupted
        && let Finish::Incomplete { accounted, total } =
            lifecycle::finish(metadata.as_ref(), campaign.name()).await?
    {
        eprintln!(
            "warning: the queue is empty but only {accounted} of {total} samples have a result or a dead letter; the campaign stays running (run again, and see `synthfleet status`)"
        );
    }
    let trajectories = metadata.trajectories(campaign.name()).await?;
    let resolved = trajectories
        .iter()
        .filter(|t| t.resolved == Some(true))
        .count();
    let spares = warm.stats();
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        committed = summary.committed,
        warm_acquisitions = spares.warm,
        cold_acquisitions = spares.cold,
        discarded_spares = spares.discarded,
        "campaign run finished"
    );
    println!(
        "\n{}: {} trajectories ({} resolved, {} failed), {} dead-lettered; spent {} of {}; {:.1}s",
        campaign.name(),
        trajectories.len(),
        resolved,
        trajectories.len() - resolved,
        record.counts.dead_lettered,
        record.ledger.spent,
        record.ledger.budget,
        started.elapsed().as_secs_f64()
    );
    if leftovers > 0 {
        println!("removed {leftovers} sandboxes that outlived their rollouts");
    }
    println!(
        "inspect with: synthfleet status --state-dir {0}   |   synthfleet show <trajectory-id> --state-dir {0}",
        dir.display()
    );
    if summary.interrupted {
        println!("interrupted: run the same command again to resume");
        return Ok(ExitCode::from(130));
    }
    if let Some(reason) = summary.stop_reason {
        println!(
            "stopped early: {reason}\nraise budget_usd (or resume the campaign) and run again to finish"
        );
        return Ok(ExitCode::from(2));
    }
    if !drained {
        println!(
            "{} samples are still waiting for a retry; run again to finish them",
            stats.visible + stats.in_flight
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
