//! `synthfleet`: the binary edge. Parses arguments, wires adapters, reports errors.

mod control;
mod gc;
mod jobs;
mod run;
mod status;
mod submit;
mod tail;
mod validate;
mod worker;

mod show;

use synthfleet_term::entry::{self, LogArgs};
use synthfleet_term::logging;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "synthfleet",
    version,
    about = "Generate verified agent trajectories in Docker sandboxes, at scale."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a campaign on this machine with the embedded local backends.
    Run(run::RunArgs),
    /// Validate a campaign and enqueue it (for workers; `--backend aws` for a fleet).
    Submit(submit::SubmitArgs),
    /// Serve the shared task queue until stopped (the fleet daemon).
    Worker(worker::WorkerArgs),
    /// Stop handing out a campaign's tasks (running rollouts finish).
    Pause(control::ControlArgs),
    /// Hand out a paused campaign's tasks again.
    Resume(control::ControlArgs),
    /// Move a campaign's dead-lettered samples back to its queue, with fresh attempts.
    Redrive(control::ControlArgs),
    /// Show campaigns, budgets, counts and queue depth.
    Status(status::StatusArgs),
    /// Show one trajectory (verified against its checksum).
    Show(show::ShowArgs),
    /// Print a campaign's committed trajectories as JSON lines in commit order, each with
    /// a cursor to resume after it; `--follow` keeps printing them as they land.
    Tail(tail::TailArgs),
    /// Check a campaign file and its task files; `--gold` also checks each task's harness.
    Validate(validate::ValidateArgs),
    /// Run the quality stages (and the LLM judge, if configured) and record the verdicts.
    Assess(jobs::JobArgs),
    /// Report on a campaign: text, JSON or an HTML dashboard.
    Report(jobs::JobArgs),
    /// Export a campaign's trajectories as Parquet or a Hugging Face dataset.
    Export(jobs::JobArgs),
    /// Assess, then publish the report and a Hugging Face export into the campaign's store.
    Publish(jobs::JobArgs),
    /// Human review: draw a stratified sample, record verdicts.
    Review(jobs::JobArgs),
    /// Delete failed trajectories past their 30-day retention from the local store.
    Gc(gc::GcArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log.log_format;
    // `run` installs logging itself, once it knows whether a progress bar is drawn.
    if !matches!(cli.command, Command::Run(_)) {
        logging::init(log_format, None);
    }
    entry::run(async {
        match cli.command {
            Command::Run(args) => run::run(args, log_format).await,
            Command::Submit(args) => submit::submit(args).await,
            Command::Worker(args) => worker::worker(args, log_format).await,
            Command::Pause(args) => control::pause(args).await,
            Command::Resume(args) => control::resume(args).await,
            Command::Redrive(args) => control::redrive(args).await,
            Command::Status(args) => status::status(args).await,
            Command::Show(args) => show::show(args).await,
            Command::Tail(args) => tail::tail(args).await,
            Command::Validate(args) => validate::validate(args).await,
            Command::Assess(args) => jobs::forward("assess", args, log_format),
            Command::Report(args) => jobs::forward("report", args, log_format),
            Command::Export(args) => jobs::forward("export", args, log_format),
            Command::Publish(args) => jobs::forward("publish", args, log_format),
            Command::Review(args) => jobs::forward("review", args, log_format),
            Command::Gc(args) => gc::gc(args).await,
        }
    })
}
