//! Scale-in protection of the worker's instance in its Auto Scaling group.

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
