//! The campaign report: outcomes, cost and tokens by model / scaffold / task, the filter
//! funnel, diversity (with mode-collapse alarms) and review agreement, computed with
//! DuckDB over the `trajectories` table, and rendered as text, JSON or a self-contained
//! HTML dashboard.

use crate::dataset::{Dataset, TRAJECTORY_COLUMNS};
use crate::experiment::{self, Cell, Experiment};
use crate::signal::{self, Sampling};
use crate::stages::{Assessment, Stage};
use crate::{CampaignData, QualityError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use synthfleet_core::campaign::QualityConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub campaign: String,
    pub generated_at: DateTime<Utc>,
    /// `running`, `paused`, `exhausted` or `done`, with why.
    pub state: Option<String>,
    pub state_reason: Option<String>,
    pub budget_usd: Option<f64>,
    pub spent_usd: Option<f64>,
    /// Samples given up on (dead-lettered): they have no trajectory.
    pub dead_letters: u64,
    /// Tasks the campaign left out because gold validation found them broken.
    pub excluded_tasks: Vec<ExcludedTask>,
    pub totals: Group,
    pub by_model: Vec<Group>,
    pub by_scaffold: Vec<Group>,
    /// By experiment arm (`[[variants]]`); empty outside experiments.
    #[serde(default)]
    pub by_variant: Vec<Group>,
    /// The arms compared, paired by task, when the campaign is an experiment.
    #[serde(default)]
    pub experiment: Option<Experiment>,
    pub by_task: Vec<Group>,
    /// The learning signal for group-based RL and each task's pass rate (with adaptive
    /// sampling's account).
    #[serde(default)]
    pub sampling: Option<Sampling>,
    /// Reward hacking and untrustworthy grades.
    pub integrity: Integrity,
    pub funnel: Vec<FunnelStage>,
    pub rejections: Vec<Rejection>,
    pub diversity: Vec<Diversity>,
    pub alarms: Vec<String>,
    pub review: ReviewSummary,
}

/// A task left out of the campaign, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExcludedTask {
    pub instance_id: String,
    pub reason: String,
}

/// What the integrity checks found: trajectories showing signs of reward hacking (by kind;
/// per model and scaffold in the groups' `suspect`), and the tasks whose grade gold
/// validation found flaky.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Integrity {
    pub suspect: u64,
    /// Suspect trajectories verified resolved: rewards the hack may have earned.
    pub suspect_resolved: u64,
    pub by_signal: Vec<SignalCount>,
    pub flaky_tasks: Vec<FlakyTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalCount {
    pub signal: String,
    pub trajectories: u64,
}

/// A task whose tests changed outcome between gold runs, and its trajectories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakyTask {
    pub instance_id: String,
    /// The tests that changed outcome (empty: the eval script's verdict changed).
    pub tests: Vec<String>,
    pub trajectories: u64,
}

/// Outcomes of one group of trajectories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub trajectories: u64,
    pub resolved: u64,
    pub accepted: u64,
    /// Trajectories with signs of reward hacking.
    pub suspect: u64,
    pub success_rate: f64,
    pub cost_usd: f64,
    /// Spend divided by resolved trajectories; `None` when none resolved.
    pub cost_per_resolved: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub mean_steps: f64,
    pub median_steps: f64,
    pub mean_duration_s: f64,
}

/// Trajectories still in after a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelStage {
    pub stage: String,
    pub survivors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub stage: String,
    /// The reason with ids and numbers masked, so alike reasons group.
    pub reason: String,
    pub count: u64,
}

/// How varied the structurally valid trajectories of one model / task / the campaign are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diversity {
    pub scope: String,
    pub key: String,
    pub trajectories: u64,
    pub distinct_patterns: u64,
    pub top_pattern: String,
    pub top_pattern_share: f64,
    pub patches: u64,
    pub distinct_patches: u64,
}

/// Human verdicts against one automatic verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// `pipeline` (accepted by every stage), `execution` (verified resolved) or `judge`.
    pub verifier: String,
    pub both_accept: u64,
    pub both_reject: u64,
    pub only_human_accepts: u64,
    pub only_verifier_accepts: u64,
    /// Share of reviewed trajectories where both agree.
    pub agreement: Option<f64>,
    /// Cohen's kappa: agreement beyond chance.
    pub kappa: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewSummary {
    pub sampled: u64,
    pub reviewed: u64,
    /// Sampled but not reviewed yet.
    pub pending: u64,
    pub agreements: Vec<Agreement>,
}

/// Builds the report of a loaded campaign.
pub fn build(data: &CampaignData, assessments: &[Assessment]) -> Result<Report, QualityError> {
    let dataset = Dataset::new()?;
    dataset.load("trajectories", TRAJECTORY_COLUMNS, data.rows(assessments))?;
    let mut report = query(&dataset, &data.config.quality, data.judged.is_some())?;
    let cells: Vec<Cell> = dataset.query(
        "SELECT variant, instance_id, count(*)::UBIGINT AS trajectories,
                count(*) FILTER (WHERE resolved)::UBIGINT AS resolved
           FROM trajectories WHERE variant IS NOT NULL GROUP BY ALL ORDER BY ALL",
    )?;
    let arms: Vec<String> = data
        .config
        .variants
        .iter()
        .map(|v| v.name.clone())
        .collect();
    report.experiment = experiment::compare(&cells, &arms);
    report.sampling = Some(signal::sampling(
        &data.config,
        data.record.as_ref().and_then(|r| r.adaptive.as_ref()),
        data.items.iter().map(|i| {
            let s = &i.facts.summary;
            (s.instance_id.as_str(), s.sample_index, i.row.resolved)
        }),
    ));
    for (instance_id, tests) in &data.flaky {
        report.integrity.flaky_tasks.push(FlakyTask {
            instance_id: instance_id.clone(),
            tests: tests.clone(),
            trajectories: data
                .items
                .iter()
                .filter(|i| &i.facts.summary.instance_id == instance_id)
                .count() as u64,
        });
    }
    let record = data.record.as_ref();
    report.campaign = data.name().to_owned();
    report.state = record.map(|r| r.state.as_str().to_owned());
    report.state_reason = record.and_then(|r| r.state_reason.clone());
    report.budget_usd = record.map(|r| r.ledger.budget.as_usd());
    report.spent_usd = record.map(|r| r.ledger.spent.as_usd());
    report.dead_letters = data.dead_letters;
    report.excluded_tasks = data
        .excluded
        .iter()
        .map(|(instance_id, reason)| ExcludedTask {
            instance_id: instance_id.clone(),
            reason: reason.clone(),
        })
        .collect();
    let review = &mut report.review;
    if let Some(sample) = &data.sample {
        review.sampled = sample.trajectory_ids.len() as u64;
        review.pending = sample
            .trajectory_ids
            .iter()
            .filter(|id| !data.reviews.contains_key(*id))
            .count() as u64;
    }
    Ok(report)
}

/// The report's numbers, from a loaded `trajectories` table (see [`TRAJECTORY_COLUMNS`]).
/// Campaign-level fields (state, budget, sample size) are left for the caller.
pub fn query(
    dataset: &Dataset,
    quality: &QualityConfig,
    judge: bool,
) -> Result<Report, QualityError> {
    let group = |key: &str, tail: &str| -> Result<Vec<Group>, QualityError> {
        dataset.query(&format!(
            "SELECT {key} AS key,
                count(*)::UBIGINT AS trajectories,
                count(*) FILTER (WHERE resolved)::UBIGINT AS resolved,
                count(*) FILTER (WHERE accepted)::UBIGINT AS accepted,
                count(*) FILTER (WHERE suspect)::UBIGINT AS suspect,
                coalesce(avg(resolved::INTEGER), 0)::DOUBLE AS success_rate,
                coalesce(sum(cost_usd), 0)::DOUBLE AS cost_usd,
                (sum(cost_usd) / nullif(count(*) FILTER (WHERE resolved), 0))::DOUBLE AS cost_per_resolved,
                coalesce(sum(input_tokens), 0)::UBIGINT AS input_tokens,
                coalesce(sum(output_tokens), 0)::UBIGINT AS output_tokens,
                coalesce(sum(cache_read_tokens), 0)::UBIGINT AS cache_read_tokens,
                coalesce(sum(cache_write_tokens), 0)::UBIGINT AS cache_write_tokens,
                coalesce(avg(n_steps), 0)::DOUBLE AS mean_steps,
                coalesce(median(n_steps), 0)::DOUBLE AS median_steps,
                coalesce(avg(duration_ms) / 1000, 0)::DOUBLE AS mean_duration_s
             FROM trajectories {tail}"
        ))
    };
    let by = "GROUP BY key ORDER BY key";
    let totals = group("'all'", "")?
        .into_iter()
        .next()
        .ok_or(QualityError::NoRow {
            query: "the totals query",
        })?;
    let mut funnel = vec![FunnelStage {
        stage: "total".into(),
        survivors: totals.trajectories,
    }];
    for stage in Stage::ALL {
        if stage == Stage::Judge && !judge {
            continue;
        }
        // A later stage runs only on survivors, so its passes are the survivors.
        funnel.push(dataset.query_one(&format!(
            "SELECT '{0}' AS stage, count(*) FILTER (WHERE {0} = 'pass')::UBIGINT AS survivors FROM trajectories",
            stage.as_str()
        ))?);
    }
    let rejections = dataset.query(
        r"SELECT rejected_at AS stage,
                regexp_replace(regexp_replace(regexp_replace(reject_reason,
                    '`[^`]*`', '`…`', 'g'),
                    '[0-9A-HJKMNP-TV-Z]{26}', '<id>', 'g'),
                    '\d+(\.\d+)?', '#', 'g') AS reason,
                count(*)::UBIGINT AS count
           FROM trajectories WHERE rejected_at IS NOT NULL
           GROUP BY ALL ORDER BY count DESC, stage, reason",
    )?;
    let mut diversity = Vec::new();
    for (scope, key) in [
        ("campaign", "'all'"),
        ("model", "model"),
        ("task", "instance_id"),
    ] {
        diversity.extend(dataset.query::<Diversity>(&format!(
            "WITH valid AS (SELECT {key} AS key, pattern, patch_hash FROM trajectories WHERE structural = 'pass'),
                  p AS (SELECT key, pattern, count(*) AS n FROM valid GROUP BY key, pattern),
                  top AS (SELECT key, first(pattern ORDER BY n DESC, pattern) AS top_pattern,
                                 max(n) AS top_n, sum(n) AS total, count(*) AS patterns
                          FROM p GROUP BY key),
                  patches AS (SELECT key, count(patch_hash) AS patches,
                                     count(DISTINCT patch_hash) AS distinct_patches
                              FROM valid GROUP BY key)
             SELECT '{scope}' AS scope, top.key AS key, total::UBIGINT AS trajectories,
                    patterns::UBIGINT AS distinct_patterns, top_pattern,
                    (top_n / total)::DOUBLE AS top_pattern_share,
                    patches::UBIGINT AS patches, distinct_patches::UBIGINT AS distinct_patches
             FROM top JOIN patches USING (key) ORDER BY key"
        ))?);
    }
    let alarms = diversity
        .iter()
        .filter(|d| d.scope != "task")
        .filter(|d| {
            d.trajectories >= u64::from(quality.min_trajectories_for_alarm)
                && d.top_pattern_share > quality.max_pattern_share
        })
        .map(|d| {
            format!(
                "mode collapse? {} `{}`: one action pattern ({}) makes up {:.0}% of {} trajectories (max_pattern_share = {})",
                d.scope,
                d.key,
                d.top_pattern,
                d.top_pattern_share * 100.0,
                d.trajectories,
                quality.max_pattern_share
            )
        })
        .collect();
    let mut agreements = Vec::new();
    let verifiers = [
        ("pipeline", "accepted"),
        ("execution", "resolved"),
        ("judge", "judge = 'pass'"),
    ];
    for (name, accepts) in verifiers {
        if name == "judge" && !judge {
            continue;
        }
        let mut a: Agreement = dataset.query_one(&format!(
            "SELECT '{name}' AS verifier,
                count(*) FILTER (WHERE review = 'accept' AND {accepts})::UBIGINT AS both_accept,
                count(*) FILTER (WHERE review = 'reject' AND NOT ({accepts}))::UBIGINT AS both_reject,
                count(*) FILTER (WHERE review = 'accept' AND NOT ({accepts}))::UBIGINT AS only_human_accepts,
                count(*) FILTER (WHERE review = 'reject' AND {accepts})::UBIGINT AS only_verifier_accepts,
                NULL::DOUBLE AS agreement, NULL::DOUBLE AS kappa
             FROM trajectories"
        ))?;
        (a.agreement, a.kappa) = agreement(&a);
        agreements.push(a);
    }
    let reviewed = dataset.count("trajectories WHERE review IS NOT NULL")?;
    let integrity = Integrity {
        suspect: dataset.count("trajectories WHERE suspect")?,
        suspect_resolved: dataset.count("trajectories WHERE suspect AND resolved")?,
        by_signal: dataset.query(
            "SELECT signal, count(*)::UBIGINT AS trajectories
               FROM (SELECT unnest(string_split(hack_signals, ',')) AS signal
                       FROM trajectories WHERE suspect)
              GROUP BY signal ORDER BY trajectories DESC, signal",
        )?,
        flaky_tasks: Vec::new(),
    };
    Ok(Report {
        campaign: String::new(),
        generated_at: Utc::now(),
        state: None,
        state_reason: None,
        budget_usd: None,
        spent_usd: None,
        dead_letters: 0,
        excluded_tasks: Vec::new(),
        totals,
        by_model: group("model", by)?,
        by_scaffold: group("scaffold", by)?,
        by_variant: group("variant", &format!("WHERE variant IS NOT NULL {by}"))?,
        experiment: None,
        by_task: group("instance_id", by)?,
        sampling: None,
        integrity,
        funnel,
        rejections,
        diversity,
        alarms,
        review: ReviewSummary {
            sampled: 0,
            reviewed,
            pending: 0,
            agreements,
        },
    })
}

/// Observed agreement and Cohen's kappa of a 2×2 table.
fn agreement(a: &Agreement) -> (Option<f64>, Option<f64>) {
    let n = (a.both_accept + a.both_reject + a.only_human_accepts + a.only_verifier_accepts) as f64;
    if n == 0.0 {
        return (None, None);
    }
    let observed = (a.both_accept + a.both_reject) as f64 / n;
    let human_yes = (a.both_accept + a.only_human_accepts) as f64 / n;
    let auto_yes = (a.both_accept + a.only_verifier_accepts) as f64 / n;
    let chance = human_yes * auto_yes + (1.0 - human_yes) * (1.0 - auto_yes);
    let kappa = (chance < 1.0).then(|| (observed - chance) / (1.0 - chance));
    (Some(observed), kappa)
}

impl Integrity {
    fn to_text(&self) -> String {
        let mut out = format!(
            "\nIntegrity: {} suspect trajectorie(s) ({} of them resolved), left out of accepted data\n",
            self.suspect, self.suspect_resolved
        );
        if !self.by_signal.is_empty() {
            out += &format!(
                "{}\n",
                table(
                    &["signal", "trajectories"],
                    self.by_signal
                        .iter()
                        .map(|s| vec![s.signal.clone(), s.trajectories.to_string()]),
                )
            );
        }
        if !self.flaky_tasks.is_empty() {
            out += &format!(
                "Flaky tasks (grades not trusted)\n{}\n",
                table(
                    &["task", "tests that changed outcome", "trajectories"],
                    self.flaky_tasks.iter().map(|f| vec![
                        f.instance_id.clone(),
                        if f.tests.is_empty() {
                            "(the eval's verdict)".to_owned()
                        } else {
                            f.tests.join(", ")
                        },
                        f.trajectories.to_string(),
                    ]),
                )
            );
        }
        out
    }
}

/// Tasks listed in the text report (JSON and HTML list all).
const TEXT_TASK_ROWS: usize = 40;

fn usd(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.01 {
        format!("${x:.4}")
    } else {
        format!("${x:.2}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(headers.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t.to_string()
}

fn group_table(title: &str, groups: &[Group]) -> String {
    let rows = groups.iter().map(|g| {
        vec![
            g.key.clone(),
            g.trajectories.to_string(),
            g.resolved.to_string(),
            pct(g.success_rate),
            g.accepted.to_string(),
            g.suspect.to_string(),
            usd(g.cost_usd),
            g.cost_per_resolved.map_or("-".into(), usd),
            (g.input_tokens + g.output_tokens).to_string(),
            (g.cache_read_tokens + g.cache_write_tokens).to_string(),
            format!("{:.1}", g.mean_steps),
        ]
    });
    format!(
        "{title}\n{}\n",
        table(
            &[
                "",
                "trajectories",
                "resolved",
                "success",
                "accepted",
                "suspect",
                "cost",
                "cost/resolved",
                "tokens",
                "cached",
                "steps",
            ],
            rows,
        )
    )
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut out = format!("synthfleet report: campaign {}\n", self.campaign);
        if let Some(state) = &self.state {
            out += &format!(
                "state {state}{}; spent {} of {}; {} dead-lettered\n",
                self.state_reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                usd(self.spent_usd.unwrap_or(0.0)),
                usd(self.budget_usd.unwrap_or(0.0)),
                self.dead_letters
            );
        }
        if !self.excluded_tasks.is_empty() {
            out += &format!(
                "{} task(s) left out by gold validation:\n",
                self.excluded_tasks.len()
            );
            for task in &self.excluded_tasks {
                out += &format!("  {}: {}\n", task.instance_id, task.reason);
            }
        }
        out += "\n";
        out += &group_table("All trajectories", std::slice::from_ref(&self.totals));
        out += &group_table("\nBy model", &self.by_model);
        out += &group_table("\nBy scaffold", &self.by_scaffold);
        if let Some(experiment) = &self.experiment {
            out += &group_table("\nBy variant", &self.by_variant);
            out += &experiment.to_text();
        }
        let shown = self.by_task.len().min(TEXT_TASK_ROWS);
        out += &group_table("\nBy task", &self.by_task[..shown]);
        if shown < self.by_task.len() {
            out += &format!(
                "... and {} more tasks (--format json or html lists them all)\n",
                self.by_task.len() - shown
            );
        }
        if let Some(sampling) = &self.sampling {
            out += &sampling.to_text(TEXT_TASK_ROWS);
        }
        out += &self.integrity.to_text();
        let total = self.totals.trajectories.max(1) as f64;
        out += &format!(
            "\nFilter funnel\n{}\n",
            table(
                &["stage", "survivors", "share"],
                self.funnel.iter().map(|f| {
                    vec![
                        f.stage.clone(),
                        f.survivors.to_string(),
                        pct(f.survivors as f64 / total),
                    ]
                }),
            )
        );
        if !self.rejections.is_empty() {
            out += &format!(
                "\nWhy trajectories were rejected\n{}\n",
                table(
                    &["stage", "reason", "count"],
                    self.rejections.iter().map(|r| vec![
                        r.stage.clone(),
                        r.reason.clone(),
                        r.count.to_string()
                    ]),
                )
            );
        }
        out += &format!(
            "\nDiversity (structurally valid trajectories)\n{}\n",
            table(
                &[
                    "scope",
                    "key",
                    "n",
                    "patterns",
                    "top pattern share",
                    "distinct patches"
                ],
                self.diversity
                    .iter()
                    .filter(|d| d.scope != "task")
                    .map(|d| {
                        vec![
                            d.scope.clone(),
                            d.key.clone(),
                            d.trajectories.to_string(),
                            d.distinct_patterns.to_string(),
                            pct(d.top_pattern_share),
                            format!("{}/{}", d.distinct_patches, d.patches),
                        ]
                    }),
            )
        );
        if self.alarms.is_empty() {
            out += "No diversity alarm.\n";
        }
        for alarm in &self.alarms {
            out += &format!("ALARM: {alarm}\n");
        }
        let r = &self.review;
        out += &format!(
            "\nHuman review: {} sampled, {} reviewed, {} pending\n",
            r.sampled, r.reviewed, r.pending
        );
        if r.reviewed > 0 {
            out += &format!(
                "{}\n",
                table(
                    &[
                        "verifier",
                        "agree",
                        "kappa",
                        "both accept",
                        "both reject",
                        "only human accepts",
                        "only verifier accepts"
                    ],
                    r.agreements.iter().map(|a| {
                        vec![
                            a.verifier.clone(),
                            a.agreement.map_or("-".into(), pct),
                            a.kappa.map_or("-".into(), |k| format!("{k:.2}")),
                            a.both_accept.to_string(),
                            a.both_reject.to_string(),
                            a.only_human_accepts.to_string(),
                            a.only_verifier_accepts.to_string(),
                        ]
                    }),
                )
            );
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kappa_of_known_tables() {
        let table = |ba, br, h, v| Agreement {
            verifier: "x".into(),
            both_accept: ba,
            both_reject: br,
            only_human_accepts: h,
            only_verifier_accepts: v,
            agreement: None,
            kappa: None,
        };
        // Perfect agreement on a mixed table: kappa 1.
        assert_eq!(agreement(&table(5, 5, 0, 0)), (Some(1.0), Some(1.0)));
        // Textbook example: 20/5/10/15 → p_o 0.7, p_e 0.5, kappa 0.4.
        let (p, k) = agreement(&table(20, 15, 5, 10));
        assert!((p.unwrap_or_default() - 0.7).abs() < 1e-9);
        assert!((k.unwrap_or_default() - 0.4).abs() < 1e-9);
        assert_eq!(agreement(&table(0, 0, 0, 0)), (None, None));
    }
}
