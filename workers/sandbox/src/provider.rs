//! The sandbox provider: one Docker engine on behalf of one worker — what it has (images,
//! runtimes, containers by label) and the [`SandboxProvider`] port (create, reap).

use crate::container::remove;
use crate::docker_error;
use async_trait::async_trait;
use bollard::Docker;
use bollard::container::ListContainersOptions;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use synthfleet_core::ports::{Sandbox, SandboxError, SandboxProvider, SandboxSpec};
use tracing::warn;

pub const LABEL_MANAGED: &str = "synthfleet.managed";
pub const LABEL_WORKER: &str = "synthfleet.worker";
/// The host the owning worker runs on (workers sharing a remote engine tell hosts apart).
pub const LABEL_HOST: &str = "synthfleet.host";

/// Creates sandboxes on one Docker engine on behalf of one worker.
#[derive(Clone)]
pub struct DockerSandboxes {
    pub(crate) docker: Docker,
    pub(crate) worker_id: String,
    pub(crate) host: String,
    /// The storage driver refused a writable-layer size (`disk_mb`): not asked again.
    pub(crate) no_disk_limits: Arc<AtomicBool>,
    /// Whether each image has a user with uid 1000, as its first sandbox said.
    pub(crate) uid_1000: Arc<std::sync::Mutex<HashMap<String, bool>>>,
}

impl DockerSandboxes {
    /// Connects to the engine named by `DOCKER_HOST`, or the local socket.
    pub fn connect(worker_id: &str) -> Result<DockerSandboxes, SandboxError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| docker_error("docker", "connecting", e))?;
        let host = hostname::get().map_or_else(
            |_| "unknown".to_owned(),
            |h| h.to_string_lossy().into_owned(),
        );
        Ok(DockerSandboxes {
            docker,
            worker_id: worker_id.to_owned(),
            host,
            no_disk_limits: Arc::default(),
            uid_1000: Arc::default(),
        })
    }

    /// Checks the engine answers; the error says how to fix it.
    pub async fn ping(&self) -> Result<(), SandboxError> {
        self.docker.ping().await.map(|_| ()).map_err(|e| {
            docker_error(
                "docker",
                "pinging the Docker engine (is dockerd running and is DOCKER_HOST or /var/run/docker.sock reachable?)",
                e,
            )
        })
    }

    /// Fails with [`SandboxError::RuntimeMissing`] unless the engine has `runtime` (none:
    /// the engine's default, always there).
    pub async fn check_runtime(&self, runtime: Option<&str>) -> Result<(), SandboxError> {
        let Some(runtime) = runtime else {
            return Ok(());
        };
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| docker_error("docker", "reading the engine's runtimes", e))?;
        let mut available: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        available.sort();
        if available.iter().any(|r| r == runtime) {
            return Ok(());
        }
        Err(SandboxError::RuntimeMissing {
            runtime: runtime.to_owned(),
            available: available.join(", "),
        })
    }

    /// The images among `images` that the engine does not have locally.
    pub async fn missing_images<'a>(
        &self,
        images: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, SandboxError> {
        let mut missing = Vec::new();
        for image in images {
            match self.docker.inspect_image(image).await {
                Ok(_) => {}
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => missing.push(image.to_owned()),
                Err(e) => return Err(docker_error(image, "inspecting the image", e)),
            }
        }
        Ok(missing)
    }

    /// Containers carrying `label=value`, running or not.
    pub async fn containers_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<String>, SandboxError> {
        Ok(self
            .list_labelled(label, value)
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect())
    }

    async fn list_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, SandboxError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{label}={value}")])]);
        self.docker
            .list_containers(Some(ListContainersOptions::<String> {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .map_err(|e| docker_error("docker", "listing containers", e))
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
}

#[async_trait]
impl SandboxProvider for DockerSandboxes {
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let sandbox = self
            .start(spec)
            .await?
            .assign(&spec.workdir, &spec.limits.user)
            .await?;
        Ok(Box::new(sandbox))
    }

    async fn reap(&self) -> Result<usize, SandboxError> {
        self.reap_owner(&self.worker_id).await
    }

    async fn owners(&self) -> Result<Vec<String>, SandboxError> {
        let mut owners: Vec<String> = self
            .list_labelled(LABEL_MANAGED, "true")
            .await?
            .into_iter()
            .filter_map(|c| c.labels?.get(LABEL_WORKER).cloned())
            .collect();
        owners.sort();
        owners.dedup();
        Ok(owners)
    }

    async fn reap_owner(&self, owner: &str) -> Result<usize, SandboxError> {
        let ids = self.containers_labelled(LABEL_WORKER, owner).await?;
        for id in &ids {
            remove(&self.docker, id).await?;
            warn!(container = %id, owner, reaper = %self.worker_id, "removed a sandbox its owner left behind");
        }
        Ok(ids.len())
    }
}
