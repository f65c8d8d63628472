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
//! threshold. Images unused for `max_age` go too, under pressure or not.

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
    /// Images unused for this long are removed even without pressure.
    pub max_age: Duration,
    /// Docker's root directory, as seen from this host (none: a remote engine).
    root: tokio::sync::OnceCell<Option<PathBuf>>,
    /// When images were last looked at without pressure (for `max_age`).
    swept: std::sync::Mutex<Option<Instant>>,
}

/// How often images are looked at for `max_age` while the disk has room.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

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
            max_age: Duration::from_secs(24 * 3600),
            root: tokio::sync::OnceCell::new(),
            swept: std::sync::Mutex::new(None),
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

    async fn has_room(&self, want_free_mb: Option<u64>) -> bool {
        match want_free_mb {
            None => true,
            Some(want) => self.free_mb().await.is_none_or(|mb| mb >= want),
        }
    }

    /// Removes the images this worker used that are neither about to be used nor in use:
    /// those unused for `max_age`, then, while less than `want_free_mb` is available, the
    /// least recently used others.
    pub async fn collect(&self, want_free_mb: Option<u64>) -> Result<Collected, SandboxError> {
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
        for (image, used) in candidates {
            let expired = used.elapsed() >= self.max_age;
            if !expired && self.has_room(want_free_mb).await {
                continue;
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
                    info!(%image, expired, "removed an image no rollout needs now");
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
        let free = self.free_mb().await?;
        if free >= self.min_free_mb {
            let Ok(mut swept) = self.swept.lock() else {
                return None;
            };
            if swept.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return None;
            }
            *swept = Some(Instant::now());
        }
        let collected = match self.collect(Some(self.min_free_mb)).await {
            Ok(collected) => collected,
            Err(e) => {
                warn!(error = %error_chain(&e), "collecting unused images failed");
                Collected::default()
            }
        };
        if free >= self.min_free_mb {
            return None;
        }
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
