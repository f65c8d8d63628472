//! The enqueue function: campaign uploads, schedule firings and direct calls become
//! enqueued campaign runs (`synthfleet_control::enqueue`).

use std::process::ExitCode;
use synthfleet_control::enqueue::Enqueuer;

#[tokio::main]
async fn main() -> ExitCode {
    // Built once per container and shared by every invocation it serves; a setup that
    // fails (a SYNTHFLEET_* variable unset or invalid) is reported to Lambda as an init error.
    synthfleet_control::lambda::run(Enqueuer::from_env(), Enqueuer::handle).await
}
