//! The scaler function: sets the worker fleet's capacity from the queue and the workers'
//! heartbeats (`synthfleet_control::scaler`).

use std::process::ExitCode;
use synthfleet_control::scaler::Scaler;

#[tokio::main]
async fn main() -> ExitCode {
    // Built once per container and shared by every invocation it serves; a setup that
    // fails (a SYNTHFLEET_* variable unset or invalid) is reported to Lambda as an init error.
    synthfleet_control::lambda::run(Scaler::from_env(), Scaler::handle).await
}
