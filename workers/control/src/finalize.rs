//! The finalize function: run on a schedule. A running campaign whose every sample has a
//! result or a dead letter is marked `done` ([`lifecycle::finish`], the rule `synthfleet
//! run` applies when its queue drains) and its totals are recorded at
//! `reports/{campaign}/totals.json`.

use crate::{ControlError, deployment};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use synthfleet_backend::Backend;
use synthfleet_core::budget::CampaignState;
use synthfleet_core::lifecycle::{self, Finish};
use synthfleet_core::store::TrajectoryStore;
use tracing::info;

/// A finished campaign's totals, as recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Totals {
    pub campaign: String,
    pub samples: u64,
    pub success: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub spent_usd: f64,
    pub budget_usd: f64,
    pub created_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

pub struct Finalizer {
    pub store: TrajectoryStore,
}

impl Finalizer {
    /// The deployment named by the function's `SYNTHFLEET_*` environment.
    pub async fn from_env() -> Result<Finalizer, ControlError> {
        let (clients, names) = deployment().await?;
        let backend = Backend::aws(&clients, names);
        Ok(Finalizer {
            store: backend.store().clone(),
        })
    }

    /// The scheduled invocation (its payload is ignored): the campaigns finished now.
    pub async fn handle(&self, _event: LambdaEvent<Value>) -> Result<Vec<Totals>, ControlError> {
        self.run(Utc::now()).await
    }

    pub async fn run(&self, now: DateTime<Utc>) -> Result<Vec<Totals>, ControlError> {
        let metadata = self.store.metadata.as_ref();
        let mut finished = Vec::new();
        for record in metadata.campaigns().await? {
            if record.state != CampaignState::Running || !record.is_finished() {
                continue;
            }
            // The totals first: a crash before `done` leaves the campaign to the next run.
            let totals = Totals {
                campaign: record.name.clone(),
                samples: record.total_samples,
                success: record.counts.success,
                failed: record.counts.failed,
                dead_lettered: record.counts.dead_lettered,
                spent_usd: record.ledger.spent.as_usd(),
                budget_usd: record.ledger.budget.as_usd(),
                created_at: record.created_at,
                finished_at: now,
            };
            let bytes =
                serde_json::to_vec_pretty(&totals).map_err(|source| ControlError::Encode {
                    what: "a campaign's totals",
                    source,
                })?;
            self.store
                .objects
                .put(&format!("reports/{}/totals.json", record.name), bytes)
                .await?;
            if !matches!(
                lifecycle::finish(metadata, &record.name).await?,
                Finish::Done(_)
            ) {
                continue;
            }
            info!(campaign = %record.name, success = totals.success, failed = totals.failed, dead_lettered = totals.dead_lettered, spent_usd = totals.spent_usd, "campaign done");
            finished.push(totals);
        }
        Ok(finished)
    }
}
