//! `synthfleet gc`: the 30-day retention of failed trajectories on the local store. On AWS
//! the S3 lifecycle rule and DynamoDB's TTL do the same on their own.

use chrono::Utc;
use clap::Args;
use std::collections::HashSet;
use std::process::ExitCode;
use synthfleet_backend::Backend;
use synthfleet_core::store::FAILED_RETENTION_DAYS;
use synthfleet_core::trajectory::expires;
use synthfleet_local::LocalMetadata;
use synthfleet_term::BackendArgs;

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Apply the policy as of this time (RFC 3339) instead of now, e.g. to preview with
    /// `--dry-run` what expires by a date.
    #[arg(long)]
    as_of: Option<chrono::DateTime<Utc>>,
}

pub async fn gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    let backend = Backend::open_existing(&args.backend.config()?, None).await?;
    let Backend::Local { local, dir } = &backend else {
        anyhow::bail!(
            "synthfleet gc works on the local store; on AWS, the S3 lifecycle rule and DynamoDB's TTL expire failed trajectories after {FAILED_RETENTION_DAYS} days"
        );
    };
    let now = args.as_of.unwrap_or_else(Utc::now);
    let objects = &local.store.objects;
    // Items past their expiry, then their objects.
    let expired = LocalMetadata::new(&local.state)
        .expire(now, args.dry_run)
        .await?;
    let mut deleted = 0u64;
    for meta in &expired {
        if args.dry_run {
            println!(
                "would delete {} ({})",
                meta.object_key, meta.summary.trajectory_id
            );
        } else {
            objects.delete(&meta.object_key).await?;
            objects
                .delete(&synthfleet_core::facts::facts_key(
                    &meta.summary.campaign,
                    &meta.summary.trajectory_id,
                ))
                .await?;
        }
        deleted += 1;
    }
    // Checkpoints of samples no attempt ever committed (a commit removes its sample's) and
    // objects a crash left without an item expire by age.
    let live: HashSet<String> = {
        let mut keys = HashSet::new();
        for campaign in local.store.metadata.campaigns().await? {
            for meta in local.store.metadata.trajectories(&campaign.name).await? {
                keys.insert(meta.object_key);
            }
        }
        keys
    };
    let cutoff = now - chrono::Duration::days(FAILED_RETENTION_DAYS);
    let mut orphans = 0u64;
    let mut candidates = objects.list("checkpoints/").await?;
    candidates.extend(objects.list("trajectories/").await?);
    for info in candidates {
        if expires(&info.key) && info.modified < cutoff && !live.contains(&info.key) {
            if args.dry_run {
                println!(
                    "would delete {} (partial record, {})",
                    info.key, info.modified
                );
            } else {
                objects.delete(&info.key).await?;
            }
            orphans += 1;
        }
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "{verb} {deleted} failed trajectories older than {FAILED_RETENTION_DAYS} days and {orphans} stale partial records in {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
