//! Where a worker gets the rollout context of a message's campaign.

use crate::rollout::Rollouts;
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthfleet_core::campaign::Campaign;
use synthfleet_core::error_chain;
use synthfleet_core::ports::{SandboxProvider, StoreError};
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::submit::{SpecError, get_spec};
use synthfleet_core::templates::Templates;
use synthfleet_llm::{ModelGuards, ModelPool};
use tokio::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The campaign cannot be run by this worker, now or later (dead-letter its messages).
    Unknown(String),
    /// Transient: try the message again later.
    Unavailable(String),
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
            Err(ResolveError::Unknown(format!(
                "message for campaign `{campaign}` reached a runner of `{}`",
                self.0.campaign.name()
            )))
        }
    }
}

/// The fleet worker's source: campaign specs stored by `submit`, cached for a while so a
/// re-submitted campaign's changes reach running workers.
pub struct StoredCampaigns {
    store: TrajectoryStore,
    sandboxes: Arc<dyn SandboxProvider>,
    worker_id: String,
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
        guards: ModelGuards,
    ) -> StoredCampaigns {
        StoredCampaigns {
            store,
            sandboxes,
            worker_id: worker_id.to_owned(),
            ttl: Duration::from_secs(300),
            cache: Mutex::new(HashMap::new()),
            guards,
        }
    }

    async fn load(&self, name: &str) -> Result<Rollouts, ResolveError> {
        let spec = match get_spec(self.store.objects.as_ref(), name).await {
            Ok(spec) => spec,
            Err(SpecError::Store(StoreError::NotFound { .. })) => {
                return Err(ResolveError::Unknown(format!(
                    "campaign `{name}` was never submitted (no spec in the object store)"
                )));
            }
            Err(e @ SpecError::Invalid { .. }) => {
                return Err(ResolveError::Unknown(error_chain(&e)));
            }
            Err(e) => return Err(ResolveError::Unavailable(error_chain(&e))),
        };
        let unknown = |e: &dyn std::error::Error| {
            ResolveError::Unknown(format!("campaign `{name}`: {}", error_chain(e)))
        };
        let campaign = Campaign::from_config(
            spec.config,
            PathBuf::from(synthfleet_core::submit::spec_key(name)),
        )
        .map_err(|e| unknown(&e))?;
        let templates = Templates::new(&spec.templates).map_err(|e| unknown(&e))?;
        // A missing key variable is this worker's problem, not the campaign's: retry later.
        let pool = ModelPool::new(&campaign.config.models, &self.guards)
            .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
        Ok(Rollouts {
            secrets: Rollouts::secrets_of(&campaign),
            campaign: Arc::new(campaign),
            pool: Arc::new(pool),
            sandboxes: self.sandboxes.clone(),
            store: self.store.clone(),
            templates: Arc::new(templates),
            worker_id: self.worker_id.clone(),
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
