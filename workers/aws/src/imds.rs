//! Notices that an EC2 instance is going away, read from the instance metadata service
//! (IMDSv2: a session token first, then the metadata paths): a Spot interruption
//! (`spot/instance-action`, two minutes ahead), a rebalance recommendation
//! (`events/recommendations/rebalance`) and an Auto Scaling group taking the instance out
//! (`autoscaling/target-lifecycle-state` = `Terminated`).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::time::Duration;
use synthfleet_core::ports::StoreError;

const SERVICE: &str = "EC2 instance metadata";
/// The metadata service's address on every EC2 instance.
pub const IMDS_URL: &str = "http://169.254.169.254";
/// How long a session token lives, seconds (it is asked for again before each poll).
const TOKEN_TTL_S: u32 = 300;

/// Why the instance is going away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Departure {
    /// A Spot interruption: the instance is stopped or terminated at `at`.
    Interruption { action: String, at: DateTime<Utc> },
    /// EC2 recommends rebalancing: the instance is at an elevated risk of interruption.
    Rebalance,
    /// Its Auto Scaling group is terminating it (a scale-in, a refresh, a rebalance).
    ScaleIn,
}

impl Departure {
    /// How long rollouts may still run before the instance goes, if that is known.
    pub fn time_left(&self, now: DateTime<Utc>) -> Option<Duration> {
        match self {
            Departure::Interruption { at, .. } => Some((*at - now).to_std().unwrap_or_default()),
            Departure::Rebalance | Departure::ScaleIn => None,
        }
    }
}

impl std::fmt::Display for Departure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Departure::Interruption { action, at } => {
                write!(f, "Spot interruption notice: {action} at {at}")
            }
            Departure::Rebalance => f.write_str("EC2 rebalance recommendation"),
            Departure::ScaleIn => f.write_str("the Auto Scaling group is terminating the instance"),
        }
    }
}

#[derive(Deserialize)]
struct InstanceAction {
    action: String,
    time: DateTime<Utc>,
}

/// A client of one instance's metadata service.
pub struct InstanceMetadata {
    http: reqwest::Client,
    base: String,
}

impl InstanceMetadata {
    /// `base`: [`IMDS_URL`] on EC2 (another address for tests).
    pub fn new(base: &str) -> InstanceMetadata {
        InstanceMetadata {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn error(&self, what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::backend(SERVICE, format!("{what} at {}", self.base), e)
    }

    /// Whether the instance is going away, and why (the most urgent notice first).
    pub async fn departure(&self) -> Result<Option<Departure>, StoreError> {
        let token = self
            .http
            .put(format!("{}/latest/api/token", self.base))
            .header(
                "X-aws-ec2-metadata-token-ttl-seconds",
                TOKEN_TTL_S.to_string(),
            )
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| self.error("asking for a session token", e))?
            .text()
            .await
            .map_err(|e| self.error("reading a session token", e))?;
        if let Some(body) = self.get(&token, "spot/instance-action").await? {
            let action: InstanceAction = serde_json::from_str(&body)
                .map_err(|e| self.error("reading spot/instance-action", e))?;
            return Ok(Some(Departure::Interruption {
                action: action.action,
                at: action.time,
            }));
        }
        if self
            .get(&token, "autoscaling/target-lifecycle-state")
            .await?
            .is_some_and(|state| state.trim() == "Terminated")
        {
            return Ok(Some(Departure::ScaleIn));
        }
        if self
            .get(&token, "events/recommendations/rebalance")
            .await?
            .is_some()
        {
            return Ok(Some(Departure::Rebalance));
        }
        Ok(None)
    }

    /// A metadata path's value; `None` when it is absent (404: no such notice).
    async fn get(&self, token: &str, path: &str) -> Result<Option<String>, StoreError> {
        let reply = self
            .http
            .get(format!("{}/latest/meta-data/{path}", self.base))
            .header("X-aws-ec2-metadata-token", token)
            .send()
            .await
            .map_err(|e| self.error(&format!("reading {path}"), e))?;
        if reply.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let reply = reply
            .error_for_status()
            .map_err(|e| self.error(&format!("reading {path}"), e))?;
        reply
            .text()
            .await
            .map(Some)
            .map_err(|e| self.error(&format!("reading {path}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_leaves_the_time_until_it_and_the_others_say_nothing() {
        let now = Utc::now();
        let notice = Departure::Interruption {
            action: "terminate".into(),
            at: now + chrono::Duration::seconds(120),
        };
        assert_eq!(notice.time_left(now), Some(Duration::from_secs(120)));
        assert_eq!(
            notice.time_left(now + chrono::Duration::seconds(200)),
            Some(Duration::ZERO),
            "past the notice: no time"
        );
        assert_eq!(Departure::Rebalance.time_left(now), None);
        assert!(notice.to_string().contains("terminate"));
    }
}
