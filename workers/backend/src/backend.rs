//! Choosing where state lives: the embedded local store or an AWS deployment.

use crate::local::{self, DEFAULT_STATE_DIR, Local, LocalCommits};
use std::path::PathBuf;
use std::sync::Arc;
use synthfleet_aws::{AwsClients, AwsNames, DynamoMetadata, S3ObjectStore, SqsQueue};
use synthfleet_core::campaign::Campaign;
use synthfleet_core::commits::{Commit, CommitCursor};
use synthfleet_core::lifecycle::Trigger;
use synthfleet_core::ports::{Queue, StoreError, TrajectoryMeta};
use synthfleet_core::store::{TrajectoryStore, TrajectoryStoreError};
use synthfleet_core::submit::{EnqueueError, EnqueueReport, enqueue_triggered};
use synthfleet_core::templates::TemplateError;
use synthfleet_core::trajectory::TrajectoryRecord;
use synthfleet_local::CommitLogError;
use synthfleet_tasks::LoadError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendKind {
    #[default]
    Local,
    Aws,
}

impl std::str::FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<BackendKind, BackendError> {
        match s {
            "local" => Ok(BackendKind::Local),
            "aws" => Ok(BackendKind::Aws),
            other => Err(BackendError::UnknownKind(other.to_owned())),
        }
    }
}

/// What to open: the flags of a command, or the environment of a function.
#[derive(Debug, Clone, Default)]
pub struct BackendConfig {
    pub kind: BackendKind,
    /// Local state directory (default: the campaign's `[storage]` dir, or `./.synthfleet`).
    pub state_dir: Option<PathBuf>,
    pub bucket: Option<String>,
    pub table: Option<String>,
    pub queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
}

/// An AWS setting: its flag and its environment variable.
struct Setting {
    flag: &'static str,
    env: &'static str,
}

const BUCKET: Setting = Setting {
    flag: "bucket",
    env: "SYNTHFLEET_BUCKET",
};
const TABLE: Setting = Setting {
    flag: "table",
    env: "SYNTHFLEET_TABLE",
};
const QUEUE_URL: Setting = Setting {
    flag: "queue-url",
    env: "SYNTHFLEET_QUEUE_URL",
};
const DLQ_URL: Setting = Setting {
    flag: "dead-letter-queue-url",
    env: "SYNTHFLEET_DLQ_URL",
};

impl BackendConfig {
    /// The deployment named by the `SYNTHFLEET_*` variables (what the Lambda functions and
    /// the fleet's tasks are given).
    pub fn aws_from_env() -> BackendConfig {
        let var = |s: &Setting| std::env::var(s.env).ok();
        BackendConfig {
            kind: BackendKind::Aws,
            state_dir: None,
            bucket: var(&BUCKET),
            table: var(&TABLE),
            queue_url: var(&QUEUE_URL),
            dead_letter_queue_url: var(&DLQ_URL),
        }
    }

    /// The AWS resource names, each required.
    pub fn aws_names(&self) -> Result<AwsNames, BackendError> {
        let required = |value: &Option<String>, setting: &Setting| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or(BackendError::Missing {
                    flag: setting.flag,
                    env: setting.env,
                })
        };
        Ok(AwsNames {
            bucket: required(&self.bucket, &BUCKET)?,
            table: required(&self.table, &TABLE)?,
            queue_url: required(&self.queue_url, &QUEUE_URL)?,
            dead_letter_queue_url: required(&self.dead_letter_queue_url, &DLQ_URL)?,
        })
    }

    /// The local state directory for `campaign` (or the default one).
    pub fn local_dir(&self, campaign: Option<&Campaign>) -> PathBuf {
        match (campaign, &self.state_dir) {
            (Some(campaign), dir) => local::state_dir(campaign, dir.as_deref()),
            (None, Some(dir)) => dir.clone(),
            (None, None) => PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "--backend aws needs --{flag} (or ${env}); localstack/env.sh sets them for LocalStack, `terraform output` for a deployment"
    )]
    Missing {
        flag: &'static str,
        env: &'static str,
    },
    #[error("unknown backend `{0}`: use `local` or `aws`")]
    UnknownKind(String),
    #[error(
        "opening the local state in {}: is another synthfleet process using it?",
        dir.display()
    )]
    Local {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error(
        "no synthfleet state in {}: run a campaign first (synthfleet run <campaign.toml>), pass --state-dir, or use --backend aws",
        dir.display()
    )]
    NoState { dir: PathBuf },
    #[error("reading the commits of campaign `{campaign}` ({place})")]
    Commits {
        campaign: String,
        place: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "reading the commits of campaign `{campaign}` from its commit log in {}",
        dir.display()
    )]
    CommitLog {
        campaign: String,
        dir: PathBuf,
        #[source]
        source: Box<CommitLogError>,
    },
    #[error("reading the campaign's prompt templates")]
    Templates(#[source] LoadError),
    #[error("checking the campaign's prompt templates")]
    TemplateSyntax(#[source] TemplateError),
    #[error("enqueueing the campaign")]
    Enqueue(#[source] EnqueueError),
}

pub enum Backend {
    Local {
        local: Local,
        dir: PathBuf,
    },
    Aws {
        store: TrajectoryStore,
        queue: Arc<SqsQueue>,
        names: AwsNames,
    },
}

impl Backend {
    pub async fn open(
        config: &BackendConfig,
        campaign: Option<&Campaign>,
    ) -> Result<Backend, BackendError> {
        match config.kind {
            BackendKind::Aws => {
                let names = config.aws_names()?;
                Ok(Backend::aws(&AwsClients::from_env().await, names))
            }
            BackendKind::Local => {
                let dir = config.local_dir(campaign);
                Ok(Backend::Local {
                    local: Local::open(&dir)?,
                    dir,
                })
            }
        }
    }

    /// The deployment `names` through `clients`.
    pub fn aws(clients: &AwsClients, names: AwsNames) -> Backend {
        let store = TrajectoryStore::new(
            Arc::new(S3ObjectStore::new(clients.s3.clone(), &names.bucket)),
            Arc::new(DynamoMetadata::new(clients.dynamodb.clone(), &names.table)),
        );
        let queue = Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            &names.queue_url,
            &names.dead_letter_queue_url,
        ));
        Backend::Aws {
            store,
            queue,
            names,
        }
    }

    /// Opens an existing local state only (for read commands), with a helpful error.
    pub async fn open_existing(
        config: &BackendConfig,
        campaign: Option<&Campaign>,
    ) -> Result<Backend, BackendError> {
        if config.kind == BackendKind::Local {
            let dir = config.local_dir(campaign);
            if !dir.join("state.redb").exists() {
                return Err(BackendError::NoState { dir });
            }
        }
        Backend::open(config, campaign).await
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

    /// [`submit`] to this backend.
    pub async fn submit(&self, campaign: &Campaign) -> Result<EnqueueReport, BackendError> {
        self.submit_triggered(campaign, &Trigger::Request).await
    }

    /// [`submit_triggered`] to this backend.
    pub async fn submit_triggered(
        &self,
        campaign: &Campaign,
        trigger: &Trigger,
    ) -> Result<EnqueueReport, BackendError> {
        submit_triggered(
            campaign,
            trigger,
            self.queue(campaign.name()).as_ref(),
            self.store(),
        )
        .await
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

/// Where a reader of a campaign's commits (`synthfleet tail`) reads them: the metadata
/// store's commit order on AWS; on the local store, the campaign's commit log, never the
/// database, so that a follower never takes the state from a run (docs/streaming.md).
pub enum CommitFeed {
    Store {
        campaign: String,
        store: TrajectoryStore,
        place: String,
    },
    Log(LocalCommits),
}

impl CommitFeed {
    /// The feed of `campaign`'s commits on the backend of `config`. Opens no local state.
    pub async fn open(config: &BackendConfig, campaign: &str) -> Result<CommitFeed, BackendError> {
        match config.kind {
            BackendKind::Aws => {
                let backend = Backend::open(config, None).await?;
                Ok(CommitFeed::Store {
                    campaign: campaign.to_owned(),
                    store: backend.store().clone(),
                    place: backend.describe(),
                })
            }
            BackendKind::Local => Ok(CommitFeed::Log(LocalCommits::new(
                &config.local_dir(None),
                campaign,
            ))),
        }
    }

    /// Up to `limit` commits after `after`, in the store's commit order.
    pub async fn after(
        &mut self,
        after: Option<&CommitCursor>,
        limit: usize,
    ) -> Result<Vec<Commit>, BackendError> {
        match self {
            CommitFeed::Store {
                campaign,
                store,
                place,
            } => store
                .metadata
                .commits_after(campaign, after, limit)
                .await
                .map_err(|source| BackendError::Commits {
                    campaign: campaign.clone(),
                    place: place.clone(),
                    source,
                }),
            CommitFeed::Log(log) => log.after(after, limit),
        }
    }

    /// The record of a commit, read and verified against its checksum.
    pub async fn load(
        &self,
        meta: &TrajectoryMeta,
    ) -> Result<TrajectoryRecord, TrajectoryStoreError> {
        match self {
            CommitFeed::Store { store, .. } => store.load(meta).await,
            CommitFeed::Log(log) => log.load(meta).await,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            CommitFeed::Store { place, .. } => place.clone(),
            CommitFeed::Log(log) => format!("local state in {}", log.dir().display()),
        }
    }
}

/// Stores the campaign's spec and enqueues every sample not yet done or queued, as a
/// request (someone asked: a `done` campaign runs again): what `synthfleet run` and
/// `synthfleet submit` do. Idempotent: a retried call finds its samples marked and sends
/// nothing twice.
pub async fn submit(
    campaign: &Campaign,
    queue: &dyn Queue,
    store: &TrajectoryStore,
) -> Result<EnqueueReport, BackendError> {
    submit_triggered(campaign, &Trigger::Request, queue, store).await
}

/// [`submit`] started by `trigger` (the enqueue function: an upload event, a firing): a
/// trigger that repeats the one applied last changes nothing
/// ([`synthfleet_core::submit::enqueue_triggered`]).
pub async fn submit_triggered(
    campaign: &Campaign,
    trigger: &Trigger,
    queue: &dyn Queue,
    store: &TrajectoryStore,
) -> Result<EnqueueReport, BackendError> {
    let spec = synthfleet_tasks::campaign_spec(campaign).map_err(BackendError::Templates)?;
    // Fail here, not on every worker, if a template does not compile.
    spec.compile_templates()
        .map_err(BackendError::TemplateSyntax)?;
    enqueue_triggered(
        campaign,
        &spec,
        trigger,
        queue,
        store.metadata.as_ref(),
        store.objects.as_ref(),
    )
    .await
    .map_err(BackendError::Enqueue)
}
