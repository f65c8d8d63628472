//! `synthfleet submit`: validate a campaign and enqueue it, through the same core path the
//! enqueue function uses. Re-submitting never enqueues a sample twice.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use synthfleet_backend::Backend;
use synthfleet_term::BackendArgs;

#[derive(Args)]
pub struct SubmitArgs {
    /// The campaign file (TOML).
    campaign: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let campaign = synthfleet_tasks::load_campaign(&args.campaign)?;
    let backend = Backend::open(&args.backend.config()?, Some(&campaign)).await?;
    let report = backend.submit(&campaign).await?;
    if !report.excluded.is_empty() {
        println!(
            "left out {} task(s) that gold validation found broken: {}",
            report.excluded.len(),
            report.excluded.join(", ")
        );
    }
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
