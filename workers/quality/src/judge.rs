//! The second, independent verifier: an LLM judge, through the same model layer (and the
//! same hard budget) as the rollouts. It sees the task and the final patch, never the eval
//! result, so it cannot simply echo the first verifier.

use crate::stages::{Assessment, JudgeVerdict, Stage};
use crate::{CampaignData, Item, QualityError, quality_key, write_json};
use serde::Deserialize;
use std::time::Duration;
use synthfleet_core::budget::Spend;
use synthfleet_core::ports::ChatRequest;
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::trajectory::{ChatMessage, Role, TrajectoryRecord};
use synthfleet_llm::{Meter, Metered, MeteredRequest, ModelPool, Wallet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const SYSTEM: &str = "You are an independent reviewer of code changes. You are shown a task and the final patch a coding agent produced for it. Decide whether the patch correctly and completely solves the task, without unrelated or harmful changes. Answer with exactly one JSON object and nothing else: {\"verdict\": \"pass\" or \"fail\", \"reason\": \"<one sentence>\"}.";

/// Patch characters shown to the judge; longer patches are cut with a marker.
const MAX_PATCH_CHARS: usize = 30_000;
/// How long to wait for in-flight reservations elsewhere to settle before giving up.
const BUSY_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct JudgeRun {
    pub judged: u64,
    pub passed: u64,
    /// Replies that were not the JSON asked for (left unjudged; a re-run retries them).
    pub malformed: u64,
    /// Left unjudged because the campaign budget was exhausted.
    pub out_of_budget: u64,
    pub cost_usd: f64,
}

#[derive(Deserialize)]
struct Reply {
    verdict: String,
    #[serde(default)]
    reason: String,
}

fn request(record: &TrajectoryRecord) -> ChatRequest {
    let task = record
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .and_then(|m| m.content.as_deref())
        .unwrap_or("(no task text recorded)");
    let patch = if record.patch.chars().count() > MAX_PATCH_CHARS {
        let cut: String = record.patch.chars().take(MAX_PATCH_CHARS).collect();
        format!("{cut}\n[... patch truncated ...]")
    } else {
        record.patch.clone()
    };
    let patch = if patch.trim().is_empty() {
        "(empty: the agent changed nothing)".to_owned()
    } else {
        patch
    };
    ChatRequest {
        messages: vec![
            ChatMessage::text(Role::System, SYSTEM),
            ChatMessage::text(
                Role::User,
                format!("## Task\n\n{task}\n\n## Final patch\n\n```diff\n{patch}\n```"),
            ),
        ],
        tools: Vec::new(),
        max_tokens: 0,
        temperature: Some(0.0),
    }
}

/// Reads the judge's JSON answer out of its reply (tolerating prose or fences around it).
fn parse(text: &str) -> Option<(bool, String)> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let reply: Reply = serde_json::from_str(text.get(start..=end)?).ok()?;
    match reply.verdict.trim().to_ascii_lowercase().as_str() {
        "pass" => Some((true, reply.reason)),
        "fail" => Some((false, reply.reason)),
        _ => None,
    }
}

/// Judges every trajectory that needs it (not judged yet; with `only_accepted`, only those
/// that passed every earlier stage), stores each verdict, and adds them to `data.judged`.
#[tracing::instrument(name = "judge", skip_all, fields(campaign = %data.config.name))]
pub async fn run(
    data: &mut CampaignData,
    assessments: &[Assessment],
    store: &TrajectoryStore,
    pool: &ModelPool,
) -> Result<JudgeRun, QualityError> {
    let Some(judge) = data.config.quality.judge.clone() else {
        return Ok(JudgeRun::default());
    };
    let campaign = data.config.name.clone();
    let mut run = JudgeRun::default();
    let judged = data.judged.get_or_insert_with(Default::default);
    let candidates: Vec<&Item> = data
        .items
        .iter()
        .zip(assessments)
        .filter(|(item, a)| {
            !judged.contains_key(&item.meta.summary.trajectory_id)
                && (!judge.only_accepted || a.survived(Stage::Dedup))
        })
        .map(|(item, _)| item)
        .collect();
    info!(candidates = candidates.len(), "judging");
    // A judge run sends no heartbeats: its slices live as long as its calls renew them,
    // and go back to the campaign when it ends.
    let owner = format!("judge-pid{}", std::process::id());
    let wallet = Wallet::new(store.metadata.clone(), &owner);
    let never = CancellationToken::new();
    let meter = Meter {
        pool,
        wallet: &wallet,
        cancel: &never,
    };
    let judging: Result<(), QualityError> = async {
        for (i, item) in candidates.iter().enumerate() {
            let record = item.record(store).await?;
            let request = request(&record);
            let call = meter
                .call(&MeteredRequest {
                    campaign: &campaign,
                    spend: Spend::Quality,
                    model: &judge.model,
                    replay: &[],
                    request: &request,
                    busy_patience: BUSY_LIMIT,
                })
                .await?;
            let (reply, cost) = match call.outcome {
                Metered::Completed { reply, cost } => (reply, cost),
                Metered::Failed(e) => {
                    return Err(QualityError::Judge {
                        model: judge.model.clone(),
                        source: e,
                    });
                }
                Metered::Refused(_) => {
                    run.out_of_budget = (candidates.len() - i) as u64;
                    warn!(
                        left = run.out_of_budget,
                        "campaign budget exhausted: judging stopped"
                    );
                    break;
                }
            };
            run.cost_usd += cost.as_usd();
            let text = reply.completion.message.content.unwrap_or_default();
            let Some((pass, reason)) = parse(&text) else {
                warn!(trajectory = %record.trajectory_id, reply = %text.chars().take(200).collect::<String>(), "judge reply is not the JSON verdict asked for");
                run.malformed += 1;
                continue;
            };
            let verdict = JudgeVerdict {
                trajectory_id: record.trajectory_id.clone(),
                model: reply.served_by.name.clone(),
                pass,
                reason,
                cost_usd: cost.as_usd(),
            };
            write_json(
                store.objects.as_ref(),
                &quality_key(&campaign, &format!("judge/{}.json", record.trajectory_id)),
                &verdict,
            )
            .await?;
            run.judged += 1;
            run.passed += u64::from(pass);
            judged.insert(verdict.trajectory_id.clone(), verdict);
        }
        Ok(())
    }
    .await;
    wallet.close().await;
    judging?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_verdicts_inside_prose_and_fences() {
        assert_eq!(
            parse("```json\n{\"verdict\": \"PASS\", \"reason\": \"fixes it\"}\n```"),
            Some((true, "fixes it".into()))
        );
        assert_eq!(
            parse("Sure. {\"verdict\":\"fail\",\"reason\":\"no test\"}"),
            Some((false, "no test".into()))
        );
        assert_eq!(parse("{\"verdict\": \"maybe\"}"), None);
        assert_eq!(parse("no json"), None);
    }
}
