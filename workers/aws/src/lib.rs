//! AWS backends behind the core ports: [`S3ObjectStore`], [`SqsQueue`],
//! [`DynamoMetadata`] and [`AsgProtection`] (a busy worker's instance kept out of
//! scale-ins), plus [`provision`] to create the resources on LocalStack or moto (the
//! LocalStack init script creates the same).
//!
//! Clients come from the standard chain (`aws-config`): region, credentials and
//! `AWS_ENDPOINT_URL` from the environment. S3 uses path-style addressing when an endpoint
//! override is set (LocalStack, moto) or `SYNTHFLEET_S3_PATH_STYLE=1`.

mod asg;
pub mod dynamo;
pub mod provision;
mod s3;
mod sqs;

pub use asg::{AsgProtection, EcsTaskProtection};
pub use dynamo::DynamoMetadata;
pub use s3::{FAILED_TAG, S3ObjectStore};
pub use sqs::SqsQueue;

use synthfleet_core::ports::StoreError;

/// The names of a deployment's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNames {
    pub bucket: String,
    pub table: String,
    pub queue_url: String,
    pub dead_letter_queue_url: String,
}

/// One client per service for the process.
#[derive(Clone)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// The configuration they were built from, for clients of other services.
    pub config: aws_config::SdkConfig,
}

impl AwsClients {
    /// Clients configured from the environment (the standard chain).
    pub async fn from_env() -> AwsClients {
        let config = aws_config::load_from_env().await;
        let path_style = std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var("SYNTHFLEET_S3_PATH_STYLE").is_ok_and(|v| v == "1" || v == "true");
        AwsClients::from_sdk_config(&config, path_style)
    }

    pub fn from_sdk_config(config: &aws_config::SdkConfig, s3_path_style: bool) -> AwsClients {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(s3_path_style)
            .build();
        AwsClients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            config: config.clone(),
        }
    }
}

/// The error and its causes on one line (the SDK's `Display` is terse).
pub(crate) fn aws_error(
    backend: &'static str,
    operation: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::backend(backend, operation, synthfleet_core::error_chain(&e))
}
