//! `synthfleet pause` / `resume` / `redrive`: stop and restart a campaign's work, and give
//! its dead-lettered samples fresh attempts. Workers take no new task of a paused campaign
//! (its messages wait without counting attempts); rollouts already running finish.

use anyhow::Context;
use clap::Args;
use std::process::ExitCode;
use synthfleet_backend::Backend;
use synthfleet_core::budget::{CampaignRecord, CampaignState};
use synthfleet_term::BackendArgs;

#[derive(Args)]
pub struct ControlArgs {
    /// The campaign's name.
    campaign: String,
    #[command(flatten)]
    backend: BackendArgs,
    /// Why (recorded in the campaign state; `pause` only).
    #[arg(long)]
    reason: Option<String>,
}

/// The backend and the campaign item named by the arguments.
async fn open(args: &ControlArgs) -> anyhow::Result<(Backend, CampaignRecord)> {
    let backend = Backend::open_existing(&args.backend.config()?, None).await?;
    let record = backend
        .store()
        .metadata
        .campaign(&args.campaign)
        .await?
        .with_context(|| format!("no campaign `{}` ({})", args.campaign, backend.describe()))?;
    Ok((backend, record))
}

pub async fn pause(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let (backend, record) = open(&args).await?;
    let metadata = &backend.store().metadata;
    if record.state != CampaignState::Running {
        anyhow::bail!(
            "campaign `{}` is {}, not running: nothing to pause",
            record.name,
            record.state.as_str()
        );
    }
    let reason = args
        .reason
        .unwrap_or_else(|| "paused by an operator".into());
    if !metadata
        .set_state(&record.name, CampaignState::Paused, Some(reason.clone()))
        .await?
    {
        anyhow::bail!(
            "campaign `{}` stopped running meanwhile (see `synthfleet status`): nothing to pause",
            record.name
        );
    }
    println!(
        "campaign {} paused: {reason}; rollouts already running finish, no new task starts",
        record.name
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let (backend, record) = open(&args).await?;
    let metadata = &backend.store().metadata;
    match record.state {
        CampaignState::Paused => {}
        CampaignState::Exhausted => anyhow::bail!(
            "campaign `{}` is out of budget ({} of {} spent): raise budget_usd in its file and submit or run it again",
            record.name,
            record.ledger.spent,
            record.ledger.budget
        ),
        other => anyhow::bail!(
            "campaign `{}` is {}, not paused",
            record.name,
            other.as_str()
        ),
    }
    if !metadata
        .set_state(&record.name, CampaignState::Running, None)
        .await?
    {
        anyhow::bail!(
            "campaign `{}` is no longer paused (see `synthfleet status`)",
            record.name
        );
    }
    println!("campaign {} resumed", record.name);
    Ok(ExitCode::SUCCESS)
}

pub async fn redrive(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let (backend, record) = open(&args).await?;
    let queue = backend.queue(&record.name);
    let report = synthfleet_core::redrive::redrive(
        queue.as_ref(),
        backend.store().metadata.as_ref(),
        &record.name,
    )
    .await
    .with_context(|| format!("redriving campaign `{}`", record.name))?;
    println!(
        "campaign {}: {} dead-lettered samples moved back to the queue with fresh attempts{}",
        record.name,
        report.moved.len(),
        if report.reopened {
            " (the campaign runs again)"
        } else {
            ""
        }
    );
    for letter in &report.missing {
        println!(
            "  {}: its message is no longer in the dead-letter queue; it stays dead-lettered (submit the campaign again under a new name to retry it)",
            letter.key
        );
    }
    if report.moved.is_empty() && report.missing.is_empty() {
        println!("  nothing to redrive");
    }
    Ok(ExitCode::SUCCESS)
}
