//! synthfleet's quality pipeline: the filtering stages, review sampling, reports and the
//! dashboard, and Parquet / Hugging Face exports, on DuckDB.
//!
//! It reads what campaigns stored through the ports (local store or S3 + DynamoDB) and
//! writes its own results back beside them, under `quality/{campaign}/` and
//! `reviews/{campaign}/`. Only the `synthfleet-jobs` binary links this crate, so the worker
//! and the Lambdas never carry DuckDB.

pub mod anonymize;
pub mod dashboard;
pub mod dataset;
pub mod experiment;
pub mod export;
pub mod facts;
pub mod judge;
pub mod report;
pub mod review;
pub mod signal;
pub mod stages;
#[cfg(test)]
mod tests;

use review::{Review, ReviewSample};
use serde::{Deserialize, Serialize};
use stages::{Assessment, JudgeVerdict, Stage};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use synthfleet_core::budget::CampaignRecord;
use synthfleet_core::campaign::CampaignConfig;
use synthfleet_core::facts::TrajectoryFacts;
use synthfleet_core::ports::{ObjectStore, StoreError, TrajectoryMeta, TrajectorySummary};
use synthfleet_core::store::{TrajectoryStore, TrajectoryStoreError};
use synthfleet_core::submit::{SpecError, get_spec};
use synthfleet_core::trajectory::TrajectoryRecord;

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Gold(#[from] synthfleet_core::gold::GoldError),
    #[error(transparent)]
    Meter(#[from] synthfleet_llm::MeterError),
    #[error("reading trajectory {key}")]
    Load {
        key: String,
        #[source]
        source: TrajectoryStoreError,
    },
    #[error(
        "campaign `{0}` not found: check the name with `synthfleet status` (and the backend flags)"
    )]
    UnknownCampaign(String),
    #[error("DuckDB: {operation}")]
    DuckDb {
        operation: String,
        #[source]
        source: duckdb::Error,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode {what}: {detail}")]
    Decode { what: String, detail: String },
    #[error(
        "campaign `{campaign}` has no stored spec ({key}): it was run by an older synthfleet; run or submit it again to store one (finished samples are not re-run)"
    )]
    NoSpec { campaign: String, key: String },
    /// A committed trajectory whose facts could be neither read nor derived.
    #[error("no facts for trajectory {trajectory_id}")]
    MissingFacts { trajectory_id: String },
    #[error("{option} {rule}")]
    InvalidOption {
        /// The flag, e.g. `--rows-per-shard`.
        option: &'static str,
        rule: &'static str,
    },
    #[error("{query} returned no row")]
    NoRow { query: &'static str },
    #[error("judge model `{model}` failed")]
    Judge {
        model: String,
        #[source]
        source: synthfleet_core::ports::LlmError,
    },
    #[error("{operation} the dashboard")]
    Dashboard {
        /// `compiling the template of`, `rendering`.
        operation: &'static str,
        #[source]
        source: minijinja::Error,
    },
}

/// Trajectories read in parallel from the object store.
pub(crate) const LOAD_CONCURRENCY: usize = 16;

/// One committed trajectory as the pipeline keeps it: its [facts](TrajectoryFacts), not
/// the conversation. Records are read again, one at a time, only where their text is
/// needed (the judge, exports, review), so memory stays bounded by the number of
/// trajectories, not their length.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where the record lives and its checksum.
    pub meta: TrajectoryMeta,
    pub facts: TrajectoryFacts,
    /// The row, before the campaign-wide stages fill in the verdicts.
    pub row: TrajectoryRow,
}

impl Item {
    /// Reads the whole record again (checksum verified).
    pub async fn record(&self, store: &TrajectoryStore) -> Result<TrajectoryRecord, QualityError> {
        load_record(store, &self.meta).await
    }
}

/// Reads and verifies the record of a metadata item, as `T`: the record, or a view of it
/// (the export's [`export::Exported`]).
async fn load_record<T: synthfleet_core::codec::Stored>(
    store: &TrajectoryStore,
    meta: &TrajectoryMeta,
) -> Result<T, QualityError> {
    store
        .load_as(meta)
        .await
        .map_err(|source| QualityError::Load {
            key: meta.object_key.clone(),
            source,
        })
}

/// Everything the pipeline knows about one campaign.
pub struct CampaignData {
    pub config: CampaignConfig,
    pub record: Option<CampaignRecord>,
    /// Every committed trajectory, by id.
    pub items: Vec<Item>,
    /// Where the trajectories' facts came from (segments, objects, records).
    pub facts_stats: facts::FactsStats,
    /// The judge's cached verdicts; `None` when the campaign has no judge.
    pub judged: Option<HashMap<String, JudgeVerdict>>,
    pub reviews: HashMap<String, Review>,
    pub sample: Option<ReviewSample>,
    pub dead_letters: u64,
    /// Tasks left out because gold validation found them broken, with why
    /// (`skip_broken_tasks`).
    pub excluded: Vec<(String, String)>,
    /// Tasks gold validation (`validate --gold --repeat N`) found flaky, with the tests
    /// that changed outcome between runs: their trajectories' grades are not trusted.
    pub flaky: BTreeMap<String, Vec<String>>,
}

/// `quality/{campaign}/{name}`
pub fn quality_key(campaign: &str, name: &str) -> String {
    format!("quality/{campaign}/{name}")
}

/// Reads every JSON object under `prefix`.
pub(crate) async fn read_all<T: serde::de::DeserializeOwned>(
    objects: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<T>, QualityError> {
    let mut out = Vec::new();
    for info in objects.list(prefix).await? {
        out.push(read_json(objects, &info.key).await?);
    }
    Ok(out)
}

pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    objects: &dyn ObjectStore,
    key: &str,
) -> Result<T, QualityError> {
    let bytes = objects.get(key).await?;
    serde_json::from_slice(&bytes).map_err(|e| QualityError::Decode {
        what: key.to_owned(),
        detail: e.to_string(),
    })
}

pub(crate) async fn write_json<T: Serialize>(
    objects: &dyn ObjectStore,
    key: &str,
    value: &T,
) -> Result<(), QualityError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| QualityError::Decode {
        what: key.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(objects.put(key, bytes).await?)
}

impl CampaignData {
    /// Loads the campaign's spec, ledger, every committed trajectory (checksums verified),
    /// the judge's verdicts and the reviews. `progress` is called with (done, total).
    pub async fn load(
        store: &TrajectoryStore,
        campaign: &str,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<CampaignData, QualityError> {
        let objects = store.objects.as_ref();
        let record = store.metadata.campaign(campaign).await?;
        let config = match get_spec(objects, campaign).await {
            Ok(spec) => spec.config,
            Err(SpecError::Store(StoreError::NotFound { .. })) if record.is_none() => {
                return Err(QualityError::UnknownCampaign(campaign.to_owned()));
            }
            Err(SpecError::Store(StoreError::NotFound { .. })) => {
                return Err(QualityError::NoSpec {
                    campaign: campaign.to_owned(),
                    key: synthfleet_core::submit::spec_key(campaign),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut metas = store.metadata.trajectories(campaign).await?;
        metas.sort_by(|a, b| a.summary.trajectory_id.cmp(&b.summary.trajectory_id));
        let (facts, facts_stats) = facts::load(store, campaign, &metas, progress).await?;
        let items: Vec<Item> = metas
            .into_iter()
            .zip(facts)
            .map(|(meta, facts)| Item {
                row: TrajectoryRow::of(&facts),
                meta,
                facts,
            })
            .collect();
        let judged = match &config.quality.judge {
            None => None,
            Some(_) => Some(
                read_all::<JudgeVerdict>(objects, &quality_key(campaign, "judge/"))
                    .await?
                    .into_iter()
                    .map(|j| (j.trajectory_id.clone(), j))
                    .collect(),
            ),
        };
        let reviews = review::load_reviews(objects, campaign)
            .await?
            .into_iter()
            .map(|r| (r.trajectory_id.clone(), r))
            .collect();
        let sample = review::load_sample(objects, campaign).await?;
        let dead_letters = store.metadata.dead_letters(campaign).await?.len() as u64;
        let gold = synthfleet_core::gold::get_report(objects, campaign).await?;
        let excluded = match (&gold, config.skip_broken_tasks) {
            (Some(gold), true) => gold
                .tasks
                .iter()
                .filter_map(|t| {
                    let problem = t.problem.as_ref().filter(|p| p.is_broken())?;
                    Some((t.instance_id.clone(), problem.to_string()))
                })
                .collect(),
            _ => Vec::new(),
        };
        let flaky = gold
            .as_ref()
            .map(|gold| {
                gold.flaky()
                    .into_iter()
                    .map(|(id, tests)| (id.to_owned(), tests.to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(CampaignData {
            config,
            record,
            items,
            facts_stats,
            judged,
            reviews,
            sample,
            dead_letters,
            excluded,
            flaky,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs the stages (the judge's verdicts come from its cache).
    pub fn assess(&self) -> Vec<Assessment> {
        let facts: Vec<&TrajectoryFacts> = self.items.iter().map(|i| &i.facts).collect();
        stages::assess(
            &facts,
            &self.config.quality,
            self.config.scaffold.max_steps,
            self.judged.as_ref(),
            &self.flaky,
        )
    }

    /// Where a trajectory id is in `items` (and so in its assessments).
    pub fn position(&self, trajectory_id: &str) -> Option<usize> {
        self.items
            .binary_search_by(|i| i.meta.summary.trajectory_id.as_str().cmp(trajectory_id))
            .ok()
    }

    /// One row per trajectory, for DuckDB. `assessments` is in the order of `items`.
    pub fn rows<'a>(
        &'a self,
        assessments: &'a [Assessment],
    ) -> impl Iterator<Item = TrajectoryRow> + 'a {
        self.items
            .iter()
            .zip(assessments)
            .map(|(item, a)| item.row.assessed(a, self.reviews.get(&a.trajectory_id)))
    }

    /// Records every trajectory's verdicts at `quality/{campaign}/assessments.json`.
    pub async fn publish(
        &self,
        objects: &dyn ObjectStore,
        assessments: &[Assessment],
    ) -> Result<(), QualityError> {
        write_json(
            objects,
            &quality_key(self.name(), "assessments.json"),
            &assessments,
        )
        .await
    }
}

/// A trajectory's row in the `trajectories` table (columns: [`dataset::TRAJECTORY_COLUMNS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryRow {
    /// What the metadata item and the facts say alike (flattened: its fields are columns).
    #[serde(flatten)]
    pub summary: TrajectorySummary,
    pub scaffold: String,
    pub exit_status: String,
    pub resolved: bool,
    pub reward: f64,
    pub duration_ms: u64,
    pub structural: String,
    pub integrity: String,
    pub execution: String,
    pub heuristics: String,
    pub dedup: String,
    pub judge: String,
    pub rejected_at: Option<String>,
    pub reject_reason: Option<String>,
    pub accepted: bool,
    pub pattern: String,
    pub patch_hash: Option<String>,
    pub duplicate_of: Option<String>,
    /// The human verdict (`accept` / `reject`), when reviewed.
    pub review: Option<String>,
    /// Signs of reward hacking were found (the integrity stage rejects it).
    pub suspect: bool,
    /// Which: `history`, `test_edit`, … comma-separated (empty: none).
    pub hack_signals: String,
    /// The commit the agent started from and the hash of what graded it.
    pub start_commit: Option<String>,
    pub harness_hash: Option<String>,
}

impl TrajectoryRow {
    /// The row of a trajectory's facts; the verdict columns stay empty until
    /// [`Self::assessed`].
    pub fn of(facts: &TrajectoryFacts) -> Self {
        TrajectoryRow {
            summary: facts.summary.clone(),
            scaffold: facts.scaffold.clone(),
            exit_status: facts.exit_status.clone(),
            resolved: facts.resolved,
            reward: facts.reward,
            duration_ms: facts.duration_ms,
            structural: String::new(),
            integrity: String::new(),
            execution: String::new(),
            heuristics: String::new(),
            dedup: String::new(),
            judge: String::new(),
            rejected_at: None,
            reject_reason: None,
            accepted: false,
            pattern: String::new(),
            patch_hash: None,
            duplicate_of: None,
            review: None,
            suspect: !facts.hack_signals.is_empty(),
            hack_signals: {
                let mut signals: Vec<&str> = facts
                    .hack_signals
                    .iter()
                    .map(|h| h.signal.as_str())
                    .collect();
                signals.sort_unstable();
                signals.dedup();
                signals.join(",")
            },
            start_commit: facts.start_commit.clone(),
            harness_hash: facts.harness_hash.clone(),
        }
    }

    /// The row with the stages' verdicts and the human one.
    pub fn assessed(&self, a: &Assessment, review: Option<&Review>) -> Self {
        let rejected_at = a.rejected_at();
        TrajectoryRow {
            structural: a.verdict(Stage::Structural).label().into(),
            integrity: a.verdict(Stage::Integrity).label().into(),
            execution: a.verdict(Stage::Execution).label().into(),
            heuristics: a.verdict(Stage::Heuristics).label().into(),
            dedup: a.verdict(Stage::Dedup).label().into(),
            judge: a.verdict(Stage::Judge).label().into(),
            rejected_at: rejected_at.map(|s| s.as_str().to_owned()),
            reject_reason: rejected_at
                .and_then(|s| a.verdict(s).reason())
                .map(str::to_owned),
            accepted: a.accepted,
            pattern: a.pattern.clone(),
            patch_hash: a.patch_hash.clone(),
            duplicate_of: a.duplicate_of.clone(),
            review: review.map(|r| r.verdict.as_str().to_owned()),
            ..self.clone()
        }
    }
}
