//! Where a worker gets the rollout context of a message's campaign.

use crate::rollout::Rollouts;
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthfleet_core::campaign::{Campaign, CampaignError};
use synthfleet_core::ports::{LlmError, SandboxProvider, StoreError};
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::submit::{SpecError, get_spec};
use synthfleet_core::templates::TemplateError;
use synthfleet_llm::{ModelGuards, ModelPool, Wallet};
use tokio::sync::Mutex;

/// Why a worker cannot run a campaign's rollouts: for good (its messages are
/// dead-lettered), or, when [`ResolveError::is_transient`], only on this worker or only now.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A message of another campaign reached the local runner.
    #[error("message for campaign `{campaign}` reached a runner of `{runner}`")]
    Foreign { campaign: String, runner: String },
    #[error("campaign `{campaign}` was never submitted (no spec in the object store)")]
    NeverSubmitted { campaign: String },
    /// The stored spec could not be read or is not valid.
    #[error(transparent)]
    Spec(SpecError),
    /// The stored spec's configuration is not a valid campaign.
    #[error("campaign `{campaign}`")]
    Config {
        campaign: String,
        #[source]
        source: CampaignError,
    },
    /// The stored spec's templates are not valid.
    #[error("campaign `{campaign}`")]
    Templates {
        campaign: String,
        #[source]
        source: TemplateError,
    },
    /// The campaign's model pool cannot be built here (a key variable this worker lacks).
    #[error(transparent)]
    Models(LlmError),
}

impl ResolveError {
    /// Whether another worker, or this one later, may run the campaign: the store was out
    /// of reach, or this worker lacks what its models need.
    pub fn is_transient(&self) -> bool {
        match self {
            ResolveError::Spec(e) => !matches!(e, SpecError::Invalid { .. }),
            ResolveError::Models(_) => true,
            ResolveError::Foreign { .. }
            | ResolveError::NeverSubmitted { .. }
            | ResolveError::Config { .. }
            | ResolveError::Templates { .. } => false,
        }
    }
}

#[async_trait]
pub trait CampaignSource: Send + Sync {
    async fn rollouts(&self, campaign: &str) -> Result<Arc<Rollouts>, ResolveError>;
}

/// The local runner's source: exactly one campaign.
pub struct SingleCampaign(pub Arc<Rollouts>);

#[async_trait]
impl CampaignSource for SingleCampaign {
    async fn rollouts(&self, campaign: &str) -> Result<Arc<Rollouts>, ResolveError> {
        if campaign == self.0.campaign.name() {
            Ok(self.0.clone())
        } else {
            Err(ResolveError::Foreign {
                campaign: campaign.to_owned(),
                runner: self.0.campaign.name().to_owned(),
            })
        }
    }
}

/// The fleet worker's source: campaign specs stored by `submit`, cached for a while so a
/// re-submitted campaign's changes reach running workers.
pub struct StoredCampaigns {
    store: TrajectoryStore,
    sandboxes: Arc<dyn SandboxProvider>,
    worker_id: String,
    wallet: Arc<Wallet>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<Rollouts>)>>,
    /// Outlives the pools: a reloaded campaign keeps each model's pacing.
    guards: ModelGuards,
}

impl StoredCampaigns {
    pub fn new(
        store: TrajectoryStore,
        sandboxes: Arc<dyn SandboxProvider>,
        worker_id: &str,
        wallet: Arc<Wallet>,
        guards: ModelGuards,
    ) -> StoredCampaigns {
        StoredCampaigns {
            store,
            sandboxes,
            worker_id: worker_id.to_owned(),
            wallet,
            ttl: Duration::from_secs(300),
            cache: Mutex::new(HashMap::new()),
            guards,
        }
    }

    async fn load(&self, name: &str) -> Result<Rollouts, ResolveError> {
        let spec = match get_spec(self.store.objects.as_ref(), name).await {
            Ok(spec) => spec,
            Err(SpecError::Store(StoreError::NotFound { .. })) => {
                return Err(ResolveError::NeverSubmitted {
                    campaign: name.to_owned(),
                });
            }
            Err(e) => return Err(ResolveError::Spec(e)),
        };
        let templates = spec
            .compile_templates()
            .map_err(|source| ResolveError::Templates {
                campaign: name.to_owned(),
                source,
            })?;
        let campaign = Campaign::from_config(
            spec.config,
            PathBuf::from(synthfleet_core::submit::spec_key(name)),
        )
        .map_err(|source| ResolveError::Config {
            campaign: name.to_owned(),
            source,
        })?;
        // A missing key variable is this worker's problem, not the campaign's: retry later.
        let pool =
            ModelPool::new(&campaign.config.models, &self.guards).map_err(ResolveError::Models)?;
        Ok(Rollouts {
            secrets: Rollouts::secrets_of(&campaign),
            campaign: Arc::new(campaign),
            pool: Arc::new(pool),
            sandboxes: self.sandboxes.clone(),
            store: self.store.clone(),
            templates: Arc::new(templates),
            worker_id: self.worker_id.clone(),
            wallet: self.wallet.clone(),
        })
    }
}

#[async_trait]
impl CampaignSource for StoredCampaigns {
    async fn rollouts(&self, campaign: &str) -> Result<Arc<Rollouts>, ResolveError> {
        let mut cache = self.cache.lock().await;
        if let Some((loaded, rollouts)) = cache.get(campaign)
            && loaded.elapsed() < self.ttl
        {
            return Ok(rollouts.clone());
        }
        let rollouts = Arc::new(self.load(campaign).await?);
        cache.insert(campaign.to_owned(), (Instant::now(), rollouts.clone()));
        Ok(rollouts)
    }
}
