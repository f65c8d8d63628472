//! The facts of a campaign's trajectories, read incrementally: the compacted segments
//! first (a few objects), then the facts objects the workers wrote since, then — for a
//! trajectory without current facts (committed by an older synthfleet, or with another
//! [`FACTS_VERSION`]) — its record, from which the facts are derived once and stored for
//! the next run. What had to be read one object at a time is compacted into a new segment
//! once there are [`COMPACT_AFTER`] of them, so a report over a campaign with nothing new
//! reads its segments and the metadata, and no record.

use crate::{LOAD_CONCURRENCY, QualityError, load_record};
use futures_util::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use synthfleet_core::facts::{TrajectoryFacts, compacted_prefix, facts_key};
use synthfleet_core::ports::{ObjectStore, StoreError, TrajectoryMeta};
use synthfleet_core::store::TrajectoryStore;
use tracing::info;

/// Facts read one object at a time from which a new segment is written.
pub const COMPACT_AFTER: usize = 256;

/// Where a run found the facts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactsStats {
    /// From compacted segments.
    pub compacted: u64,
    /// From the facts objects written at commit time.
    pub objects: u64,
    /// Derived from their records (back-filled).
    pub derived: u64,
    /// Segments written by this run.
    pub segments_written: u64,
}

/// The facts of `metas`, in their order. `progress` is called with (done, total) for the
/// trajectories not found in a segment.
pub async fn load(
    store: &TrajectoryStore,
    campaign: &str,
    metas: &[TrajectoryMeta],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(Vec<TrajectoryFacts>, FactsStats), QualityError> {
    let objects = store.objects.as_ref();
    let mut stats = FactsStats::default();
    let wanted: HashMap<&str, &TrajectoryMeta> = metas
        .iter()
        .map(|m| (m.summary.trajectory_id.as_str(), m))
        .collect();
    let mut found: HashMap<String, TrajectoryFacts> = HashMap::with_capacity(metas.len());
    for segment in objects.list(&compacted_prefix(campaign)).await? {
        let mut used = false;
        for facts in read_segment(objects, &segment.key).await? {
            if wanted
                .get(facts.summary.trajectory_id.as_str())
                .is_some_and(|meta| facts.current_for(meta))
            {
                used = true;
                found.insert(facts.summary.trajectory_id.clone(), facts);
            }
        }
        if !used {
            // Every trajectory of it is gone (expired) or re-derived: nothing reads it again.
            objects.delete(&segment.key).await?;
        }
    }
    stats.compacted = found.len() as u64;

    let missing: Vec<&TrajectoryMeta> = metas
        .iter()
        .filter(|m| !found.contains_key(&m.summary.trajectory_id))
        .collect();
    let total = missing.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let done = &done;
    let fresh: Vec<(TrajectoryFacts, bool)> = futures_util::stream::iter(missing)
        .map(|meta| async move {
            let got = facts_of(store, meta).await?;
            progress(
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                total,
            );
            Ok::<_, QualityError>(got)
        })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect()
        .await?;
    stats.derived = fresh.iter().filter(|(_, derived)| *derived).count() as u64;
    stats.objects = fresh.len() as u64 - stats.derived;
    if fresh.len() >= COMPACT_AFTER {
        write_segment(objects, campaign, fresh.iter().map(|(f, _)| f)).await?;
        stats.segments_written = 1;
    }
    found.extend(
        fresh
            .into_iter()
            .map(|(f, _)| (f.summary.trajectory_id.clone(), f)),
    );
    info!(
        campaign,
        compacted = stats.compacted,
        objects = stats.objects,
        derived = stats.derived,
        segments_written = stats.segments_written,
        "trajectory facts read"
    );
    let facts = metas
        .iter()
        .map(|m| {
            found
                .remove(&m.summary.trajectory_id)
                .ok_or_else(|| QualityError::MissingFacts {
                    trajectory_id: m.summary.trajectory_id.clone(),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok((facts, stats))
}

/// The facts object of `meta` when it is current, else the facts derived from its record
/// (then stored); says whether they were derived.
async fn facts_of(
    store: &TrajectoryStore,
    meta: &TrajectoryMeta,
) -> Result<(TrajectoryFacts, bool), QualityError> {
    let key = facts_key(&meta.summary.campaign, &meta.summary.trajectory_id);
    match store.objects.get(&key).await {
        Ok(bytes) => {
            // An undecodable or outdated object is derived again, like a missing one.
            if let Ok(facts) = serde_json::from_slice::<TrajectoryFacts>(&bytes)
                && facts.current_for(meta)
            {
                return Ok((facts, false));
            }
        }
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let record = load_record(store, meta).await?;
    let facts = TrajectoryFacts::of(&record, &meta.sha256);
    store.objects.put(&key, facts.to_json()).await?;
    Ok((facts, true))
}

async fn read_segment(
    objects: &dyn ObjectStore,
    key: &str,
) -> Result<Vec<TrajectoryFacts>, QualityError> {
    let bytes = objects.get(key).await?;
    let decode = |detail: String| QualityError::Decode {
        what: key.to_owned(),
        detail,
    };
    let text = zstd::decode_all(bytes.as_slice()).map_err(|e| decode(e.to_string()))?;
    text.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| decode(e.to_string())))
        .collect()
}

async fn write_segment<'a>(
    objects: &dyn ObjectStore,
    campaign: &str,
    facts: impl Iterator<Item = &'a TrajectoryFacts>,
) -> Result<(), QualityError> {
    let mut lines = Vec::new();
    for f in facts {
        lines.extend_from_slice(&f.to_json());
        lines.push(b'\n');
    }
    let key = format!(
        "{}{}.jsonl.zst",
        compacted_prefix(campaign),
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
    );
    let bytes = zstd::encode_all(lines.as_slice(), 3).map_err(|source| QualityError::Io {
        path: key.clone().into(),
        source,
    })?;
    objects.put(&key, bytes).await?;
    Ok(())
}
