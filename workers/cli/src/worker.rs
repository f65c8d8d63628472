//! `synthfleet worker`: the fleet daemon. Pulls tasks of any submitted campaign until
//! stopped; on SIGTERM stops receiving, hands rollouts back after their next step's
//! checkpoint (or lets them finish, without resume) for a grace period, then interrupts
//! and releases what is left.

use anyhow::Context;
use clap::Args;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use synthfleet_agent::{StoredCampaigns, Worker, WorkerConfig, WorkerEvent};
use synthfleet_aws::imds::{Departure, InstanceMetadata};
use synthfleet_aws::{AsgProtection, EcsTaskProtection, SnsCommitEvents};
use synthfleet_backend::Backend;
use synthfleet_core::ports::SandboxProvider;
use synthfleet_llm::{ModelGuards, Wallet};
use synthfleet_sandbox::{DiskGuard, DockerSandboxes, WarmPool};
use synthfleet_term::BackendArgs;
use synthfleet_term::logging::{EmfLines, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// How a worker keeps its Docker host: the warm pool and the disk. Shared by `run` and
/// `worker`.
#[derive(Args)]
pub struct HostArgs {
    /// Spare sandboxes kept started for the task images in use, so that a rollout (and its
    /// verification) finds one ready (0: none); default: twice the concurrency.
    #[arg(long, env = "SYNTHFLEET_WARM_POOL")]
    warm_pool: Option<usize>,
    /// Megabytes to keep free on Docker's disk: below it, unused task images are removed
    /// and no new task is taken until there is room (0: not watched).
    #[arg(long, env = "SYNTHFLEET_MIN_FREE_DISK_MB", default_value_t = 2048)]
    min_free_disk_mb: u64,
}

impl HostArgs {
    pub fn pool(&self, engine: DockerSandboxes, concurrency: u16) -> WarmPool {
        WarmPool::new(
            engine,
            self.warm_pool
                .unwrap_or(2 * usize::from(concurrency.max(1))),
        )
    }

    /// Makes `worker` back off under disk pressure, keeping the images in `keep`.
    pub fn guard_disk(
        &self,
        worker: Worker,
        pool: &WarmPool,
        keep: std::collections::BTreeSet<String>,
    ) -> Worker {
        if self.min_free_disk_mb == 0 {
            return worker;
        }
        worker.backing_off_under_pressure(Arc::new(DiskGuard::new(
            pool.clone(),
            self.min_free_disk_mb,
            keep,
        )))
    }
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    host: HostArgs,
    /// Rollouts run at once.
    #[arg(short = 'j', long, env = "SYNTHFLEET_CONCURRENCY", default_value_t = 2)]
    concurrency: u16,
    /// This worker's id: labels its sandboxes, so a restart reaps what a crash left.
    /// Default: the host name.
    #[arg(long, env = "SYNTHFLEET_WORKER_ID")]
    worker_id: Option<String>,
    /// Visibility timeout of received messages (extended while a rollout runs), seconds.
    #[arg(long, env = "SYNTHFLEET_VISIBILITY_S", default_value_t = 300)]
    visibility_s: u64,
    /// Attempts that fail on an infrastructure fault before a sample is dead-lettered
    /// (crashes, kills and signals are not attempts).
    #[arg(long, env = "SYNTHFLEET_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Deliveries of one message to workers that never finished it (crashed, killed) before
    /// it is dead-lettered as a poison task; keep the queue's redrive maxReceiveCount above.
    #[arg(long, env = "SYNTHFLEET_MAX_RECEIVES", default_value_t = 10)]
    max_receives: u32,
    /// First delay before a sample that hit an infrastructure failure is retried, seconds.
    #[arg(long, env = "SYNTHFLEET_RETRY_BACKOFF_S", default_value_t = 10.0)]
    retry_backoff_s: f64,
    /// How long in-flight rollouts may finish after SIGTERM before they are released, seconds.
    #[arg(long, env = "SYNTHFLEET_GRACE_S", default_value_t = 90)]
    grace_s: u64,
    /// How long a task of a paused or exhausted campaign (or of one this worker cannot
    /// serve, e.g. lacking a model's key variable) waits before it is looked at again,
    /// seconds (at most 900).
    #[arg(long, env = "SYNTHFLEET_DEFER_S", default_value_t = 300)]
    defer_s: u64,
    /// Long-poll wait of each receive, seconds (at most 20).
    #[arg(long, env = "SYNTHFLEET_POLL_WAIT_S", default_value_t = 20)]
    poll_wait_s: u64,
    /// Seconds between liveness heartbeats; a worker that misses three is dead, and any
    /// worker on its host removes its sandboxes.
    #[arg(long, env = "SYNTHFLEET_HEARTBEAT_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    heartbeat_s: u64,
    /// The Auto Scaling group this worker's instance belongs to: the instance is protected
    /// from scale-in while rollouts run (with --instance-id).
    #[arg(long, env = "SYNTHFLEET_ASG_NAME", requires = "instance_id")]
    asg_name: Option<String>,
    /// This worker's EC2 instance id (the boot script reads it from the instance metadata).
    #[arg(long, env = "SYNTHFLEET_INSTANCE_ID", requires = "asg_name")]
    instance_id: Option<String>,
    /// Running as an ECS task: protect the task from service scale-ins while rollouts run
    /// (through the ECS agent at $ECS_AGENT_URI).
    #[arg(
        long,
        env = "SYNTHFLEET_ECS_TASK_PROTECTION",
        conflicts_with = "asg_name"
    )]
    ecs_task_protection: bool,
    /// The deployment's name (Terraform's `name_prefix`): with `--log-format json`, the
    /// worker publishes its CloudWatch metrics under it as EMF lines among its logs.
    #[arg(long, env = "SYNTHFLEET_DEPLOYMENT")]
    deployment: Option<String>,
    /// The EC2 instance metadata service to watch for this host's departure — a Spot
    /// interruption notice, a rebalance recommendation, its Auto Scaling group taking it
    /// out (`http://169.254.169.254` on EC2; the boot script sets it): on one the worker
    /// stops as on SIGTERM, within an interruption's two minutes.
    #[arg(long, env = "SYNTHFLEET_IMDS_URL")]
    imds_url: Option<String>,
    /// An SNS topic ARN: each trajectory this worker commits is announced there (best
    /// effort; `synthfleet tail` is the reliable stream: docs/streaming.md).
    #[arg(long, env = "SYNTHFLEET_COMMITS_TOPIC")]
    commits_topic: Option<String>,
}

/// How often the instance metadata is read for a departure notice (AWS suggests every 5 s).
const DEPARTURE_POLL: Duration = Duration::from_secs(5);
/// What an interruption's notice leaves for handing rollouts back before the instance goes.
const HAND_BACK_MARGIN: Duration = Duration::from_secs(20);

/// Resolves when the instance metadata says the host is going away (never without a
/// metadata service). A failed read is logged and tried again.
async fn departed(imds: Option<&InstanceMetadata>) -> Departure {
    let Some(imds) = imds else {
        return std::future::pending().await;
    };
    loop {
        match imds.departure().await {
            Ok(Some(departure)) => return departure,
            Ok(None) => {}
            Err(e) => {
                warn!(error = %synthfleet_core::error_chain(&e), "reading the instance metadata for a departure notice failed; trying again")
            }
        }
        tokio::time::sleep(DEPARTURE_POLL).await;
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn worker(args: WorkerArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    if args.backend.backend != "aws" {
        anyhow::bail!(
            "`synthfleet worker` serves a shared queue: use --backend aws (the local store is single-process; use `synthfleet run` on one machine)"
        );
    }
    let worker_id = match args.worker_id {
        Some(id) => id,
        None => hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .context("reading the host name for the worker id (or pass --worker-id)")?,
    };
    let backend = Backend::open(&args.backend.config()?, None).await?;
    let Backend::Aws { store, queue, .. } = backend else {
        anyhow::bail!("the worker needs the aws backend");
    };
    let store = match args.commits_topic.as_deref().filter(|t| !t.is_empty()) {
        Some(topic) => {
            let config = synthfleet_aws::AwsClients::from_env().await.config;
            store.announcing_commits(Arc::new(SnsCommitEvents::new(&config, topic)))
        }
        None => store,
    };
    let queue = Arc::new(
        (*queue)
            .clone()
            .with_wait(Duration::from_secs(args.poll_wait_s)),
    );
    let imds = args.imds_url.as_deref().map(InstanceMetadata::new);
    // A host already on its way out takes no work (a service manager may restart a worker
    // that stopped for a notice).
    if let Some(imds) = &imds
        && let Ok(Some(departure)) = imds.departure().await
    {
        warn!(%departure, "this host is going away: taking no work");
        return Ok(ExitCode::SUCCESS);
    }
    let sandboxes = DockerSandboxes::connect(&worker_id)?;
    sandboxes.ping().await?;
    let reaped = sandboxes.reap().await?;
    info!(worker = %worker_id, reaped, "worker starting");
    let warm = args.host.pool(sandboxes.clone(), args.concurrency);

    // Each model's requests_per_minute holds for the fleet: this worker paces at its share.
    let guards = ModelGuards::default();
    let wallet = Arc::new(Wallet::new(store.metadata.clone(), &worker_id));
    let campaigns = Arc::new(StoredCampaigns::new(
        store.clone(),
        Arc::new(warm.clone()),
        &worker_id,
        wallet.clone(),
        guards.clone(),
    ));
    let config = WorkerConfig {
        worker_id: worker_id.clone(),
        concurrency: usize::from(args.concurrency.max(1)),
        visibility: Duration::from_secs(args.visibility_s.max(3)),
        max_attempts: args.max_attempts.max(1),
        max_receives: args.max_receives.max(2),
        retry_backoff: Duration::try_from_secs_f64(args.retry_backoff_s.max(0.0))
            .unwrap_or(Duration::from_secs(10)),
        stop_when_drained: false,
        stop_when_campaign_stops: false,
        defer_delay: Duration::from_secs(args.defer_s.min(900)),
        heartbeat_every: Duration::from_secs(args.heartbeat_s),
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let interrupt = CancellationToken::new();
    {
        let (stop, interrupt) = (stop.clone(), interrupt.clone());
        let mut grace = Duration::from_secs(args.grace_s);
        tokio::spawn(async move {
            tokio::select! {
                _ = terminated() => {}
                departure = departed(imds.as_ref()) => {
                    // Rollouts may run until shortly before the instance goes; then what is
                    // left is handed back in time, costing no attempt.
                    if let Some(left) = departure.time_left(chrono::Utc::now()) {
                        grace = grace.min(left.saturating_sub(HAND_BACK_MARGIN));
                    }
                    warn!(%departure, "this host is going away");
                }
            }
            warn!(
                grace_s = grace.as_secs(),
                "stop requested: no new tasks; in-flight rollouts go back at their next step boundary (or finish, without resume)"
            );
            stop.cancel();
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = terminated() => {}
            }
            warn!("grace period over: interrupting and releasing in-flight tasks");
            interrupt.cancel();
        });
    }
    let events = Arc::new(|event: WorkerEvent| {
        if let WorkerEvent::CampaignStopped { reason } = event {
            info!(%reason, "deferred a task of a campaign that accepts no work");
        }
    });
    let mut worker = Worker::new(campaigns, queue, store.metadata.clone(), wallet, config)
        .reaping_dead_owners(Arc::new(sandboxes.clone()))
        .sharing_model_guards(guards);
    if let Some(sink) = EmfLines::sink(log_format, args.deployment.as_deref()) {
        worker = worker.publishing_metrics(sink);
    }
    // A fleet worker serves whichever campaigns come: images it used lately are the ones
    // about to be used again.
    worker = args.host.guard_disk(worker, &warm, Default::default());
    if let (Some(group), Some(instance)) = (&args.asg_name, &args.instance_id) {
        let client = synthfleet_aws::AwsClients::from_env().await.autoscaling;
        worker =
            worker.protecting_from_scale_in(Arc::new(AsgProtection::new(client, group, instance)));
    }
    if args.ecs_task_protection {
        let agent = std::env::var("ECS_AGENT_URI").context(
            "--ecs-task-protection needs $ECS_AGENT_URI, which ECS sets in every task: is this worker running as an ECS task?",
        )?;
        worker = worker.protecting_from_scale_in(Arc::new(EcsTaskProtection::new(&agent)));
    }
    let summary = worker
        .run(stop, interrupt, events)
        .instrument(info_span!("worker", worker = %worker_id))
        .await;
    warm.shutdown().await;
    let spares = warm.stats();
    let leftovers = sandboxes.reap().await?;
    info!(
        warm_acquisitions = spares.warm,
        cold_acquisitions = spares.cold,
        discarded_spares = spares.discarded,
        committed = summary.committed,
        duplicates = summary.duplicates,
        retried = summary.retried,
        dead_lettered = summary.dead_lettered,
        deferred = summary.deferred,
        leftovers,
        "worker stopped"
    );
    Ok(ExitCode::SUCCESS)
}
