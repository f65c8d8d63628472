//! One container's life: created hardened and tethered to the worker, assigned to a task
//! (workdir and user), written to, and removed. Running its commands is [`exec`].

mod exec;
mod gateway;

use crate::docker_error;
use crate::provider::{DockerSandboxes, LABEL_HOST, LABEL_MANAGED, LABEL_WORKER};
use crate::relay::Relay;
use crate::scripts::write_commands;
use async_trait::async_trait;
use bollard::Docker;
use bollard::container::{
    AttachContainerOptions, Config, CreateContainerOptions, RemoveContainerOptions,
};
use bollard::models::HostConfig;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;
use synthfleet_core::campaign::{NetworkPolicy, SandboxChannel};
use synthfleet_core::ports::{ExecOutput, Gateway, Sandbox, SandboxError, SandboxSpec};
use tokio::io::AsyncWrite;
use tracing::{debug, warn};

/// The attached stdin of an exec or a container.
pub(crate) type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// The attached output of an exec.
pub(crate) type ExecStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;

/// Time allowed for housekeeping commands (user detection, kills).
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(30);

fn host_config(spec: &SandboxSpec, disk_limits: bool) -> HostConfig {
    let limits = &spec.limits;
    let memory = (limits.memory_mb * 1024 * 1024) as i64;
    HostConfig {
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some((limits.cpus * 1e9) as i64),
        pids_limit: Some(limits.pids),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        network_mode: Some(
            match limits.network {
                NetworkPolicy::None => "none",
                NetworkPolicy::Bridge => "bridge",
            }
            .into(),
        ),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            format!("rw,nosuid,nodev,size={}m", limits.tmp_mb),
        )])),
        storage_opt: limits
            .disk_mb
            .filter(|_| disk_limits)
            .map(|mb| HashMap::from([("size".to_owned(), format!("{mb}M"))])),
        init: Some(true),
        runtime: limits.runtime.clone(),
        privileged: Some(false),
        readonly_rootfs: Some(false),
        // The tether's end (the worker gone) is the container's end.
        auto_remove: Some(true),
        ..Default::default()
    }
}

impl DockerSandboxes {
    /// A started, tethered container of `spec`'s image and limits, with the relay of the
    /// user it will most likely run as, but no workdir yet: what the warm pool keeps as a
    /// spare. [`DockerSandbox::assign`] makes it a sandbox for one task.
    pub async fn start(&self, spec: &SandboxSpec) -> Result<DockerSandbox, SandboxError> {
        let image = match self.docker.inspect_image(&spec.image).await {
            Ok(image) => image,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(SandboxError::ImageMissing {
                    image: spec.image.clone(),
                });
            }
            Err(e) => return Err(docker_error(&spec.image, "inspecting the image", e)),
        };
        let digest = image
            .repo_digests
            .as_ref()
            .and_then(|d| d.first().cloned())
            .or(image.id.clone());

        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_WORKER.into(), self.worker_id.clone());
        labels.insert(LABEL_HOST.into(), self.host.clone());
        let mut config = Config {
            image: Some(spec.image.clone()),
            // The keeper reads the tether until the worker lets go of it.
            cmd: Some(vec!["cat".into()]),
            entrypoint: Some(vec![]),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            user: Some("0".into()),
            labels: Some(labels),
            network_disabled: Some(spec.limits.network == NetworkPolicy::None),
            env: Some(vec![]),
            host_config: Some(host_config(
                spec,
                !self.no_disk_limits.load(Ordering::Relaxed),
            )),
            ..Default::default()
        };
        let created = match self
            .docker
            .create_container(None::<CreateContainerOptions<String>>, config.clone())
            .await
        {
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("storage-opt") =>
            {
                if !self.no_disk_limits.swap(true, Ordering::Relaxed) {
                    warn!(disk_mb = spec.limits.disk_mb, engine = %message,
                        "sandbox.disk_mb cannot be enforced: this storage driver has no per-container size limit (overlay2 needs xfs with pquota; btrfs and zfs have one); sandboxes run without a writable-layer cap, /tmp stays bounded by tmp_mb");
                }
                config.host_config = Some(host_config(spec, false));
                self.docker
                    .create_container(None::<CreateContainerOptions<String>>, config)
                    .await
            }
            created => created,
        }
        .map_err(|e| docker_error(&spec.image, "creating a container", e))?;
        let mut sandbox = DockerSandbox {
            docker: self.docker.clone(),
            id: created.id,
            workdir: "/".into(),
            user: "0".into(),
            has_uid_1000: false,
            digest,
            max_output_bytes: spec.limits.max_output_bytes,
            channel: spec.limits.channel,
            relays: tokio::sync::Mutex::default(),
            tether: std::sync::Mutex::new(None),
        };
        debug!(container = %sandbox.id, image = %spec.image, "sandbox created");
        let started = async {
            let tether = self
                .docker
                .attach_container::<String>(
                    &sandbox.id,
                    Some(AttachContainerOptions {
                        stdin: Some(true),
                        stream: Some(true),
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| docker_error(&sandbox.id, "attaching the tether", e))?;
            sandbox.hold(tether.input);
            self.docker
                .start_container::<String>(&sandbox.id, None)
                .await
                .map_err(|e| docker_error(&sandbox.id, "starting the container", e))?;
            sandbox.has_uid_1000 = self.has_uid_1000(&sandbox, &spec.image).await?;
            // The relay of the user the sandbox will most likely run as.
            let likely = match spec.limits.user.as_str() {
                "auto" if sandbox.has_uid_1000 => "1000",
                "auto" => "0",
                user => user,
            };
            sandbox.warm_up(likely).await;
            Ok(())
        }
        .await;
        match started {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                let _ = sandbox.destroy().await;
                Err(e)
            }
        }
    }

    /// Whether `image` has a user with uid 1000: asked of the first sandbox of each image,
    /// then remembered.
    async fn has_uid_1000(
        &self,
        sandbox: &DockerSandbox,
        image: &str,
    ) -> Result<bool, SandboxError> {
        let known = self
            .uid_1000
            .lock()
            .ok()
            .and_then(|images| images.get(image).copied());
        if let Some(known) = known {
            return Ok(known);
        }
        let out = sandbox
            .run_exec(
                "getent passwd 1000 >/dev/null 2>&1 && echo yes || echo no",
                "0",
                HOUSEKEEPING_TIMEOUT,
                None,
                &[],
            )
            .await?;
        let has = out.output.trim() == "yes";
        if out.exit_code == Some(0)
            && let Ok(mut images) = self.uid_1000.lock()
        {
            images.insert(image.to_owned(), has);
        }
        Ok(has)
    }
}

pub(crate) async fn remove(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        // 409: removal already in progress
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(docker_error(id, "removing the container", e)),
    }
}

pub struct DockerSandbox {
    docker: Docker,
    id: String,
    workdir: String,
    user: String,
    /// The image has a user with uid 1000.
    has_uid_1000: bool,
    digest: Option<String>,
    max_output_bytes: usize,
    channel: SandboxChannel,
    /// Held for the whole command, so one sandbox runs one command at a time.
    relays: tokio::sync::Mutex<Relays>,
    /// The container's attached stdin: dropped with the worker, it ends the container.
    tether: std::sync::Mutex<Option<Input>>,
}

/// The relays of a sandbox, by user.
#[derive(Default)]
struct Relays {
    by_user: HashMap<String, Relay>,
    /// Each user's sweeper, started with its first command.
    sweepers: HashMap<String, crate::sweeper::Sweeper>,
    /// The relay could not start here: commands go through `docker exec`.
    exec_only: bool,
}

impl DockerSandbox {
    fn hold(&self, tether: Input) {
        if let Ok(mut held) = self.tether.lock() {
            *held = Some(tether);
        }
    }

    /// Makes a started sandbox one for a task: its workdir (made, as root, when the image
    /// lacks it — as Docker makes a container's working directory), and its user — `auto`:
    /// uid 1000 when the image has it and it owns the workdir, else root. Fails when the
    /// sandbox does not answer (so it doubles as the health check of a spare).
    pub async fn assign(
        mut self,
        workdir: &str,
        wanted_user: &str,
    ) -> Result<DockerSandbox, SandboxError> {
        let probing = match wanted_user {
            "auto" if self.has_uid_1000 => "1000",
            "auto" => "0",
            user => user,
        };
        // Runs in the workdir, as the likely user: `-O` is "owned by me", and a builtin.
        const PROBE: &str = "[ -O . ] && echo owner || echo other";
        self.workdir = workdir.to_owned();
        let mut out = self.run(PROBE, probing, HOUSEKEEPING_TIMEOUT).await;
        if !matches!(&out, Ok(o) if o.exit_code == Some(0)) {
            // The workdir is missing (the command could not enter it): made as root.
            self.workdir = "/".into();
            let made = self
                .run_exec(
                    &format!("mkdir -p {}", synthfleet_core::task::shell_quote(workdir)),
                    "0",
                    HOUSEKEEPING_TIMEOUT,
                    None,
                    &[],
                )
                .await?;
            self.workdir = workdir.to_owned();
            if made.exit_code != Some(0) {
                return Err(docker_error(
                    &self.id,
                    &format!("making the workdir {workdir}"),
                    std::io::Error::other(made.output),
                ));
            }
            out = self.run(PROBE, probing, HOUSEKEEPING_TIMEOUT).await;
        }
        let out = out?;
        if out.exit_code != Some(0) {
            return Err(SandboxError::Unresponsive {
                container: self.id.clone(),
            });
        }
        self.user = match wanted_user {
            "auto" if probing == "1000" && out.output.trim() == "owner" => "1000".into(),
            "auto" => "0".into(),
            user => user.to_owned(),
        };
        if self.user != probing {
            // The user's own relay, started and checked now.
            let out = self.run("true", &self.user, HOUSEKEEPING_TIMEOUT).await?;
            if out.exit_code != Some(0) {
                return Err(SandboxError::Unresponsive {
                    container: self.id.clone(),
                });
            }
        }
        Ok(self)
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn image_digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SandboxError> {
        self.run(command, &self.user, timeout).await
    }

    async fn exec_root(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        self.run(command, "0", timeout).await
    }

    async fn exec_serving(
        &self,
        command: &str,
        timeout: Duration,
        port: u16,
        gateway: &dyn Gateway,
    ) -> Result<ExecOutput, SandboxError> {
        self.run_serving(command, timeout, port, gateway).await
    }

    /// A small text file goes through the relay, as the sandbox user (one round trip);
    /// anything else, or where that fails, is uploaded through the engine.
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        for command in write_commands(path, contents) {
            let out = self.run(&command, &self.user, HOUSEKEEPING_TIMEOUT).await?;
            if out.exit_code != Some(0) {
                return Err(docker_error(
                    &self.id,
                    &format!("writing {path}"),
                    std::io::Error::other(out.output),
                ));
            }
        }
        Ok(())
    }

    async fn destroy(&self) -> Result<(), SandboxError> {
        remove(&self.docker, &self.id).await?;
        debug!(container = %self.id, "sandbox removed");
        Ok(())
    }
}
