//! Choosing where state lives: the embedded local store or an AWS deployment.

use crate::local::{self, DEFAULT_STATE_DIR, Local};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use synthfleet_aws::{AwsClients, DynamoMetadata, S3ObjectStore, SqsQueue};
use synthfleet_core::campaign::Campaign;
use synthfleet_core::ports::Queue;
use synthfleet_core::store::TrajectoryStore;

#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Where queue, metadata and trajectories live.
    #[arg(long, env = "SYNTHFLEET_BACKEND", default_value = "local", value_parser = ["local", "aws"])]
    pub backend: String,
    /// Local state directory (default: the campaign's [storage] dir, or ./.synthfleet).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// S3 bucket for trajectories (aws).
    #[arg(long, env = "SYNTHFLEET_BUCKET")]
    pub bucket: Option<String>,
    /// DynamoDB table for metadata (aws).
    #[arg(long, env = "SYNTHFLEET_TABLE")]
    pub table: Option<String>,
    /// SQS task queue URL (aws).
    #[arg(long, env = "SYNTHFLEET_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// SQS dead-letter queue URL (aws).
    #[arg(long, env = "SYNTHFLEET_DLQ_URL")]
    pub dead_letter_queue_url: Option<String>,
}

pub enum Backend {
    Local {
        local: Local,
        dir: PathBuf,
    },
    Aws {
        store: TrajectoryStore,
        queue: Arc<SqsQueue>,
        names: synthfleet_aws::AwsNames,
    },
}

fn required(value: &Option<String>, flag: &str, env: &str) -> anyhow::Result<String> {
    value.clone().filter(|v| !v.is_empty()).with_context(|| {
        format!(
            "--backend aws needs --{flag} (or ${env}); localstack/env.sh sets them for LocalStack"
        )
    })
}

impl Backend {
    pub async fn open(args: &BackendArgs, campaign: Option<&Campaign>) -> anyhow::Result<Backend> {
        if args.backend == "aws" {
            let names = synthfleet_aws::AwsNames {
                bucket: required(&args.bucket, "bucket", "SYNTHFLEET_BUCKET")?,
                table: required(&args.table, "table", "SYNTHFLEET_TABLE")?,
                queue_url: required(&args.queue_url, "queue-url", "SYNTHFLEET_QUEUE_URL")?,
                dead_letter_queue_url: required(
                    &args.dead_letter_queue_url,
                    "dead-letter-queue-url",
                    "SYNTHFLEET_DLQ_URL",
                )?,
            };
            let clients = AwsClients::from_env().await;
            let store = TrajectoryStore::new(
                Arc::new(S3ObjectStore::new(clients.s3.clone(), &names.bucket)),
                Arc::new(DynamoMetadata::new(clients.dynamodb.clone(), &names.table)),
            );
            let queue = Arc::new(SqsQueue::new(
                clients.sqs.clone(),
                &names.queue_url,
                &names.dead_letter_queue_url,
            ));
            return Ok(Backend::Aws {
                store,
                queue,
                names,
            });
        }
        let dir = match (campaign, &args.state_dir) {
            (Some(campaign), dir) => local::state_dir(campaign, dir.as_deref()),
            (None, Some(dir)) => dir.clone(),
            (None, None) => PathBuf::from(DEFAULT_STATE_DIR),
        };
        Ok(Backend::Local {
            local: Local::open(&dir)?,
            dir,
        })
    }

    /// Opens an existing local state only (for read commands), with a helpful error.
    pub async fn open_existing(
        args: &BackendArgs,
        campaign: Option<&Campaign>,
    ) -> anyhow::Result<Backend> {
        if args.backend == "local" {
            let dir = match (campaign, &args.state_dir) {
                (Some(campaign), dir) => local::state_dir(campaign, dir.as_deref()),
                (None, Some(dir)) => dir.clone(),
                (None, None) => PathBuf::from(DEFAULT_STATE_DIR),
            };
            if !dir.join("state.redb").exists() {
                anyhow::bail!(
                    "no synthfleet state in {}: run a campaign first (synthfleet run <campaign.toml>), pass --state-dir, or use --backend aws",
                    dir.display()
                );
            }
        }
        Backend::open(args, campaign).await
    }

    pub fn store(&self) -> &TrajectoryStore {
        match self {
            Backend::Local { local, .. } => &local.store,
            Backend::Aws { store, .. } => store,
        }
    }

    /// The queue a campaign's messages go to (one per campaign locally; one for all on AWS).
    pub fn queue(&self, campaign: &str) -> Arc<dyn Queue> {
        match self {
            Backend::Local { local, .. } => Arc::new(local.queue(campaign)),
            Backend::Aws { queue, .. } => queue.clone(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::Local { dir, .. } => format!("local state in {}", dir.display()),
            Backend::Aws { names, .. } => format!(
                "s3://{}, DynamoDB table {}, queue {}",
                names.bucket, names.table, names.queue_url
            ),
        }
    }
}

/// Stores the campaign's configuration and template overrides where workers and the
/// quality jobs read them (`campaigns/{name}/spec.json`), after checking the templates.
pub async fn store_spec(
    campaign: &Campaign,
    objects: &dyn synthfleet_core::ports::ObjectStore,
) -> anyhow::Result<()> {
    let templates = synthfleet_agent::Templates::overrides_of(campaign)
        .context("reading template overrides")?;
    // Fail here, not on every worker, if a template does not compile.
    synthfleet_agent::Templates::new(&templates).context("checking the prompt templates")?;
    let spec = synthfleet_core::submit::CampaignSpec {
        config: campaign.config.clone(),
        templates,
    };
    synthfleet_core::submit::put_spec(objects, &spec)
        .await
        .context("storing the campaign spec")
}
