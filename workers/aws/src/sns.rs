//! Commit events on an SNS topic: one message per committed trajectory (the
//! [`CommitEvents`] port), for subscribers that want trajectories as they land — a trainer
//! behind an SQS queue, a Lambda. Best effort: a message that cannot be published is logged
//! and dropped; `synthfleet tail` is the reliable path (docs/streaming.md).

use crate::aws_error;
use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;
use serde::Serialize;
use synthfleet_core::error_chain;
use synthfleet_core::ports::{CommitEvents, StoreError, TrajectoryMeta};
use synthfleet_core::trajectory::RecordStatus;
use tracing::warn;

/// The version of [`CommitEvent`]'s shape.
pub const COMMIT_EVENT_SCHEMA: u32 = 1;

/// The body of a commit event (JSON).
#[derive(Debug, Serialize)]
pub struct CommitEvent<'a> {
    pub schema: u32,
    pub campaign: &'a str,
    pub trajectory_id: &'a str,
    pub instance_id: &'a str,
    pub sample_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'a str>,
    pub status: RecordStatus,
    pub resolved: Option<bool>,
    pub reward: Option<f64>,
    /// The record's S3 key (in the deployment's bucket).
    pub object_key: &'a str,
    pub sha256: &'a str,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// `synthfleet tail <campaign> --since <cursor>` continues after this trajectory.
    pub cursor: String,
}

impl<'a> CommitEvent<'a> {
    pub fn of(meta: &'a TrajectoryMeta) -> CommitEvent<'a> {
        let summary = &meta.summary;
        CommitEvent {
            schema: COMMIT_EVENT_SCHEMA,
            campaign: &summary.campaign,
            trajectory_id: &summary.trajectory_id,
            instance_id: &summary.instance_id,
            sample_index: summary.sample_index,
            variant: summary.variant.as_deref(),
            status: meta.status,
            resolved: meta.resolved,
            reward: meta.reward,
            object_key: &meta.object_key,
            sha256: &meta.sha256,
            created_at: summary.created_at,
            cursor: crate::dynamo::commit_cursor(meta).encode(),
        }
    }

    /// The message attributes subscribers filter on: `campaign`, `status`, and `resolved`
    /// (`true` / `false`) and `variant` when the trajectory has them.
    fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("campaign", self.campaign.to_owned()),
            ("status", self.status.as_str().to_owned()),
        ];
        if let Some(resolved) = self.resolved {
            out.push(("resolved", resolved.to_string()));
        }
        if let Some(variant) = self.variant {
            out.push(("variant", variant.to_owned()));
        }
        out
    }
}

/// Publishes every commit to one topic.
pub struct SnsCommitEvents {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsCommitEvents {
    pub fn new(config: &aws_config::SdkConfig, topic_arn: &str) -> SnsCommitEvents {
        SnsCommitEvents {
            client: aws_sdk_sns::Client::new(config),
            topic_arn: topic_arn.to_owned(),
        }
    }

    async fn publish(&self, meta: &TrajectoryMeta) -> Result<(), StoreError> {
        let event = CommitEvent::of(meta);
        let operation = || {
            format!(
                "publishing the commit of trajectory {} to {}",
                event.trajectory_id, self.topic_arn
            )
        };
        let body = serde_json::to_string(&event).map_err(|e| aws_error("SNS", operation(), e))?;
        let mut publish = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(body);
        for (name, value) in event.attributes() {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| aws_error("SNS", operation(), e))?;
            publish = publish.message_attributes(name, value);
        }
        publish
            .send()
            .await
            .map_err(|e| aws_error("SNS", operation(), e))?;
        Ok(())
    }
}

#[async_trait]
impl CommitEvents for SnsCommitEvents {
    async fn committed(&self, meta: &TrajectoryMeta) {
        if let Err(e) = self.publish(meta).await {
            warn!(
                error = %error_chain(&e),
                trajectory = %meta.summary.trajectory_id,
                "the commit event was not published (not retried); `synthfleet tail` lists the trajectory"
            );
        }
    }
}
