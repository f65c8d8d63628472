//! The budget function: run on a schedule (every few minutes).
//!
//! 1. Reclaims the budget slices whose holder is gone (its heartbeat is stale, or it
//!    stopped renewing the slice), at their full amount, so `reserved` returns to what live
//!    holders hold ([`liveness::reclaim_leases`], the rule the workers run too), then audits
//!    every ledger: `reserved` must equal what the leases hold, and a difference is logged
//!    with the numbers and repaired ([`liveness::audit_ledgers`], the workers run it too).
//! 2. Marks a running campaign whose spend reached its cap `exhausted`, saying why (the
//!    ledger's own rule, [`CampaignRecord::settle`]).
//! 3. Sends each budget alert (50 / 80 / 100 % of the cap) once, every threshold crossed
//!    even when spend jumps past several between two runs (one message per threshold,
//!    lowest first): each is claimed on the campaign item first, then published — at
//!    most once, never twice.
//!
//! Its payload is ignored (every invocation does the same work); what invoked it is
//! logged ([`crate::log_invocation`]).

use crate::{ControlError, deployment, env_var, log_invocation};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use synthfleet_backend::Backend;
use synthfleet_core::budget::CampaignRecord;
use synthfleet_core::liveness::{self, Reclaim};
use synthfleet_core::ports::MetadataStore;
use tracing::{info, warn};

/// Where budget alerts go.
pub struct AlertTopic {
    pub sns: aws_sdk_sns::Client,
    pub topic_arn: String,
}

pub struct BudgetGuard {
    pub metadata: Arc<dyn MetadataStore>,
    /// `None`: alerts are logged only.
    pub alerts: Option<AlertTopic>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct BudgetRun {
    /// (campaign, owner, amount in micro-dollars) of each reclaimed lease.
    pub reclaimed: Vec<(String, String, u64)>,
    /// (campaign, reserved, held — in micro-dollars) of each ledger repaired.
    pub repaired: Vec<(String, u64, u64)>,
    pub exhausted: Vec<String>,
    /// (campaign, threshold in percent) of each alert sent, lowest first.
    pub alerts: Vec<(String, u8)>,
}

impl BudgetGuard {
    /// The deployment named by the function's `SYNTHFLEET_*` environment; alerts go to
    /// `SYNTHFLEET_ALERT_TOPIC_ARN` when it is set.
    pub async fn from_env() -> Result<BudgetGuard, ControlError> {
        let (clients, names) = deployment().await?;
        let alerts = env_var("SYNTHFLEET_ALERT_TOPIC_ARN").map(|topic_arn| AlertTopic {
            sns: aws_sdk_sns::Client::new(&clients.config),
            topic_arn,
        });
        let backend = Backend::aws(&clients, names);
        Ok(BudgetGuard {
            metadata: backend.store().metadata.clone(),
            alerts,
        })
    }

    /// The scheduled invocation: its payload is ignored, what invoked it is logged.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<BudgetRun, ControlError> {
        log_invocation("budget", &event);
        self.run(Utc::now()).await
    }

    pub async fn run(&self, now: DateTime<Utc>) -> Result<BudgetRun, ControlError> {
        let mut run = BudgetRun::default();
        for lease in liveness::reclaim_leases(self.metadata.as_ref(), Reclaim::Stale(now)).await? {
            warn!(campaign = %lease.campaign, owner = %lease.owner, amount = %lease.amount, "reclaimed the budget slice of a dead holder, booked at its full amount");
            run.reclaimed
                .push((lease.campaign, lease.owner, lease.amount.0));
        }
        for r in liveness::audit_ledgers(self.metadata.as_ref()).await? {
            warn!(campaign = %r.campaign, reserved = %r.found.reserved, held = %r.found.held, "the budget ledger's reserved amount was not what its leases hold; repaired (a reservation no lease accounts for is booked as spent)");
            run.repaired
                .push((r.campaign, r.found.reserved.0, r.found.held.0));
        }
        let mut failed = Vec::new();
        for campaign in self.metadata.campaigns().await? {
            let mut probe = campaign.clone();
            probe.exhaust_if_spent();
            if probe.state != campaign.state
                && self
                    .metadata
                    .set_state(&campaign.name, probe.state, probe.state_reason.clone())
                    .await?
            {
                info!(campaign = %campaign.name, reason = ?probe.state_reason, "campaign exhausted");
                run.exhausted.push(campaign.name.clone());
            }
            // Every threshold crossed, lowest first, each claimed on its own: a claim lost
            // to a concurrent run means that run sends it.
            for pct in campaign.alerts_due() {
                if !self
                    .metadata
                    .claim_budget_alert(&campaign.name, pct)
                    .await?
                {
                    continue;
                }
                // One alert that cannot be sent does not hold back the others.
                match self.alert(&campaign, pct).await {
                    Ok(()) => run.alerts.push((campaign.name.clone(), pct)),
                    Err(e) => failed.push(e),
                }
            }
        }
        match failed.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(run),
        }
    }

    async fn alert(&self, campaign: &CampaignRecord, pct: u8) -> Result<(), ControlError> {
        let ledger = &campaign.ledger;
        let spent_pct = campaign.spent_pct().unwrap_or(pct);
        let subject = format!(
            "synthfleet: campaign {} reached {pct}% of its budget (spent: {spent_pct}%)",
            campaign.name
        );
        let message = serde_json::json!({
            "campaign": campaign.name,
            "threshold_pct": pct,
            "spent_pct": spent_pct,
            "budget_usd": ledger.budget.as_usd(),
            "spent_usd": ledger.spent.as_usd(),
            "reserved_usd": ledger.reserved.as_usd(),
            "state": campaign.state.as_str(),
        });
        warn!(campaign = %campaign.name, pct, spent_pct, spent = %ledger.spent, budget = %ledger.budget, "budget alert");
        let Some(topic) = &self.alerts else {
            return Ok(());
        };
        topic
            .sns
            .publish()
            .topic_arn(&topic.topic_arn)
            .subject(subject.chars().take(100).collect::<String>())
            .message(message.to_string())
            .send()
            .await
            .map_err(|e| ControlError::Alert {
                campaign: campaign.name.clone(),
                topic: topic.topic_arn.clone(),
                source: e.into(),
            })?;
        Ok(())
    }
}
