//! Disk pressure and image hygiene: a worker stops taking work before Docker's disk fills,
//! and makes room by removing task images it no longer needs.
//!
//! Before each receive the worker asks [`DiskGuard::pressure`]. When the filesystem of
//! Docker's root directory has less than `min_free_mb` available, the guard first removes
//! images, then says whether there is room now; while there is not, no new task is taken
//! (in-flight rollouts go on). An image is removed only when all of these hold:
//!
//! * this worker used it (an image it never ran a sandbox of is not its to remove);
//! * it is not about to be used: not among the `keep` images (a local run's task images)
//!   and not asked for within `recent`;
//! * no container uses it, running or not (and the engine refuses to remove one that a
//!   container took meanwhile: removal is never forced).
//!
//! Least recently used first, one at a time, until the free space is back above the
//! threshold. Nothing is removed without pressure: synthfleet never pulls, so an image
//! removed is gone for the tasks that may still come for it.

use crate::{DockerSandboxes, WarmPool, docker_error};
use async_trait::async_trait;
use bollard::container::ListContainersOptions;
use bollard::image::RemoveImageOptions;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use synthfleet_core::error_chain;
use synthfleet_core::ports::{HostCapacity, SandboxError};
use tracing::{info, warn};

pub struct DiskGuard {
    pool: WarmPool,
    min_free_mb: u64,
    /// Images named by the work at hand (a local run's tasks): never removed.
    keep: BTreeSet<String>,
    /// Images asked for within this long are about to be used again.
    pub recent: Duration,
    /// Docker's root directory, as seen from this host (none: a remote engine).
    root: tokio::sync::OnceCell<Option<PathBuf>>,
}

/// What a collection removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub removed: Vec<String>,
}

impl DiskGuard {
    pub fn new(pool: WarmPool, min_free_mb: u64, keep: BTreeSet<String>) -> DiskGuard {
        DiskGuard {
            pool,
            min_free_mb,
            keep,
            recent: Duration::from_secs(30 * 60),
            root: tokio::sync::OnceCell::new(),
        }
    }

    fn engine(&self) -> &DockerSandboxes {
        self.pool.engine()
    }

    /// Megabytes available on the filesystem of Docker's root directory; `None` when it
    /// cannot be known from here (a remote engine).
    pub async fn free_mb(&self) -> Option<u64> {
        let root = self
            .root
            .get_or_init(|| async {
                let info = self.engine().docker.info().await.ok()?;
                let root = PathBuf::from(info.docker_root_dir?);
                if root.is_dir() {
                    Some(root)
                } else {
                    warn!(root = %root.display(), "Docker's root directory is not on this host: disk pressure is not watched");
                    None
                }
            })
            .await
            .as_ref()?;
        let out = tokio::process::Command::new("df")
            .args(["-Pk"])
            .arg(root)
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let kb: u64 = text
            .lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()?;
        Some(kb / 1024)
    }

    /// Removes the images this worker used that are neither about to be used nor in use,
    /// least recently used first, while less than `want_free_mb` is available.
    pub async fn collect(&self, want_free_mb: u64) -> Result<Collected, SandboxError> {
        let docker = &self.engine().docker;
        let containers = docker
            .list_containers(Some(ListContainersOptions::<String> {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| docker_error("docker", "listing containers", e))?;
        let in_use: HashSet<String> = containers
            .into_iter()
            .flat_map(|c| [c.image_id, c.image].into_iter().flatten())
            .collect();
        let mut candidates: Vec<(String, Instant)> = self
            .pool
            .images_used()
            .into_iter()
            .filter(|(image, used)| !self.keep.contains(image) && used.elapsed() >= self.recent)
            .collect();
        candidates.sort_by_key(|(_, used)| *used);
        let mut collected = Collected::default();
        for (image, _) in candidates {
            if self.free_mb().await.is_none_or(|mb| mb >= want_free_mb) {
                break;
            }
            let id = match docker.inspect_image(&image).await {
                Ok(inspected) => inspected.id,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => continue,
                Err(e) => return Err(docker_error(&image, "inspecting the image", e)),
            };
            if in_use.contains(&image) || id.as_ref().is_some_and(|id| in_use.contains(id)) {
                continue;
            }
            match docker
                .remove_image(&image, Some(RemoveImageOptions::default()), None)
                .await
            {
                Ok(_) => {
                    info!(%image, "removed an image no rollout needs now, for disk space");
                    collected.removed.push(image);
                }
                // Taken by a container meanwhile, or already gone.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => {}
                Err(e) => return Err(docker_error(&image, "removing the image", e)),
            }
        }
        Ok(collected)
    }
}

#[async_trait]
impl HostCapacity for DiskGuard {
    async fn pressure(&self) -> Option<String> {
        if self.free_mb().await? >= self.min_free_mb {
            return None;
        }
        let collected = match self.collect(self.min_free_mb).await {
            Ok(collected) => collected,
            Err(e) => {
                warn!(error = %error_chain(&e), "collecting unused images failed");
                Collected::default()
            }
        };
        let now = self.free_mb().await?;
        (now < self.min_free_mb).then(|| {
            format!(
                "Docker's disk has {now} MB free, under the {} MB this worker keeps free (--min-free-disk-mb); removed {} unused image(s): free space on the host (docker image prune, larger disk) or lower the threshold",
                self.min_free_mb,
                collected.removed.len()
            )
        })
    }
}
