//! The finalize function: run on a schedule. A running campaign whose every sample has a
//! result or a dead letter is marked `done` ([`lifecycle::finish`], the rule `synthfleet
//! run` applies when its queue drains), its totals are recorded at
//! `reports/{campaign}/totals.json`, and the quality jobs are launched as an ECS task of
//! the `synthfleet-jobs` image (`synthfleet-jobs publish {campaign}`: the report and the
//! dashboard to `reports/{campaign}/`, the Hugging Face export to `exports/{campaign}/`).
//! DuckDB stays in that image, out of the function.
//!
//! A campaign item that does not decode is left out of the listing (logged by the store),
//! and a campaign whose finalization fails is logged and left to the next run: neither
//! holds the other campaigns back. The payload is ignored; what invoked the function is
//! logged ([`crate::log_invocation`]).

use crate::{BoxError, ControlError, deployment, env_var, log_invocation};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, LaunchType, NetworkConfiguration,
    TaskOverride,
};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use sha2::Digest;
use synthfleet_backend::Backend;
use synthfleet_core::budget::{CampaignRecord, CampaignState};
use synthfleet_core::lifecycle::{self, Finish};
use synthfleet_core::store::TrajectoryStore;
use tracing::{error, info};

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

/// The ECS task that runs the quality jobs of a finished campaign: a Fargate task of the
/// `synthfleet-jobs` task definition, its command overridden with `publish {campaign}`.
pub struct JobsTask {
    pub client: aws_sdk_ecs::Client,
    pub cluster: String,
    pub task_definition: String,
    /// The container of the task definition that runs `synthfleet-jobs`.
    pub container: String,
    /// Private subnets and security groups of the task's network interface (awsvpc).
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
}

impl JobsTask {
    /// `SYNTHFLEET_JOBS_CLUSTER`, `SYNTHFLEET_JOBS_TASK_DEFINITION`,
    /// `SYNTHFLEET_JOBS_CONTAINER` (`jobs`), `SYNTHFLEET_JOBS_SUBNETS` and
    /// `SYNTHFLEET_JOBS_SECURITY_GROUPS` (comma-separated); none when the cluster is unset
    /// (a deployment without the jobs task, e.g. on LocalStack: run `synthfleet publish`).
    fn from_env(config: &aws_config::SdkConfig) -> Result<Option<JobsTask>, ControlError> {
        let Some(cluster) = env_var("SYNTHFLEET_JOBS_CLUSTER") else {
            return Ok(None);
        };
        let task_definition =
            env_var("SYNTHFLEET_JOBS_TASK_DEFINITION").ok_or_else(|| ControlError::Config {
                variable: "SYNTHFLEET_JOBS_TASK_DEFINITION",
                problem: "unset, while SYNTHFLEET_JOBS_CLUSTER is set: name the synthfleet-jobs task definition (family or ARN)",
            })?;
        let list = |name| {
            env_var(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let subnets: Vec<String> = list("SYNTHFLEET_JOBS_SUBNETS");
        if subnets.is_empty() {
            return Err(ControlError::Config {
                variable: "SYNTHFLEET_JOBS_SUBNETS",
                problem: "unset: a Fargate task needs at least one subnet (comma-separated IDs)",
            });
        }
        Ok(Some(JobsTask {
            client: aws_sdk_ecs::Client::new(config),
            cluster,
            task_definition,
            container: env_var("SYNTHFLEET_JOBS_CONTAINER").unwrap_or_else(|| "jobs".into()),
            subnets,
            security_groups: list("SYNTHFLEET_JOBS_SECURITY_GROUPS"),
        }))
    }

    /// Starts `synthfleet-jobs publish {campaign}` for the finished `record`; returns the
    /// task's ARN. The client token ([`client_token`]) makes a retried launch (a crash
    /// before the campaign was marked `done`) start no second task, while a campaign
    /// reopened and finished with new results gets a report of its own.
    pub async fn launch(&self, record: &CampaignRecord) -> Result<String, ControlError> {
        let campaign = record.name.as_str();
        let error = |source: BoxError| ControlError::Jobs {
            campaign: campaign.to_owned(),
            cluster: self.cluster.clone(),
            source,
        };
        let network = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.subnets.clone()))
            .set_security_groups(Some(self.security_groups.clone()))
            .assign_public_ip(AssignPublicIp::Disabled)
            .build()
            .map_err(|e| error(e.into()))?;
        let output = self
            .client
            .run_task()
            .cluster(&self.cluster)
            .task_definition(&self.task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by("synthfleet-finalize")
            .client_token(client_token(record))
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(network)
                    .build(),
            )
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(&self.container)
                            // JSON logs from `info` up, as the fleet's workers write them.
                            .command("--log-format")
                            .command("json")
                            .command("publish")
                            .command(campaign)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| error(e.into()))?;
        if let Some(task) = output.tasks().first().and_then(|t| t.task_arn()) {
            return Ok(task.to_owned());
        }
        let reasons: Vec<String> = output
            .failures()
            .iter()
            .map(|f| {
                format!(
                    "{} ({})",
                    f.reason().unwrap_or("no reason given"),
                    f.detail().unwrap_or("no detail")
                )
            })
            .collect();
        Err(ControlError::NoJobsTask {
            campaign: campaign.to_owned(),
            cluster: self.cluster.clone(),
            reasons,
        })
    }
}

/// RunTask's idempotency token (at most 64 characters) for a campaign's quality jobs: the
/// campaign and what its report covers (its samples and their outcomes). A finalize run
/// retried on the same results gets the same token, so no second task; a campaign
/// reopened (a new upload, a redrive) and finished again with other results gets a new
/// one, so its report is rebuilt.
fn client_token(record: &CampaignRecord) -> String {
    let covered = format!(
        "{}\n{} samples: {} success, {} failed, {} dead-lettered",
        record.name,
        record.total_samples,
        record.counts.success,
        record.counts.failed,
        record.counts.dead_lettered
    );
    let digest = sha2::Sha256::digest(covered.as_bytes());
    let hex: String = digest.iter().take(24).map(|b| format!("{b:02x}")).collect();
    format!("publish-{hex}")
}

pub struct Finalizer {
    pub store: TrajectoryStore,
    /// The quality jobs' task; without it a finished campaign's report is left to
    /// `synthfleet publish`.
    pub jobs: Option<JobsTask>,
}

impl Finalizer {
    /// The deployment named by the function's `SYNTHFLEET_*` environment.
    pub async fn from_env() -> Result<Finalizer, ControlError> {
        let (clients, names) = deployment().await?;
        let jobs = JobsTask::from_env(&clients.config)?;
        let backend = Backend::aws(&clients, names);
        Ok(Finalizer {
            store: backend.store().clone(),
            jobs,
        })
    }

    /// The scheduled invocation: the campaigns finished now. Its payload is ignored, what
    /// invoked it is logged.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Vec<Totals>, ControlError> {
        log_invocation("finalize", &event);
        self.run(Utc::now()).await
    }

    /// Finalizes every finished campaign; one that fails (its jobs task cannot start, say)
    /// is logged and left to the next run, and the others are finalized all the same. The
    /// first failure is returned after all were tried, so the invocation reports it.
    pub async fn run(&self, now: DateTime<Utc>) -> Result<Vec<Totals>, ControlError> {
        let mut finished = Vec::new();
        let mut failed = None;
        for record in self.store.metadata.campaigns().await? {
            if record.state != CampaignState::Running || !record.is_finished() {
                continue;
            }
            match self.finalize(&record, now).await {
                Ok(Some(totals)) => finished.push(totals),
                Ok(None) => {}
                Err(e) => {
                    error!(campaign = %record.name, error = %synthfleet_core::error_chain(&e), "finalizing the campaign failed; the next run tries again");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) if finished.is_empty() => Err(e),
            Some(e) => {
                // The campaigns that were finalized stay finalized; the error is logged.
                error!(error = %synthfleet_core::error_chain(&e), finalized = finished.len(), "some campaigns could not be finalized");
                Ok(finished)
            }
            None => Ok(finished),
        }
    }

    /// One finished campaign: totals, quality jobs, `done`. `None` when another run
    /// finished it meanwhile.
    async fn finalize(
        &self,
        record: &CampaignRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<Totals>, ControlError> {
        let metadata = self.store.metadata.as_ref();
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
        let bytes = serde_json::to_vec_pretty(&totals).map_err(|source| ControlError::Encode {
            what: "a campaign's totals",
            source,
        })?;
        self.store
            .objects
            .put(&format!("reports/{}/totals.json", record.name), bytes)
            .await?;
        // Launched before `done` for the same reason; the client token keeps a retry
        // from starting a second task.
        let jobs = match &self.jobs {
            Some(jobs) => Some(jobs.launch(record).await?),
            None => None,
        };
        if !matches!(
            lifecycle::finish(metadata, &record.name).await?,
            Finish::Done(_)
        ) {
            return Ok(None);
        }
        info!(campaign = %record.name, success = totals.success, failed = totals.failed, dead_lettered = totals.dead_lettered, spent_usd = totals.spent_usd, jobs_task = jobs.as_deref().unwrap_or("none (run `synthfleet publish`)"), "campaign done");
        Ok(Some(totals))
    }
}
