//! What each model of a campaign has cost and used, from its trajectory items (the
//! metadata the workers commit; no record is read).

use crate::ports::TrajectoryMeta;
use crate::trajectory::RecordStatus;
use serde::Serialize;
use std::collections::BTreeMap;

/// One model's share of a campaign.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelSpend {
    pub model: String,
    pub trajectories: u64,
    pub success: u64,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

/// Per model (the pool entry a sample was routed to), in name order.
pub fn by_model<'a>(metas: impl IntoIterator<Item = &'a TrajectoryMeta>) -> Vec<ModelSpend> {
    let mut models: BTreeMap<&str, ModelSpend> = BTreeMap::new();
    for meta in metas {
        let summary = &meta.summary;
        let spend = models.entry(&summary.model).or_insert_with(|| ModelSpend {
            model: summary.model.clone(),
            ..ModelSpend::default()
        });
        spend.trajectories += 1;
        spend.success += u64::from(meta.status == RecordStatus::Success);
        spend.cost_usd += summary.cost_usd;
        spend.input_tokens += summary.input_tokens;
        spend.output_tokens += summary.output_tokens;
        spend.cache_read_tokens += summary.cache_read_tokens;
        spend.cache_write_tokens += summary.cache_write_tokens;
    }
    models.into_values().collect()
}
