//! The budget function: reclaims dead calls' leases, marks campaigns exhausted, sends
//! budget alerts once (`synthfleet_control::budget`).

use lambda_runtime::{Error, service_fn};
use synthfleet_control::budget::BudgetGuard;

#[tokio::main]
async fn main() -> Result<(), Error> {
    synthfleet_control::init_logging();
    // Built once per container, shared by every invocation it serves.
    let guard = &BudgetGuard::from_env().await?;
    lambda_runtime::run(service_fn(move |event| guard.handle(event))).await
}
