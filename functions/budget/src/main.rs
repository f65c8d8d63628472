//! The budget function: reclaims dead calls' leases, marks campaigns exhausted, sends
//! budget alerts once (`synthfleet_control::budget`).

use std::process::ExitCode;
use synthfleet_control::budget::BudgetGuard;

#[tokio::main]
async fn main() -> ExitCode {
    // Built once per container and shared by every invocation it serves; a setup that
    // fails (a SYNTHFLEET_* variable unset or invalid) is reported to Lambda as an init error.
    synthfleet_control::lambda::run(BudgetGuard::from_env(), BudgetGuard::handle).await
}
