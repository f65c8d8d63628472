//! `synthfleet show`: a readable view of one trajectory.

use anyhow::Context;
use clap::Args;
use std::process::ExitCode;
use synthfleet_backend::Backend;
use synthfleet_term::BackendArgs;
use synthfleet_term::render::render;

#[derive(Args)]
pub struct ShowArgs {
    /// Trajectory id (or a unique prefix of it).
    trajectory_id: String,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print the whole record as JSON.
    #[arg(long)]
    json: bool,
    /// Also print the full message list (prompts and replies).
    #[arg(long)]
    messages: bool,
}

pub async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let backend = Backend::open_existing(&args.backend.config()?, None).await?;
    let store = backend.store();
    let meta = store
        .metadata
        .trajectory(&args.trajectory_id)
        .await?
        .with_context(|| {
            format!(
                "no single trajectory matches `{}` ({}); list them with `synthfleet status --json`",
                args.trajectory_id,
                backend.describe()
            )
        })?;
    let record = store.load(&meta).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print!("{}", render(&record, args.messages));
    }
    Ok(ExitCode::SUCCESS)
}
