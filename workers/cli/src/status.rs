//! `synthfleet status`.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use synthfleet_backend::Backend;
use synthfleet_core::spend;
use synthfleet_term::BackendArgs;

#[derive(Args)]
pub struct StatusArgs {
    /// A campaign file: show that campaign (from its state directory when local).
    campaign: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also each model's trajectories, successes, cost and tokens (cache reads and writes
    /// apart), from the campaign's trajectory items.
    #[arg(long)]
    models: bool,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let campaign = args
        .campaign
        .as_deref()
        .map(synthfleet_tasks::load_campaign)
        .transpose()?;
    let backend = Backend::open_existing(&args.backend.config()?, campaign.as_ref()).await?;
    let metadata = &backend.store().metadata;
    let mut campaigns = metadata.campaigns().await?;
    campaigns.retain(|c| campaign.as_ref().is_none_or(|only| c.name == only.name()));
    campaigns.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for c in &campaigns {
        let queue = backend.queue(&c.name).stats().await?;
        let dead = metadata.dead_letters(&c.name).await?;
        let models = if args.models {
            spend::by_model(&metadata.trajectories(&c.name).await?)
        } else {
            Vec::new()
        };
        rows.push((c, queue, dead, models));
    }
    let workers = metadata.heartbeats().await?;
    if args.json {
        let value = serde_json::json!({
            "campaigns": rows
                .iter()
                .map(|(c, q, dead, models)| serde_json::json!({"campaign": c, "queue": q, "dead_letters": dead, "models": models}))
                .collect::<Vec<_>>(),
            "workers": workers,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no campaigns ({})", backend.describe());
    }
    // On AWS all campaigns share one queue: show it once.
    let shared_queue = matches!(backend, Backend::Aws { .. });
    if shared_queue && let Some((_, q, _, _)) = rows.first() {
        println!(
            "queue    {} waiting, {} in flight, {} dead (all campaigns)",
            q.visible, q.in_flight, q.dead
        );
    }
    for (c, q, dead, models) in rows {
        println!(
            "campaign {}  [{}]{}",
            c.name,
            c.state.as_str(),
            c.state_reason
                .as_ref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        );
        println!(
            "  budget   spent {} + reserved {} of {}",
            c.ledger.spent, c.ledger.reserved, c.ledger.budget
        );
        println!(
            "  samples  {} total: {} success, {} failed, {} dead-lettered, {} to go",
            c.total_samples,
            c.counts.success,
            c.counts.failed,
            c.counts.dead_lettered,
            c.total_samples.saturating_sub(c.finished())
        );
        if !shared_queue {
            println!(
                "  queue    {} waiting, {} in flight, {} dead",
                q.visible, q.in_flight, q.dead
            );
        }
        for letter in dead {
            println!("  dead     {}: {}", letter.key, letter.error);
        }
        for m in models {
            println!(
                "  model    {}: {} trajectories, {} success, ${:.4}; tokens {} in, {} out, {} cache read, {} cache write",
                m.model,
                m.trajectories,
                m.success,
                m.cost_usd,
                m.input_tokens,
                m.output_tokens,
                m.cache_read_tokens,
                m.cache_write_tokens
            );
        }
        println!("  updated  {}", c.updated_at.to_rfc3339());
    }
    let now = chrono::Utc::now();
    for w in workers
        .iter()
        .filter(|w| now - w.at < chrono::Duration::minutes(5))
    {
        println!(
            "worker {}  seen {}s ago, {} in flight, {} completed (v{})",
            w.worker_id,
            (now - w.at).num_seconds(),
            w.in_flight,
            w.completed,
            w.version
        );
        if !w.open_breakers.is_empty() {
            println!(
                "  circuit open: {} (calls go to fallbacks)",
                w.open_breakers.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
