//! The finalize function: marks finished campaigns `done`, records their totals and
//! launches their quality jobs as an ECS task (`synthfleet_control::finalize`).

use lambda_runtime::{Error, service_fn};
use synthfleet_control::finalize::Finalizer;

#[tokio::main]
async fn main() -> Result<(), Error> {
    synthfleet_control::init_logging();
    // Built once per container, shared by every invocation it serves.
    let finalizer = &Finalizer::from_env().await?;
    lambda_runtime::run(service_fn(move |event| finalizer.handle(event))).await
}
