//! The commit order on DynamoDB (docs/AWS.md, "Commit order").
//!
//! Each trajectory item carries `commit_order = {created_at, epoch ms, 13 digits}#{trajectory_id}`,
//! written in its commit's transaction (no write of its own), and the sparse index
//! [`INDEX_BY_COMMIT`] (hash `campaign`, range `commit_order`) lists a campaign's commits
//! in that order. The keys come from the workers' clocks at the end of each rollout and
//! the index is read eventually: a commit can appear a few seconds after younger ones, so
//! readers take only what has settled ([`synthfleet_core::commits::settled`]).
//!
//! Items committed before the attribute existed are not in the index: they are read once
//! per process and campaign from the campaign's partitions and put in the same order by
//! the same key (`created_at`, then trajectory id).

use super::{BACKEND, DynamoMetadata, INDEX_BY_COMMIT, Item, TrajectoryItem, from_item, s};
use crate::aws_error;
use std::sync::Arc;
use synthfleet_core::commits::{Commit, CommitCursor};
use synthfleet_core::ports::{StoreError, TrajectoryMeta};

/// Commits from before the index, per campaign: read once per process.
pub(super) type Unindexed = std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<Commit>>>>;

/// The position of a trajectory in its campaign's commit order.
pub fn commit_order(meta: &TrajectoryMeta) -> String {
    format!(
        "{:013}#{}",
        meta.summary.created_at.timestamp_millis().max(0),
        meta.summary.trajectory_id
    )
}

/// The cursor of a committed trajectory: what `synthfleet tail --since` continues after.
pub fn commit_cursor(meta: &TrajectoryMeta) -> CommitCursor {
    CommitCursor::new(&meta.summary.campaign, commit_order(meta))
}

fn commit_of(meta: TrajectoryMeta) -> Commit {
    Commit {
        cursor: commit_cursor(&meta),
        ordered_at: meta.summary.created_at,
        meta,
    }
}

impl DynamoMetadata {
    pub(super) async fn read_commits_after(
        &self,
        campaign: &str,
        after: Option<&CommitCursor>,
        limit: usize,
    ) -> Result<Vec<Commit>, StoreError> {
        let is_after =
            |commit: &Commit| after.is_none_or(|a| commit.cursor.position() > a.position());
        let mut out: Vec<Commit> = self
            .unindexed(campaign)
            .await?
            .iter()
            .filter(|c| is_after(c))
            .take(limit)
            .cloned()
            .collect();
        out.extend(self.indexed_after(campaign, after, limit).await?);
        out.sort_by(|a, b| a.cursor.cmp(&b.cursor));
        out.truncate(limit);
        Ok(out)
    }

    /// Up to `limit` commits of the index after `after`, in order.
    async fn indexed_after(
        &self,
        campaign: &str,
        after: Option<&CommitCursor>,
        limit: usize,
    ) -> Result<Vec<Commit>, StoreError> {
        let operation = || format!("reading the commit order of campaign `{campaign}`");
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX_BY_COMMIT)
                .expression_attribute_names("#campaign", "campaign")
                .expression_attribute_values(":campaign", s(campaign))
                .limit(i32::try_from(limit.saturating_sub(out.len())).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            query = match after {
                Some(after) => query
                    .key_condition_expression("#campaign = :campaign AND #order > :after")
                    .expression_attribute_names("#order", "commit_order")
                    .expression_attribute_values(":after", s(after.position())),
                None => query.key_condition_expression("#campaign = :campaign"),
            };
            let page = query
                .send()
                .await
                .map_err(|e| aws_error(BACKEND, operation(), e))?;
            for item in page.items() {
                let item: TrajectoryItem = from_item("trajectory item", item.clone())?;
                out.push(commit_of(item.meta));
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() || out.len() >= limit {
                return Ok(out);
            }
        }
    }

    /// The campaign's commits from before the index, in order (read once per process).
    async fn unindexed(&self, campaign: &str) -> Result<Arc<Vec<Commit>>, StoreError> {
        let cached = self
            .unindexed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(campaign)
            .cloned();
        if let Some(commits) = cached {
            return Ok(commits);
        }
        let items: Vec<TrajectoryItem> = self
            .query_decoded(campaign, "TRAJ#", "trajectory item")
            .await?;
        let mut commits: Vec<Commit> = items
            .into_iter()
            .filter(|item| item.commit_order.is_none())
            .map(|item| commit_of(item.meta))
            .collect();
        commits.sort_by(|a, b| a.cursor.cmp(&b.cursor));
        let commits = Arc::new(commits);
        self.unindexed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(campaign.to_owned(), commits.clone());
        Ok(commits)
    }
}
