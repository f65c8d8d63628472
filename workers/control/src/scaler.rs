//! The scaler function: every minute, the worker fleet's capacity from the queue's depth
//! and the workers' heartbeats ([`scaling::desired_workers`]: backlog per worker, 0 → 1
//! when work appears, never below the busy workers, `min` only after the fleet idled), set
//! on an Auto Scaling group or an ECS service.
//!
//! The count never drops below the workers with rollouts in flight, but which instance
//! or task a scale-in stops is the group's or the service's choice: give the fleet
//! scale-in protection for busy workers (ECS managed termination protection, or an Auto
//! Scaling lifecycle hook whose SIGTERM lets `synthfleet worker` drain: see docs/AWS.md).

use crate::{BoxError, ControlError, deployment, env_var, log_invocation};
use chrono::{DateTime, TimeDelta, Utc};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use synthfleet_backend::Backend;
use synthfleet_core::budget::CampaignRecord;
use synthfleet_core::ports::{MetadataStore, Queue};
use synthfleet_core::scaling::{FleetView, ScalingPolicy, desired_workers};
use tracing::info;

/// What [`ControlError::Capacity`] says was being done.
const READ: &str = "reading the desired capacity";
const SET: &str = "setting the desired capacity";

/// Where the capacity is set.
pub enum Capacity {
    /// An Auto Scaling group of instances running `synthfleet worker` under systemd.
    Asg {
        client: aws_sdk_autoscaling::Client,
        group: String,
    },
    /// An ECS service of `synthfleet worker` tasks.
    Ecs {
        client: aws_sdk_ecs::Client,
        cluster: String,
        service: String,
    },
}

impl Capacity {
    fn describe(&self) -> String {
        match self {
            Capacity::Asg { group, .. } => format!("Auto Scaling group {group}"),
            Capacity::Ecs {
                cluster, service, ..
            } => format!("ECS service {service} in {cluster}"),
        }
    }

    fn error(&self, operation: &'static str) -> impl FnOnce(BoxError) -> ControlError {
        let target = self.describe();
        move |source| ControlError::Capacity {
            target,
            operation,
            source,
        }
    }

    async fn current(&self) -> Result<u32, ControlError> {
        let count = match self {
            Capacity::Asg { client, group } => client
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(group)
                .send()
                .await
                .map_err(|e| self.error(READ)(e.into()))?
                .auto_scaling_groups()
                .first()
                .and_then(|g| g.desired_capacity()),
            Capacity::Ecs {
                client,
                cluster,
                service,
            } => client
                .describe_services()
                .cluster(cluster)
                .services(service)
                .send()
                .await
                .map_err(|e| self.error(READ)(e.into()))?
                .services()
                .first()
                .map(|s| s.desired_count()),
        };
        let count = count.ok_or_else(|| ControlError::NoCapacity {
            target: self.describe(),
        })?;
        Ok(u32::try_from(count).unwrap_or(0))
    }

    async fn set(&self, desired: u32) -> Result<(), ControlError> {
        let desired = i32::try_from(desired).unwrap_or(i32::MAX);
        match self {
            Capacity::Asg { client, group } => {
                client
                    .set_desired_capacity()
                    .auto_scaling_group_name(group)
                    .desired_capacity(desired)
                    .honor_cooldown(false)
                    .send()
                    .await
                    .map_err(|e| self.error(SET)(e.into()))?;
            }
            Capacity::Ecs {
                client,
                cluster,
                service,
            } => {
                client
                    .update_service()
                    .cluster(cluster)
                    .service(service)
                    .desired_count(desired)
                    .send()
                    .await
                    .map_err(|e| self.error(SET)(e.into()))?;
            }
        }
        Ok(())
    }
}

pub struct Scaler {
    pub queue: Arc<dyn Queue>,
    pub metadata: Arc<dyn MetadataStore>,
    pub capacity: Capacity,
    pub policy: ScalingPolicy,
}

/// One decision, as logged and returned.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Decision {
    pub visible: u64,
    pub in_flight: u64,
    /// Samples of campaigns that accept work: messages beyond them (a paused or
    /// exhausted campaign's, deferred) hold no capacity.
    pub runnable: u64,
    pub current: u32,
    pub desired: u32,
}

impl Scaler {
    /// The deployment named by the function's `SYNTHFLEET_*` environment: the capacity is
    /// `SYNTHFLEET_SCALE_ASG`, or `SYNTHFLEET_SCALE_ECS_CLUSTER` with
    /// `SYNTHFLEET_SCALE_ECS_SERVICE`; the policy `SYNTHFLEET_SCALE_MIN` (0),
    /// `SYNTHFLEET_SCALE_MAX` (10), `SYNTHFLEET_SCALE_TASKS_PER_WORKER` (the workers'
    /// concurrency, 4) and `SYNTHFLEET_SCALE_IDLE_S` (600).
    pub async fn from_env() -> Result<Scaler, ControlError> {
        let (clients, names) = deployment().await?;
        let capacity = match (
            env_var("SYNTHFLEET_SCALE_ASG"),
            env_var("SYNTHFLEET_SCALE_ECS_CLUSTER"),
            env_var("SYNTHFLEET_SCALE_ECS_SERVICE"),
        ) {
            (Some(group), None, None) => Capacity::Asg {
                client: clients.autoscaling.clone(),
                group,
            },
            (None, Some(cluster), Some(service)) => Capacity::Ecs {
                client: aws_sdk_ecs::Client::new(&clients.config),
                cluster,
                service,
            },
            _ => {
                return Err(ControlError::Config {
                    variable: "SYNTHFLEET_SCALE_ASG",
                    problem: "set it (an Auto Scaling group) or SYNTHFLEET_SCALE_ECS_CLUSTER and SYNTHFLEET_SCALE_ECS_SERVICE (an ECS service), not both",
                });
            }
        };
        let number = |name: &'static str, default: u32| -> Result<u32, ControlError> {
            env_var(name).map_or(Ok(default), |v| {
                v.parse().map_err(|source| ControlError::NotACount {
                    variable: name,
                    value: v.clone(),
                    source,
                })
            })
        };
        let policy = ScalingPolicy {
            min: number("SYNTHFLEET_SCALE_MIN", 0)?,
            max: number("SYNTHFLEET_SCALE_MAX", 10)?,
            tasks_per_worker: number("SYNTHFLEET_SCALE_TASKS_PER_WORKER", 4)?,
            idle_before_zero: TimeDelta::seconds(i64::from(number(
                "SYNTHFLEET_SCALE_IDLE_S",
                600,
            )?)),
        };
        let backend = Backend::aws(&clients, names);
        Ok(Scaler {
            // On AWS every campaign shares the one task queue.
            queue: backend.queue(""),
            metadata: backend.store().metadata.clone(),
            capacity,
            policy,
        })
    }

    /// The scheduled invocation: its payload is ignored, what invoked it is logged.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Decision, ControlError> {
        log_invocation("scaler", &event);
        self.run(Utc::now()).await
    }

    pub async fn run(&self, now: DateTime<Utc>) -> Result<Decision, ControlError> {
        let stats = self.queue.stats().await?;
        let beats = self.metadata.heartbeats().await?;
        let runnable = self
            .metadata
            .campaigns()
            .await?
            .iter()
            .map(CampaignRecord::runnable)
            .sum();
        let current = self.capacity.current().await?;
        let desired = desired_workers(
            &self.policy,
            &FleetView {
                visible: stats.visible,
                in_flight: stats.in_flight,
                runnable,
                beats: &beats,
                current,
                now,
            },
        );
        if desired != current {
            self.capacity.set(desired).await?;
            info!(target = %self.capacity.describe(), current, desired, visible = stats.visible, in_flight = stats.in_flight, runnable, "fleet capacity changed");
        }
        Ok(Decision {
            visible: stats.visible,
            in_flight: stats.in_flight,
            runnable,
            current,
            desired,
        })
    }
}
