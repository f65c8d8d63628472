//! The finalize function: marks finished campaigns `done`, records their totals and
//! launches their quality jobs as an ECS task (`synthfleet_control::finalize`).

use std::process::ExitCode;
use synthfleet_control::finalize::Finalizer;

#[tokio::main]
async fn main() -> ExitCode {
    // Built once per container and shared by every invocation it serves; a setup that
    // fails (a SYNTHFLEET_* variable unset or invalid) is reported to Lambda as an init error.
    synthfleet_control::lambda::run(Finalizer::from_env(), Finalizer::handle).await
}
