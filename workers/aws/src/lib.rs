//! AWS backends behind the core ports: [`S3ObjectStore`], [`SqsQueue`],
//! [`DynamoMetadata`], [`AsgProtection`] (a busy worker's instance kept out of
//! scale-ins) and [`SnsCommitEvents`] (commit events), plus [`provision`] to create the
//! resources on LocalStack or moto (the LocalStack init script creates the same).
//!
//! Clients come from the standard chain (`aws-config`): region, credentials and
//! `AWS_ENDPOINT_URL` from the environment. S3 uses path-style addressing when an endpoint
//! override is set (LocalStack, moto) or `SYNTHFLEET_S3_PATH_STYLE=1`.

mod asg;
pub mod dynamo;
pub mod imds;
pub mod provision;
mod s3;
mod sns;
mod sqs;

pub use asg::{AsgProtection, EcsTaskProtection};
pub use dynamo::DynamoMetadata;
pub use s3::{FAILED_TAG, S3ObjectStore};
pub use sns::{COMMIT_EVENT_SCHEMA, CommitEvent, SnsCommitEvents};
pub use sqs::SqsQueue;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
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

/// A failed AWS call as a store error: `service` and `operation` (what was done, on which
/// bucket and key, table and item, or queue URL) are its context, and the SDK's error is
/// kept whole as its source — [`sdk_error`] gets it back (`as_service_error()`, the error
/// code), and the edge prints the chain once.
pub(crate) fn aws_error(
    service: &'static str,
    operation: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::backend(service, operation, e)
}

/// The SDK error of an operation behind a store error of an AWS call, if that is what
/// failed: `sdk_error::<GetItemError>(&e).and_then(|e| e.as_service_error())`.
pub fn sdk_error<E: std::error::Error + 'static>(
    e: &StoreError,
) -> Option<&SdkError<E, HttpResponse>> {
    match e {
        StoreError::Backend { source, .. } => source.downcast_ref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{aws_error, sdk_error};
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::SdkError;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_sdk_dynamodb::types::error::ResourceNotFoundException;

    #[test]
    fn the_sdk_error_stays_the_source_of_a_store_error() {
        let service = GetItemError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("Requested resource not found")
                .build(),
        );
        let body = aws_sdk_s3::primitives::ByteStream::from_static(b"").into_inner();
        let raw = HttpResponse::new(400u16.try_into().expect("a status"), body);
        let e = aws_error(
            "DynamoDB",
            "reading CAMPAIGN#c/TRAJ#1 from synthfleet",
            SdkError::service_error(service, raw),
        );
        let sdk = sdk_error::<GetItemError>(&e).expect("the SDK error is kept");
        assert!(matches!(
            sdk.as_service_error(),
            Some(GetItemError::ResourceNotFoundException(_))
        ));
        assert!(sdk_error::<aws_sdk_dynamodb::operation::query::QueryError>(&e).is_none());
        // Printed at the edge with every cause.
        let chain = synthfleet_core::error_chain(&e);
        assert!(
            chain.starts_with(
                "DynamoDB failed during reading CAMPAIGN#c/TRAJ#1 from synthfleet: service error"
            ),
            "{chain}"
        );
        assert!(chain.contains("Requested resource not found"), "{chain}");
        // The same text the SDK error turned into a string gave before.
        assert_eq!(
            chain,
            format!(
                "DynamoDB failed during reading CAMPAIGN#c/TRAJ#1 from synthfleet: {}",
                synthfleet_core::error_chain(sdk)
            )
        );
    }
}
