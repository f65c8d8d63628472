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
//!
//! Code map: `provider` — the engine on behalf of one worker and the `SandboxProvider`
//! port; `container` — one container's life (created hardened, assigned to a task, written
//! to, removed) and, in `container::exec`, running its commands; `relay` — the command
//! relay's protocol; `scripts` — the housekeeping shell scripts; [`pool`] — the warm pool;
//! `hygiene` — the disk guard and image collection.

mod capture;
mod container;
mod hygiene;
pub mod pool;
mod provider;
mod relay;
mod scripts;
mod sweeper;

pub use container::DockerSandbox;
pub use hygiene::{Collected, DiskGuard};
pub use pool::{PoolStats, WarmPool};
pub use provider::{DockerSandboxes, LABEL_HOST, LABEL_MANAGED, LABEL_WORKER};

use synthfleet_core::ports::SandboxError;

/// A failed engine call on `container` (a container id, an image, or `docker` for the
/// engine itself) during `operation`.
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
