//! `synthfleet validate`: every check `run` would make before starting, and no more.

use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use synthfleet_agent::Templates;
use synthfleet_core::campaign::Campaign;
use synthfleet_llm::ModelPool;

pub async fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let campaign = Campaign::load(path)?;
    let templates = Templates::of(&campaign).context("loading the scaffold's prompt templates")?;
    ModelPool::new(&campaign.config.models).context("checking the model pool")?;
    let images: std::collections::BTreeSet<&str> =
        campaign.tasks.iter().map(|t| t.image.as_str()).collect();
    let no_eval = campaign.tasks.iter().filter(|t| t.eval.is_none()).count();
    println!(
        "{}: valid. {} tasks x {} samples, {} models, budget ${}, templates {}",
        path.display(),
        campaign.tasks.len(),
        campaign.config.samples_per_task,
        campaign.config.models.len(),
        campaign.config.budget_usd,
        &templates.hash()[..12]
    );
    println!(
        "images: {}",
        images.into_iter().collect::<Vec<_>>().join(", ")
    );
    if no_eval > 0 {
        println!(
            "warning: {no_eval} tasks have no eval script; their trajectories cannot be verified"
        );
    }
    Ok(ExitCode::SUCCESS)
}
