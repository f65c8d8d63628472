//! The enqueue function: campaign uploads, schedule firings and direct calls become
//! enqueued campaign runs (`synthfleet_control::enqueue`).

use lambda_runtime::{Error, service_fn};
use synthfleet_control::enqueue::Enqueuer;

#[tokio::main]
async fn main() -> Result<(), Error> {
    synthfleet_control::init_logging();
    // Built once per container, shared by every invocation it serves.
    let enqueuer = &Enqueuer::from_env().await?;
    lambda_runtime::run(service_fn(move |event| enqueuer.handle(event))).await
}
