//! Creates a deployment's resources on LocalStack or moto. Terraform (`infra/`) is the
//! deployment's source of truth; these shapes, and those of
//! `localstack/init/ready.d/10-synthfleet.sh`, match it (`tests/infra.rs` checks all
//! three): one bucket (failed objects expire after 30 days), one table ([`TABLE`]), a
//! task queue whose redrive policy moves a message to the dead-letter queue after
//! `max_receives` deliveries.

use crate::dynamo::{INDEX_BY_COMMIT, INDEX_BY_KIND, INDEX_BY_STATUS, INDEX_BY_TRAJECTORY};
use crate::s3::FAILED_TAG;
use crate::{AwsClients, AwsNames, aws_error};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, Tag,
};
use aws_sdk_sqs::types::QueueAttributeName;
use synthfleet_core::ports::StoreError;
use synthfleet_core::store::FAILED_RETENTION_DAYS;

/// A global secondary index: its name and key attributes (strings; projection ALL).
pub struct IndexShape {
    pub name: &'static str,
    pub hash: &'static str,
    pub range: Option<&'static str>,
}

/// The metadata table: key attributes, indexes, TTL attribute (billing on demand).
pub struct TableShape {
    pub hash: &'static str,
    pub range: &'static str,
    pub indexes: &'static [IndexShape],
    pub ttl: &'static str,
}

pub const TABLE: TableShape = TableShape {
    hash: "pk",
    range: "sk",
    indexes: &[
        IndexShape {
            name: INDEX_BY_KIND,
            hash: "kind",
            range: Some("sk"),
        },
        IndexShape {
            name: INDEX_BY_TRAJECTORY,
            hash: "trajectory_id",
            range: None,
        },
        IndexShape {
            name: INDEX_BY_STATUS,
            hash: "campaign_status",
            range: Some("created_at"),
        },
        IndexShape {
            name: INDEX_BY_COMMIT,
            hash: "campaign",
            range: Some("commit_order"),
        },
    ],
    ttl: "ttl",
};

/// Both queues keep messages 14 days (SQS's most); receives long-poll 20 s.
pub const QUEUE_RETENTION_S: u32 = 1_209_600;
pub const QUEUE_RECEIVE_WAIT_S: u32 = 20;

/// The resource names for a prefix (bucket, table, queue, dead-letter queue).
pub fn default_names(prefix: &str) -> (String, String, String, String) {
    (
        format!("{prefix}-trajectories"),
        format!("{prefix}-metadata"),
        format!("{prefix}-tasks"),
        format!("{prefix}-tasks-dlq"),
    )
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| aws_error("DynamoDB", "building a key schema", e))
}

fn attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| aws_error("DynamoDB", "building an attribute definition", e))
}

fn index(shape: &IndexShape) -> Result<GlobalSecondaryIndex, StoreError> {
    let mut keys = vec![key(shape.hash, KeyType::Hash)?];
    if let Some(range) = shape.range {
        keys.push(key(range, KeyType::Range)?);
    }
    GlobalSecondaryIndex::builder()
        .index_name(shape.name)
        .set_key_schema(Some(keys))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| aws_error("DynamoDB", "building an index", e))
}

/// Creates (or finds) the bucket, table and queues with these names; returns the names
/// with the queue URLs filled in.
pub async fn ensure(
    clients: &AwsClients,
    bucket: &str,
    table: &str,
    queue: &str,
    dead_letter_queue: &str,
    max_receives: u32,
) -> Result<AwsNames, StoreError> {
    // Bucket, with the retention rule for failed trajectories.
    if clients
        .s3
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .is_err()
    {
        clients
            .s3
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| aws_error("S3", format!("creating bucket {bucket}"), e))?;
    }
    let tag = Tag::builder()
        .key(FAILED_TAG.0)
        .value(FAILED_TAG.1)
        .build()
        .map_err(|e| aws_error("S3", "building a tag", e))?;
    let rule = LifecycleRule::builder()
        .id("expire-failed-trajectories")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().tag(tag).build())
        .expiration(
            LifecycleExpiration::builder()
                .days(FAILED_RETENTION_DAYS as i32)
                .build(),
        )
        .build()
        .map_err(|e| aws_error("S3", "building a lifecycle rule", e))?;
    let lifecycle = BucketLifecycleConfiguration::builder()
        .rules(rule)
        .build()
        .map_err(|e| aws_error("S3", "building a lifecycle configuration", e))?;
    clients
        .s3
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(lifecycle)
        .send()
        .await
        .map_err(|e| aws_error("S3", format!("setting the lifecycle of {bucket}"), e))?;

    // Table.
    if clients
        .dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .is_err()
    {
        let mut attributes = vec![TABLE.hash, TABLE.range];
        for index in TABLE.indexes {
            attributes.extend([index.hash].into_iter().chain(index.range));
        }
        attributes.sort_unstable();
        attributes.dedup();
        clients
            .dynamodb
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(TABLE.hash, KeyType::Hash)?)
            .key_schema(key(TABLE.range, KeyType::Range)?)
            .set_attribute_definitions(Some(
                attributes
                    .into_iter()
                    .map(attribute)
                    .collect::<Result<Vec<_>, _>>()?,
            ))
            .set_global_secondary_indexes(Some(
                TABLE
                    .indexes
                    .iter()
                    .map(index)
                    .collect::<Result<Vec<_>, _>>()?,
            ))
            .send()
            .await
            .map_err(|e| aws_error("DynamoDB", format!("creating table {table}"), e))?;
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TABLE.ttl)
                    .build()
                    .map_err(|e| aws_error("DynamoDB", "building a TTL specification", e))?,
            )
            .send()
            .await
            .map_err(|e| aws_error("DynamoDB", format!("enabling TTL on {table}"), e))?;
    }

    // Queues: the dead-letter queue first, then the task queue redriving into it.
    let dlq = clients
        .sqs
        .create_queue()
        .queue_name(dead_letter_queue)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            QUEUE_RETENTION_S.to_string(),
        )
        .send()
        .await
        .map_err(|e| aws_error("SQS", format!("creating queue {dead_letter_queue}"), e))?;
    let dlq_url = dlq.queue_url().unwrap_or_default().to_owned();
    let dlq_arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws_error("SQS", format!("reading the ARN of {dead_letter_queue}"), e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let redrive =
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives})
            .to_string();
    let main = clients
        .sqs
        .create_queue()
        .queue_name(queue)
        .attributes(QueueAttributeName::VisibilityTimeout, "300")
        .attributes(
            QueueAttributeName::ReceiveMessageWaitTimeSeconds,
            QUEUE_RECEIVE_WAIT_S.to_string(),
        )
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            QUEUE_RETENTION_S.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .map_err(|e| aws_error("SQS", format!("creating queue {queue}"), e))?;
    Ok(AwsNames {
        bucket: bucket.to_owned(),
        table: table.to_owned(),
        queue_url: main.queue_url().unwrap_or_default().to_owned(),
        dead_letter_queue_url: dlq_url,
    })
}
