//! Scale-in protection of a busy worker: its instance in an Auto Scaling group, or its
//! task in an ECS service.

use crate::aws_error;
use async_trait::async_trait;
use synthfleet_core::ports::{ScaleInProtection, StoreError};

const BACKEND: &str = "Auto Scaling";

/// The instance a worker runs on, in its group (the boot script passes the instance id
/// from the instance metadata: `SYNTHFLEET_INSTANCE_ID`).
pub struct AsgProtection {
    client: aws_sdk_autoscaling::Client,
    group: String,
    instance_id: String,
}

impl AsgProtection {
    pub fn new(
        client: aws_sdk_autoscaling::Client,
        group: &str,
        instance_id: &str,
    ) -> AsgProtection {
        AsgProtection {
            client,
            group: group.to_owned(),
            instance_id: instance_id.to_owned(),
        }
    }
}

#[async_trait]
impl ScaleInProtection for AsgProtection {
    async fn set_protected(&self, protected: bool) -> Result<(), StoreError> {
        self.client
            .set_instance_protection()
            .auto_scaling_group_name(&self.group)
            .instance_ids(&self.instance_id)
            .protected_from_scale_in(protected)
            .send()
            .await
            .map_err(|e| {
                aws_error(
                    BACKEND,
                    format!(
                        "setting the scale-in protection of {} in {}",
                        self.instance_id, self.group
                    ),
                    e,
                )
            })?;
        Ok(())
    }
}

/// The worker's ECS task, kept out of service scale-ins through the ECS agent's task
/// protection endpoint (`$ECS_AGENT_URI/task-protection/v1/state`, set in every task).
pub struct EcsTaskProtection {
    http: reqwest::Client,
    agent_uri: String,
}

impl EcsTaskProtection {
    /// Protection is asked for this long and renewed with every heartbeat while busy.
    const EXPIRES_IN_MINUTES: u32 = 60;

    pub fn new(agent_uri: &str) -> EcsTaskProtection {
        EcsTaskProtection {
            http: reqwest::Client::new(),
            agent_uri: agent_uri.trim_end_matches('/').to_owned(),
        }
    }
}

#[async_trait]
impl ScaleInProtection for EcsTaskProtection {
    async fn set_protected(&self, protected: bool) -> Result<(), StoreError> {
        let url = format!("{}/task-protection/v1/state", self.agent_uri);
        let mut body = serde_json::json!({ "ProtectionEnabled": protected });
        if protected {
            body["ExpiresInMinutes"] = Self::EXPIRES_IN_MINUTES.into();
        }
        let response = self
            .http
            .put(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| aws_error("ECS agent", format!("PUT {url}"), e))?;
        if !response.status().is_success() {
            return Err(StoreError::backend(
                "ECS agent",
                format!("PUT {url}"),
                format!("status {}", response.status()),
            ));
        }
        Ok(())
    }
}
