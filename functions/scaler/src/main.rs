//! The scaler function: sets the worker fleet's capacity from the queue and the workers'
//! heartbeats (`synthfleet_control::scaler`).

use lambda_runtime::{Error, service_fn};
use synthfleet_control::scaler::Scaler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    synthfleet_control::init_logging();
    // Built once per container, shared by every invocation it serves.
    let scaler = &Scaler::from_env().await?;
    lambda_runtime::run(service_fn(move |event| scaler.handle(event))).await
}
