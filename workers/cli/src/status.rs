//! `synthfleet status`.

use crate::local::{self, DEFAULT_STATE_DIR, Local};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use synthfleet_core::campaign::Campaign;
use synthfleet_core::ports::Queue;

#[derive(Args)]
pub struct StatusArgs {
    /// A campaign file: show that campaign, from its state directory.
    campaign: Option<PathBuf>,
    /// State directory to read (default: the campaign's, or ./.synthfleet).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (dir, only) = match &args.campaign {
        Some(path) => {
            let campaign = Campaign::load(path)?;
            (
                local::state_dir(&campaign, args.state_dir.as_deref()),
                Some(campaign.name().to_owned()),
            )
        }
        None => (
            args.state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            None,
        ),
    };
    if !dir.join("state.redb").exists() {
        anyhow::bail!(
            "no synthfleet state in {}: run a campaign first (synthfleet run <campaign.toml>) or pass --state-dir",
            dir.display()
        );
    }
    let local = Local::open(&dir)?;
    let mut campaigns = local.store.metadata.campaigns().await?;
    campaigns.retain(|c| only.as_ref().is_none_or(|name| &c.name == name));
    let mut rows = Vec::new();
    for c in &campaigns {
        let queue = local.queue(&c.name).stats().await?;
        let dead = local.store.metadata.dead_letters(&c.name).await?;
        rows.push((c, queue, dead));
    }
    if args.json {
        let value: Vec<_> = rows
            .iter()
            .map(
                |(c, q, dead)| serde_json::json!({"campaign": c, "queue": q, "dead_letters": dead}),
            )
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no campaigns in {}", dir.display());
    }
    for (c, q, dead) in rows {
        println!(
            "campaign {}  [{}]{}",
            c.name,
            c.state.as_str(),
            c.state_reason
                .as_ref()
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
        println!(
            "  queue    {} waiting, {} in flight, {} dead",
            q.visible, q.in_flight, q.dead
        );
        for letter in dead {
            println!("  dead     {}: {}", letter.key, letter.error);
        }
        println!("  updated  {}", c.updated_at.to_rfc3339());
    }
    Ok(ExitCode::SUCCESS)
}
