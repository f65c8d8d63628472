//! `synthfleet submit`: validate a campaign and enqueue it, through the same core path the
//! enqueue function uses. Re-submitting never enqueues a sample twice.

use crate::backend::{Backend, BackendArgs};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use synthfleet_agent::Templates;
use synthfleet_core::campaign::Campaign;
use synthfleet_core::submit::{CampaignSpec, enqueue_campaign, put_spec};

#[derive(Args)]
pub struct SubmitArgs {
    /// The campaign file (TOML).
    campaign: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let campaign = Campaign::load(&args.campaign)?;
    let templates = Templates::overrides_of(&campaign).context("reading template overrides")?;
    // Fail here, not on every worker, if a template does not compile.
    Templates::new(&templates).context("checking the prompt templates")?;
    let backend = Backend::open(&args.backend, Some(&campaign)).await?;
    let spec = CampaignSpec {
        config: campaign.config.clone(),
        templates,
    };
    put_spec(backend.store().objects.as_ref(), &spec)
        .await
        .context("storing the campaign spec for workers")?;
    let queue = backend.queue(campaign.name());
    let report = enqueue_campaign(&campaign, queue.as_ref(), backend.store().metadata.as_ref())
        .await
        .context("enqueueing the campaign")?;
    println!(
        "campaign {}: {} enqueued, {} already done, {} already queued ({})",
        campaign.name(),
        report.enqueued,
        report.already_done,
        report.already_queued,
        backend.describe()
    );
    Ok(ExitCode::SUCCESS)
}
