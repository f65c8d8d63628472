//! Flags both binaries take: where the state lives.

use clap::Args;
use std::path::PathBuf;
use synthfleet_backend::{BackendConfig, BackendError};

#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Where queue, metadata and trajectories live.
    #[arg(long, env = "SYNTHFLEET_BACKEND", default_value = "local", value_parser = ["local", "aws"])]
    pub backend: String,
    /// Local state directory (default: the campaign's [storage] dir, or ./.synthfleet).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// S3 bucket for trajectories (aws).
    #[arg(long, env = "SYNTHFLEET_BUCKET")]
    pub bucket: Option<String>,
    /// DynamoDB table for metadata (aws).
    #[arg(long, env = "SYNTHFLEET_TABLE")]
    pub table: Option<String>,
    /// SQS task queue URL (aws).
    #[arg(long, env = "SYNTHFLEET_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// SQS dead-letter queue URL (aws).
    #[arg(long, env = "SYNTHFLEET_DLQ_URL")]
    pub dead_letter_queue_url: Option<String>,
}

impl BackendArgs {
    pub fn config(&self) -> Result<BackendConfig, BackendError> {
        Ok(BackendConfig {
            kind: self.backend.parse()?,
            state_dir: self.state_dir.clone(),
            bucket: self.bucket.clone(),
            table: self.table.clone(),
            queue_url: self.queue_url.clone(),
            dead_letter_queue_url: self.dead_letter_queue_url.clone(),
        })
    }
}
