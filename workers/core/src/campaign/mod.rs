//! Campaign files (TOML): what to run, on which models, within which limits.
//!
//! The file's shape is in `config`, with its task `sources`, `models` and `routes`;
//! `validate` checks what serde cannot. This module holds the loaded [`Campaign`], and
//! every public item is re-exported here (`synthfleet_core::campaign::ModelConfig`).

mod config;
mod models;
mod routes;
mod sampling;
mod sources;
mod validate;
mod variants;

pub use config::{
    CampaignConfig, JudgeConfig, NetworkPolicy, Protocol, QualityConfig, SandboxChannel,
    SandboxConfig, ScaffoldConfig, StorageConfig,
};
pub use models::{MaxTokensField, ModelConfig, ProviderKind};
pub use routes::{DEFAULT_ROUTE, RouteConfig, RouteMatch};
pub use sampling::{SamplingConfig, StopWhen, Strategy};
pub use sources::TaskSource;
pub use validate::is_valid_name;
pub use variants::{VARIANT_ROUTE, VariantConfig};

/// The scaffolds a campaign may name (`scaffold.kind`): the agent crate has one of each.
pub const SCAFFOLD_KINDS: [&str; 3] = ["bash", "edit", "external"];

use crate::MicroUsd;
use crate::task::Task;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why a queue message's sample is not one of the campaign's ([`Campaign::admits`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    #[error(
        "sample {sample_index} of `{instance_id}` is outside campaign `{campaign}` (it asks for at most {samples_per_task} samples per task)"
    )]
    SampleOutOfRange {
        campaign: String,
        instance_id: String,
        sample_index: u32,
        /// The most samples a task may get (`samples_per_task`, or adaptive sampling's
        /// `max_per_task`).
        samples_per_task: u32,
    },
    #[error("instance `{instance_id}` is not a task of campaign `{campaign}`")]
    ForeignInstance {
        campaign: String,
        instance_id: String,
    },
}

/// A validated campaign with its tasks loaded.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub config: CampaignConfig,
    pub source: PathBuf,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    pub tasks: Vec<Task>,
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("cannot read campaign file {path}: check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl Campaign {
    /// Parses and validates a campaign file's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<CampaignConfig, CampaignError> {
        let config: CampaignConfig = toml::from_str(text).map_err(|e| CampaignError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config
            .validate()
            .map_err(|(field, message)| CampaignError::Invalid {
                path: path.to_owned(),
                field,
                message,
            })?;
        Ok(config)
    }

    /// The campaign of the file at `source`, with the tasks its sources gave, in order.
    /// An instance id may appear once across all sources.
    pub fn with_tasks(
        config: CampaignConfig,
        source: PathBuf,
        tasks: Vec<Task>,
    ) -> Result<Campaign, CampaignError> {
        let mut ids = BTreeSet::new();
        let eval = config.scaffold.eval_timeout_s;
        for task in &tasks {
            if let Some(timeout) = task.timeout_s
                && timeout.saturating_add(eval.saturating_mul(2)) > MAX_LEASE_S
            {
                return Err(CampaignError::Invalid {
                    path: source,
                    field: "tasks".to_owned(),
                    message: format!(
                        "task `{}` has timeout_s = {timeout}: with twice eval_timeout_s ({eval}) that exceeds the 12-hour ceiling of a queue message's lease ({MAX_LEASE_S} s)",
                        task.instance_id
                    ),
                });
            }
            if !ids.insert(task.instance_id.as_str()) {
                return Err(CampaignError::Invalid {
                    path: source,
                    field: "tasks".to_owned(),
                    message: format!(
                        "instance_id `{}` appears in more than one task source",
                        task.instance_id
                    ),
                });
            }
        }
        Ok(Campaign {
            config,
            base_dir: base_dir_of(&source),
            source,
            tasks,
        })
    }

    /// A campaign from a stored configuration (a fleet worker's view: no task files, the
    /// tasks arrive in messages).
    pub fn from_config(config: CampaignConfig, source: PathBuf) -> Result<Campaign, CampaignError> {
        config
            .validate()
            .map_err(|(field, message)| CampaignError::Invalid {
                path: source.clone(),
                field,
                message,
            })?;
        Ok(Campaign {
            config,
            source,
            base_dir: PathBuf::from("."),
            tasks: Vec::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// The directory a campaign file's relative paths are resolved against.
pub fn base_dir_of(source: &Path) -> PathBuf {
    source
        .parent()
        .map(Path::to_owned)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Campaign {
    /// Whether a queue message's sample belongs to this campaign: its index is within
    /// the samples a task may get and, when the campaign's tasks are known (not in a fleet
    /// worker's view), its instance is one of them.
    pub fn admits(&self, key: &crate::message::ResultKey) -> Result<(), NotAdmitted> {
        let samples_per_task = self.config.max_samples_per_task();
        if key.sample_index >= samples_per_task {
            return Err(NotAdmitted::SampleOutOfRange {
                campaign: key.campaign.clone(),
                instance_id: key.instance_id.clone(),
                sample_index: key.sample_index,
                samples_per_task,
            });
        }
        if !self.tasks.is_empty() && !self.tasks.iter().any(|t| t.instance_id == key.instance_id) {
            return Err(NotAdmitted::ForeignInstance {
                campaign: key.campaign.clone(),
                instance_id: key.instance_id.clone(),
            });
        }
        Ok(())
    }

    pub fn budget(&self) -> MicroUsd {
        MicroUsd::from_usd_ceil(self.config.budget_usd)
    }

    pub fn resolve(&self, relative: &Path) -> PathBuf {
        self.base_dir.join(relative)
    }

    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.config.models.iter().find(|m| m.name == name)
    }
}

/// The longest a queue message can be held: SQS's 12-hour visibility ceiling. A rollout
/// (with its setup and verification) must fit in it, or no worker could ever finish it.
pub const MAX_LEASE_S: u64 = 12 * 3600;

/// A valid campaign file and a task, for the tests of this module's files.
#[cfg(test)]
mod fixtures {
    use super::{Campaign, CampaignConfig, CampaignError};
    use std::path::Path;

    pub(super) const TASK: &str = r#"{"instance_id":"t1","image":"img","problem_statement":"p"}"#;
    pub(super) const CAMPAIGN: &str = r#"
name = "demo"
tasks = ["tasks.jsonl", { path = "swe/", format = "swe-bench", split = "test", repos = ["django/django"], limit = 3 }]
samples_per_task = 2
budget_usd = 1.5

[[models]]
name = "a"
provider = "replay"
weight = 3

[[models]]
name = "b"
provider = "openai"
endpoint = "http://127.0.0.1:1/v1"
api_key_env = "KEY"
fallbacks = ["a"]
"#;

    pub(super) fn parse(text: &str) -> Result<CampaignConfig, CampaignError> {
        Campaign::parse(Path::new("dir/c.toml"), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::{CAMPAIGN, TASK, parse};
    use crate::task::parse_tasks;
    use crate::taskset::TaskFormat;

    #[test]
    fn parses_valid_campaign_and_routes_by_weight() {
        let config = parse(CAMPAIGN).expect("valid");
        assert_eq!(config.tasks[0].path, PathBuf::from("tasks.jsonl"));
        assert_eq!(config.tasks[0].format, TaskFormat::Auto);
        let swe = &config.tasks[1];
        assert_eq!(
            (swe.format, swe.split.as_deref(), swe.limit, swe.repos.len()),
            (TaskFormat::SweBench, Some("test"), Some(3), 1)
        );
        let tasks = parse_tasks(Path::new("tasks.jsonl"), TASK).expect("task");
        let c = Campaign::with_tasks(config, PathBuf::from("dir/c.toml"), tasks).expect("campaign");
        assert_eq!(c.base_dir, PathBuf::from("dir"));
        assert_eq!(c.budget(), MicroUsd(1_500_000));
        assert_eq!(c.config.scaffold.max_steps, 50);
        // deterministic routing, following the weights roughly
        let task = &c.tasks[0];
        let picks: Vec<&str> = (0..400)
            .map(|i| c.model_for(task, i).0.name.as_str())
            .collect();
        let a = picks.iter().filter(|n| **n == "a").count();
        assert!((240..360).contains(&a), "{a}");
        assert_eq!(c.model_for(task, 7), c.model_for(task, 7));
        assert_eq!(c.model_for(task, 7).1, DEFAULT_ROUTE);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = CAMPAIGN.replace("samples_per_task = 2", "samples_per_task = 2\nbudget = 3");
        let msg = parse(&text).expect_err("unknown key").to_string();
        assert!(
            msg.contains("c.toml") && msg.contains("line 5") && msg.contains("`budget`"),
            "{msg}"
        );
        let text = CAMPAIGN.replace("limit = 3", "limt = 3");
        let msg = parse(&text).expect_err("unknown source key").to_string();
        assert!(msg.contains("`limt`"), "{msg}");
        let text = CAMPAIGN.replace("format = \"swe-bench\"", "format = \"swe-bnech\"");
        let msg = parse(&text).expect_err("unknown format").to_string();
        assert!(
            msg.contains("swe-bnech") && msg.contains("swe-smith"),
            "{msg}"
        );
    }

    #[test]
    fn a_rollout_must_fit_a_queue_lease() {
        let text = CAMPAIGN.replace(
            "budget_usd = 1.5",
            "budget_usd = 1.5\n[scaffold]\nrollout_timeout_s = 43000\neval_timeout_s = 900",
        );
        let err = parse(&text).expect_err("too long");
        assert!(err.to_string().contains("12 hours"), "{err}");
        let config = parse(CAMPAIGN).expect("valid");
        let long =
            r#"{"instance_id":"t1","image":"img","problem_statement":"p","timeout_s":43000}"#;
        let tasks = parse_tasks(Path::new("t.jsonl"), long).expect("task");
        let err = Campaign::with_tasks(config, PathBuf::from("c.toml"), tasks)
            .expect_err("task too long");
        assert!(
            err.to_string().contains("task `t1` has timeout_s = 43000"),
            "{err}"
        );
    }

    #[test]
    fn a_message_must_name_a_sample_of_the_campaign() {
        use crate::message::ResultKey;
        let tasks = parse_tasks(Path::new("t.jsonl"), TASK).expect("task");
        let c = Campaign::with_tasks(
            parse(CAMPAIGN).expect("valid"),
            PathBuf::from("c.toml"),
            tasks,
        )
        .expect("campaign");
        let key = |instance: &str, sample_index| ResultKey {
            campaign: "demo".into(),
            instance_id: instance.into(),
            sample_index,
        };
        assert!(c.admits(&key("t1", 1)).is_ok());
        let err = c.admits(&key("t1", 2)).expect_err("out of range");
        assert!(
            matches!(
                err,
                NotAdmitted::SampleOutOfRange {
                    sample_index: 2,
                    samples_per_task: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("at most 2 samples per task"),
            "{err}"
        );
        let err = c.admits(&key("t9", 0)).expect_err("foreign instance");
        assert!(
            matches!(err, NotAdmitted::ForeignInstance { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("not a task"), "{err}");
    }

    #[test]
    fn an_instance_appears_once_across_sources() {
        let config = parse(CAMPAIGN).expect("valid");
        let mut tasks = parse_tasks(Path::new("a.jsonl"), TASK).expect("task");
        tasks.extend(parse_tasks(Path::new("b.jsonl"), TASK).expect("task"));
        let err =
            Campaign::with_tasks(config, PathBuf::from("c.toml"), tasks).expect_err("duplicate");
        assert!(err.to_string().contains("`t1`"), "{err}");
    }
}
