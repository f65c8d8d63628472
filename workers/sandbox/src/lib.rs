//! Docker sandboxes through bollard.
//!
//! Every container is created hardened: no network unless the campaign opts in
//! (`network_mode = none`), all capabilities dropped, `no-new-privileges`, bounded memory
//! (no swap), CPU, pids and a size-capped tmpfs on `/tmp`, an init process that reaps
//! zombies, no mounts of the host and no Docker socket, and no environment from the
//! worker (so API keys never reach it). Commands run as uid 1000 when the image has that
//! user and it owns the workdir, else as root without capabilities.
//!
//! Commands go through a [relay](relay) started once per sandbox user (or, with
//! `channel = "exec"` or when the relay cannot start, one `docker exec` each). Every
//! container is tethered to the worker: its main process reads the stdin the worker holds
//! attached, so when the worker dies — even by SIGKILL — the engine closes that stdin, the
//! container exits, and the engine removes it.
//!
//! Containers carry the labels `synthfleet.managed`, `synthfleet.worker`, and the labels
//! given by the caller; [`DockerSandboxes::reap`] removes every container of this worker
//! left behind (one created but never started by a worker that died in between).

mod capture;
mod hygiene;
pub mod pool;
mod relay;

pub use hygiene::{Collected, DiskGuard};
pub use pool::{PoolStats, WarmPool};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::{
    AttachContainerOptions, Config, CreateContainerOptions, ListContainersOptions,
    RemoveContainerOptions,
};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::HostConfig;
use capture::Capture;
use futures_util::StreamExt;
use relay::{Relay, Reply};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use synthfleet_core::campaign::{NetworkPolicy, SandboxChannel};
use synthfleet_core::ports::{ExecOutput, Sandbox, SandboxError, SandboxProvider, SandboxSpec};
use tokio::io::AsyncWrite;
use tracing::{debug, warn};

pub const LABEL_MANAGED: &str = "synthfleet.managed";
pub const LABEL_WORKER: &str = "synthfleet.worker";
/// The host the owning worker runs on (workers sharing a remote engine tell hosts apart).
pub const LABEL_HOST: &str = "synthfleet.host";

/// Kills every process the caller may signal except init (PID 1), the keeper (the
/// container's main process, the tether: init's first child, so the lowest PID whose
/// parent is 1), itself and the PIDs given as arguments (the relays). `kill -1` would do
/// for an unprivileged user, who cannot signal the keeper (it runs as root); as root —
/// SWE-bench's images have no other user — it would kill the keeper too, and the
/// container with it. Only /proc and bash builtins: no procps.
const KILL_ALL_BUT_INIT_AND_KEEPER: &str = r#"
spare=" $* "
keeper=
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = 1 ] && continue
  while read -r key value; do
    if [ "$key" = "PPid:" ]; then
      if [ "$value" = 1 ] && { [ -z "$keeper" ] || [ "$pid" -lt "$keeper" ]; }; then keeper=$pid; fi
      break
    fi
  done < "$d/status" 2>/dev/null
done
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  case "$pid" in 1|"$$"|"$keeper") continue ;; esac
  case "$spare" in *" $pid "*) continue ;; esac
  kill -KILL "$pid" 2>/dev/null
done
exit 0
"#;

/// The environment of every command (and of the relay that spawns them).
const COMMAND_ENV: [&str; 4] = ["HOME=/tmp", "PAGER=cat", "GIT_PAGER=cat", "TERM=dumb"];

/// The attached stdin of an exec or a container.
type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// The attached output of an exec.
type ExecStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;

/// Bytes of a file per command that writes it (base64 in one argument; an argument may
/// hold 128 KiB).
const WRITE_CHUNK: usize = 48 * 1024;

/// The commands that write `contents` to `path` as the sandbox user, creating its
/// directory: base64 chunks decoded by coreutils, so any bytes go, through either channel,
/// and a file lands where the sandbox sees it (an upload through the engine into a tmpfs
/// mount would land under it, unseen).
fn write_commands(path: &str, contents: &[u8]) -> Vec<String> {
    use base64::Engine;
    let quote = synthfleet_core::task::shell_quote;
    let dir = match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    };
    let mut commands = vec![format!(
        "{{ [ -d {dir} ] || mkdir -p {dir}; }} && : > {path}",
        dir = quote(dir),
        path = quote(path)
    )];
    commands.extend(contents.chunks(WRITE_CHUNK).map(|chunk| {
        format!(
            "printf '%s' '{}' | base64 -d >> {}",
            base64::engine::general_purpose::STANDARD.encode(chunk),
            quote(path)
        )
    }));
    commands
}

/// Time allowed for housekeeping commands (user detection, kills).
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates sandboxes on one Docker engine on behalf of one worker.
#[derive(Clone)]
pub struct DockerSandboxes {
    docker: Docker,
    worker_id: String,
    host: String,
    /// The storage driver refused a writable-layer size (`disk_mb`): not asked again.
    no_disk_limits: Arc<AtomicBool>,
    /// Whether each image has a user with uid 1000, as its first sandbox said.
    uid_1000: Arc<std::sync::Mutex<HashMap<String, bool>>>,
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

fn docker_error(
    container: &str,
    operation: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> SandboxError {
    SandboxError::Docker {
        container: container.to_owned(),
        operation: operation.to_owned(),
        source: Box::new(e),
    }
}

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
                    warn!(disk_mb = ?spec.limits.disk_mb, engine = %message,
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

async fn remove(docker: &Docker, id: &str) -> Result<(), SandboxError> {
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

    /// Runs `command` as `user`: through that user's relay (started on first use), or
    /// through `docker exec` when the campaign asks for it or the relay cannot start. NUL
    /// bytes, which no command line can hold, are left out.
    async fn run(
        &self,
        command: &str,
        user: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        let command = &command.replace('\0', "");
        let mut relays = self.relays.lock().await;
        if self.relay_ready(&mut relays, user).await {
            let spare: Vec<u32> = relays.by_user.values().map(|r| r.pid).collect();
            if let Some(relay) = relays.by_user.get_mut(user) {
                let ran = self
                    .run_relayed(relay, command, user, timeout, &spare)
                    .await;
                // A relay that failed or lost its way mid-reply is not asked again.
                if !matches!(ran, Ok((_, true))) {
                    relays.by_user.remove(user);
                }
                return ran.map(|(output, _)| output);
            }
        }
        self.run_exec(command, user, timeout).await
    }

    /// Whether `user` has a live relay now, starting one if needed. A relay whose output
    /// has ended (killed by a command's `kill -1`) is replaced.
    async fn relay_ready(&self, relays: &mut Relays, user: &str) -> bool {
        if self.channel != SandboxChannel::Relay || relays.exec_only {
            return false;
        }
        if relays.by_user.get_mut(user).is_some_and(|r| !r.alive()) {
            debug!(container = %self.id, user, "the relay was killed; starting another");
            relays.by_user.remove(user);
        }
        if relays.by_user.contains_key(user) {
            return true;
        }
        match self.start_relay(user).await {
            Ok(relay) => {
                relays.by_user.insert(user.to_owned(), relay);
                true
            }
            Err(e) => {
                warn!(container = %self.id, user, error = %synthfleet_core::error_chain(&e),
                    "the command relay could not start: this sandbox's commands go through docker exec");
                relays.exec_only = true;
                false
            }
        }
    }

    async fn start_relay(&self, user: &str) -> Result<Relay, SandboxError> {
        let (_, output, input) = self
            .start(
                CreateExecOptions {
                    cmd: Some(vec!["bash", "-c", relay::SCRIPT]),
                    user: Some(user),
                    // Each command says where it runs.
                    working_dir: Some("/"),
                    env: Some(COMMAND_ENV.to_vec()),
                    attach_stdin: Some(true),
                    ..Default::default()
                },
                "the relay",
            )
            .await?;
        tokio::time::timeout(HOUSEKEEPING_TIMEOUT, Relay::greet(&self.id, input, output))
            .await
            .map_err(|_| SandboxError::Unresponsive {
                container: self.id.clone(),
            })?
    }

    /// One command through `relay`; also says whether the relay is fit for the next one.
    /// At the timeout every process of `user` but the relays is killed, and the relay's
    /// end marker is awaited, so the next command starts on a quiet sandbox.
    async fn run_relayed(
        &self,
        relay: &mut Relay,
        command: &str,
        user: &str,
        timeout: Duration,
        spare: &[u32],
    ) -> Result<(ExecOutput, bool), SandboxError> {
        let started = Instant::now();
        let mut reader = relay
            .send(&self.workdir, command)
            .await
            .map_err(|e| docker_error(&self.id, "sending a command to the relay", e))?;
        let mut capture = Capture::new(self.max_output_bytes);
        let read = tokio::time::timeout(
            timeout,
            relay.read_reply(&self.id, &mut reader, &mut capture),
        )
        .await;
        let (exit_code, timed_out, healthy) = match read {
            Ok(Ok(Reply::Finished(status))) => (status, false, true),
            Ok(Ok(Reply::Lost)) => {
                warn!(container = %self.id, user, "the relay was killed during the command; its exit status is unknown");
                reader.finish(&mut capture);
                (None, false, false)
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                self.kill_user_processes(user, spare).await?;
                let mut discard = Capture::new(0);
                let drained = tokio::time::timeout(
                    HOUSEKEEPING_TIMEOUT,
                    relay.read_reply(&self.id, &mut reader, &mut discard),
                )
                .await;
                (None, true, matches!(drained, Ok(Ok(Reply::Finished(_)))))
            }
        };
        let (output, truncated) = capture.finish();
        Ok((
            ExecOutput {
                exit_code,
                output,
                truncated,
                timed_out,
                duration: started.elapsed(),
            },
            healthy,
        ))
    }

    /// One command through its own `docker exec`.
    async fn run_exec(
        &self,
        command: &str,
        user: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        let started = Instant::now();
        let (exec_id, mut output, _) = self
            .start(
                CreateExecOptions {
                    cmd: Some(vec!["bash", "-c", command]),
                    user: Some(user),
                    working_dir: Some(self.workdir.as_str()),
                    env: Some(COMMAND_ENV.to_vec()),
                    ..Default::default()
                },
                "an exec",
            )
            .await?;
        let mut capture = Capture::new(self.max_output_bytes);
        let drained = tokio::time::timeout(timeout, async {
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(log) => capture.push(&log.into_bytes()),
                    Err(e) => return Err(docker_error(&self.id, "reading exec output", e)),
                }
            }
            Ok(())
        })
        .await;
        drop(output);
        let timed_out = match drained {
            Ok(result) => {
                result?;
                false
            }
            Err(_) => {
                self.kill_user_processes(user, &[]).await?;
                self.wait_exited(&exec_id).await?;
                true
            }
        };
        let exit_code = if timed_out {
            None
        } else {
            self.docker
                .inspect_exec(&exec_id)
                .await
                .map_err(|e| docker_error(&self.id, "inspecting an exec", e))?
                .exit_code
        };
        let (output, truncated) = capture.finish();
        Ok(ExecOutput {
            exit_code,
            output,
            truncated,
            timed_out,
            duration: started.elapsed(),
        })
    }

    /// Kills every process of `user` but init, the keeper and `spare` (the relays): what
    /// a timed-out command left running. Without CAP_KILL a process may only signal its
    /// own uid, so this runs as that user. Returns once the kill has finished: a kill
    /// still sweeping /proc would also kill the next command's process while runc starts
    /// it ("write init-p: broken pipe").
    async fn kill_user_processes(&self, user: &str, spare: &[u32]) -> Result<(), SandboxError> {
        let spare: Vec<String> = spare.iter().map(u32::to_string).collect();
        let mut cmd = vec!["bash", "-c", KILL_ALL_BUT_INIT_AND_KEEPER, "kill"];
        cmd.extend(spare.iter().map(String::as_str));
        let (exec_id, mut output, _) = self
            .start(
                CreateExecOptions {
                    cmd: Some(cmd),
                    user: Some(user),
                    ..Default::default()
                },
                "a kill exec",
            )
            .await?;
        let drained = tokio::time::timeout(HOUSEKEEPING_TIMEOUT, async {
            while output.next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            return Err(SandboxError::Unresponsive {
                container: self.id.clone(),
            });
        }
        self.wait_exited(&exec_id).await
    }

    /// Creates and starts an exec with its output attached; returns its id, its output
    /// and its stdin (open only when `options` attach it).
    async fn start(
        &self,
        options: CreateExecOptions<&str>,
        what: &str,
    ) -> Result<(String, ExecStream, Input), SandboxError> {
        let exec = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..options
                },
            )
            .await
            .map_err(|e| docker_error(&self.id, &format!("creating {what}"), e))?;
        match self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| docker_error(&self.id, &format!("starting {what}"), e))?
        {
            StartExecResults::Attached { output, input } => Ok((exec.id, output, input)),
            StartExecResults::Detached => Err(docker_error(
                &self.id,
                &format!("starting {what}"),
                std::io::Error::other("exec started detached"),
            )),
        }
    }

    /// Waits until Docker reports the exec finished (its output can close first).
    async fn wait_exited(&self, exec_id: &str) -> Result<(), SandboxError> {
        let deadline = Instant::now() + HOUSEKEEPING_TIMEOUT;
        loop {
            let running = self
                .docker
                .inspect_exec(exec_id)
                .await
                .map_err(|e| docker_error(&self.id, "inspecting an exec", e))?
                .running
                .unwrap_or(false);
            if !running {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Unresponsive {
                    container: self.id.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the relay of `user` ahead of the first command.
    async fn warm_up(&self, user: &str) {
        let mut relays = self.relays.lock().await;
        self.relay_ready(&mut relays, user).await;
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
