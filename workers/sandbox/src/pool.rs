//! The warm pool: sandboxes created and started ahead of need, so that a rollout of an
//! image the worker keeps using finds one ready instead of waiting for create, start and
//! the relay (hundreds of milliseconds on a busy engine).
//!
//! * A spare is a fresh, started sandbox of one spec (image, labels, limits — not the
//!   workdir: a spare gets the task's workdir and user when it is taken, so the tasks of a
//!   campaign that share an image share spares). It is handed out once, after a command
//!   through its relay (the health check), and never comes back: `destroy` removes it.
//! * Which specs get spares: those in demand. A spec acquired [`REPEATS`] times within
//!   [`WINDOW`] (a rollout and its verification make two; a third is another rollout)
//!   gets as many spares as it will be asked for while one is made: its acquisitions per
//!   second over the last [`RATE_WINDOW`] times the time a spare takes to make (measured),
//!   doubled for bursts — at least one, at most as many as it has in use, and at most
//!   `max_idle` spares in all. So a busy spec keeps a few spares, not one per rollout, and
//!   few are left over when the work ends.
//!   A spare unused for [`IDLE_TTL`] is removed, and none is made while the host has
//!   less than [`MIN_FREE_MEMORY_MB`] of memory available.
//! * Removal runs in the background, off the rollout's critical path;
//!   [`WarmPool::shutdown`] removes the spares and waits for every removal and fill.

use crate::{DockerSandbox, DockerSandboxes};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use synthfleet_core::error_chain;
use synthfleet_core::ports::{
    ExecOutput, Gateway, Sandbox, SandboxError, SandboxProvider, SandboxSpec,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Acquisitions of one spec within [`WINDOW`] from which it gets spares.
pub const REPEATS: usize = 3;
pub const WINDOW: Duration = Duration::from_secs(300);
/// The window the acquisition rate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// A spare nobody took for this long is removed.
pub const IDLE_TTL: Duration = Duration::from_secs(60);
/// No spare is made while the host has less memory than this available.
pub const MIN_FREE_MEMORY_MB: u64 = 1024;

/// What the pool did, for benchmarks and status lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Acquisitions served by a spare.
    pub warm: u64,
    /// Acquisitions that created their sandbox.
    pub cold: u64,
    /// Spares removed unused (expired, unhealthy, or at shutdown).
    pub discarded: u64,
    /// Spares ready now.
    pub idle: usize,
}

/// A [`SandboxProvider`] that keeps spares of the specs in demand.
#[derive(Clone)]
pub struct WarmPool {
    engine: DockerSandboxes,
    state: Arc<Mutex<State>>,
    /// Fills and removals in the background.
    tasks: TaskTracker,
    /// Cancelled at shutdown: ends the timers that expire spares.
    closing: CancellationToken,
    max_idle: usize,
}

#[derive(Default)]
struct State {
    specs: HashMap<String, Demand>,
    /// When each image was last asked for.
    images: HashMap<String, Instant>,
    stats: PoolStats,
    closed: bool,
}

/// One spec's spares and demand.
struct Demand {
    spec: SandboxSpec,
    idle: VecDeque<(DockerSandbox, Instant)>,
    filling: usize,
    in_use: usize,
    acquired: VecDeque<Instant>,
    /// How long making a spare takes (a moving average).
    make_time: Duration,
}

impl WarmPool {
    /// A pool over `engine` keeping at most `max_idle` spares (0: none, every acquisition
    /// creates its sandbox).
    pub fn new(engine: DockerSandboxes, max_idle: usize) -> WarmPool {
        WarmPool {
            engine,
            state: Arc::default(),
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            max_idle,
        }
    }

    pub fn engine(&self) -> &DockerSandboxes {
        &self.engine
    }

    /// The images asked for through the pool, with when each was last asked for.
    pub fn images_used(&self) -> Vec<(String, Instant)> {
        let state = self.lock();
        state.images.iter().map(|(i, t)| (i.clone(), *t)).collect()
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            idle: state.specs.values().map(|d| d.idle.len()).sum(),
            ..state.stats
        }
    }

    /// Removes every spare and waits for the removals and fills in flight; the pool makes
    /// no spare afterwards.
    pub async fn shutdown(&self) {
        self.closing.cancel();
        let spares: Vec<DockerSandbox> = {
            let mut state = self.lock();
            state.closed = true;
            let spares: Vec<_> = state
                .specs
                .values_mut()
                .flat_map(|d| d.idle.drain(..).map(|(s, _)| s))
                .collect();
            state.stats.discarded += spares.len() as u64;
            spares
        };
        for spare in spares {
            self.remove_later(Arc::new(spare));
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_later(&self, sandbox: Arc<dyn Sandbox>) {
        self.tasks.spawn(async move {
            if let Err(e) = sandbox.destroy().await {
                warn!(container = sandbox.id(), error = %error_chain(&e), "removing a sandbox failed; the reaper will remove it");
            }
        });
    }

    /// Takes the oldest spare of `key` that answers, made a sandbox for `spec`; removes
    /// stale and unresponsive ones.
    async fn take_spare(&self, key: &str, spec: &SandboxSpec) -> Option<Arc<dyn Sandbox>> {
        loop {
            let (spare, since) = self.lock().specs.get_mut(key)?.idle.pop_front()?;
            if since.elapsed() >= IDLE_TTL {
                self.lock().stats.discarded += 1;
                self.remove_later(Arc::new(spare));
                continue;
            }
            let id = spare.id().to_owned();
            match spare.assign(&spec.workdir, &spec.limits.user).await {
                Ok(sandbox) => return Some(Arc::new(sandbox)),
                Err(e) => {
                    // The container of a spare that fails its check goes with its tether.
                    warn!(container = %id, error = %error_chain(&e), "a spare sandbox did not answer; discarded");
                    self.lock().stats.discarded += 1;
                }
            }
        }
    }

    /// Starts fills so that `key` has the spares its demand calls for.
    fn replenish(&self, key: &str) {
        let free = available_memory_mb();
        if free.is_some_and(|mb| mb < MIN_FREE_MEMORY_MB) {
            debug!(
                free_mb = free,
                "no spare sandboxes: the host is short of memory"
            );
            return;
        }
        let (spec, wanted) = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            let spares: usize = state.specs.values().map(|d| d.idle.len() + d.filling).sum();
            let room = self.max_idle.saturating_sub(spares);
            let Some(demand) = state.specs.get_mut(key) else {
                return;
            };
            let now = Instant::now();
            while demand
                .acquired
                .front()
                .is_some_and(|t| now.duration_since(*t) > WINDOW)
            {
                demand.acquired.pop_front();
            }
            if demand.acquired.len() < REPEATS {
                return;
            }
            let recent = demand
                .acquired
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) <= RATE_WINDOW)
                .count();
            let per_second = recent as f64 / RATE_WINDOW.as_secs_f64();
            let target = ((per_second * demand.make_time.as_secs_f64() * 2.0).ceil() as usize)
                .clamp(1, demand.in_use.max(1));
            let have = demand.idle.len() + demand.filling;
            let wanted = target.saturating_sub(have).min(room);
            demand.filling += wanted;
            (demand.spec.clone(), wanted)
        };
        for _ in 0..wanted {
            self.spawn_fill(key.to_owned(), spec.clone());
        }
    }

    fn spawn_fill(&self, key: String, spec: SandboxSpec) {
        let pool = self.clone();
        self.tasks.spawn(async move {
            let started = Instant::now();
            let created = pool.engine.start(&spec).await;
            let leftover = {
                let mut state = pool.lock();
                let closed = state.closed;
                let demand = state.specs.get_mut(&key);
                match (created, demand) {
                    (Ok(sandbox), Some(demand)) if !closed => {
                        demand.filling = demand.filling.saturating_sub(1);
                        demand.make_time = (demand.make_time * 3 + started.elapsed()) / 4;
                        demand.idle.push_back((sandbox, Instant::now()));
                        // It goes when unused for IDLE_TTL, asked for again or not.
                        let expiring = pool.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                () = tokio::time::sleep(IDLE_TTL) => expiring.expire(),
                                () = expiring.closing.cancelled() => {}
                            }
                        });
                        None
                    }
                    (Ok(sandbox), _) => Some(Arc::new(sandbox)),
                    (Err(e), demand) => {
                        if let Some(demand) = demand {
                            demand.filling = demand.filling.saturating_sub(1);
                        }
                        warn!(image = %spec.image, error = %error_chain(&e), "a spare sandbox could not be made");
                        None
                    }
                }
            };
            if let Some(sandbox) = leftover {
                pool.remove_later(sandbox);
            }
        });
    }

    fn expire(&self) {
        let stale: Vec<DockerSandbox> = {
            let mut state = self.lock();
            let mut stale = Vec::new();
            for demand in state.specs.values_mut() {
                while let Some((spare, since)) = demand.idle.pop_front() {
                    if since.elapsed() < IDLE_TTL {
                        demand.idle.push_front((spare, since));
                        break;
                    }
                    stale.push(spare);
                }
            }
            state.stats.discarded += stale.len() as u64;
            stale
        };
        for spare in stale {
            self.remove_later(Arc::new(spare));
        }
    }

    fn release(&self, key: &str) {
        if let Some(demand) = self.lock().specs.get_mut(key) {
            demand.in_use = demand.in_use.saturating_sub(1);
        }
    }
}

/// What a spare is made from: the spec but its workdir (given when the spare is taken).
fn key(spec: &SandboxSpec) -> String {
    format!("{}\0{:?}\0{:?}", spec.image, spec.labels, spec.limits)
}

/// `MemAvailable` of /proc/meminfo; `None` where there is none (not Linux).
fn available_memory_mb() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

#[async_trait]
impl SandboxProvider for WarmPool {
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let key = key(spec);
        {
            let mut state = self.lock();
            let demand = state.specs.entry(key.clone()).or_insert_with(|| Demand {
                spec: spec.clone(),
                idle: VecDeque::new(),
                filling: 0,
                in_use: 0,
                acquired: VecDeque::new(),
                make_time: Duration::from_millis(500),
            });
            demand.acquired.push_back(Instant::now());
            demand.in_use += 1;
            state.images.insert(spec.image.clone(), Instant::now());
        }
        let sandbox = match self.take_spare(&key, spec).await {
            Some(spare) => {
                self.lock().stats.warm += 1;
                debug!(container = spare.id(), image = %spec.image, "warm sandbox from the pool");
                Ok(spare)
            }
            None => {
                self.lock().stats.cold += 1;
                self.engine.create(spec).await.map(Arc::from)
            }
        };
        match sandbox {
            Ok(sandbox) => {
                self.replenish(&key);
                Ok(Box::new(Pooled {
                    sandbox,
                    pool: self.clone(),
                    key,
                    released: AtomicBool::new(false),
                }))
            }
            Err(e) => {
                self.release(&key);
                Err(e)
            }
        }
    }

    async fn reap(&self) -> Result<usize, SandboxError> {
        self.engine.reap().await
    }

    async fn owners(&self) -> Result<Vec<String>, SandboxError> {
        self.engine.owners().await
    }

    async fn reap_owner(&self, owner: &str) -> Result<usize, SandboxError> {
        self.engine.reap_owner(owner).await
    }
}

/// A sandbox handed out by the pool: its removal happens in the background.
struct Pooled {
    sandbox: Arc<dyn Sandbox>,
    pool: WarmPool,
    key: String,
    released: AtomicBool,
}

impl Pooled {
    /// Counts the sandbox out of its spec's demand, once.
    fn release(&self) -> bool {
        let first = !self.released.swap(true, Ordering::Relaxed);
        if first {
            self.pool.release(&self.key);
        }
        first
    }
}

/// Dropped without `destroy` (a cancelled rollout): out of the demand, and the container
/// goes with its tether.
impl Drop for Pooled {
    fn drop(&mut self) {
        self.release();
    }
}

#[async_trait]
impl Sandbox for Pooled {
    fn id(&self) -> &str {
        self.sandbox.id()
    }

    fn image_digest(&self) -> Option<&str> {
        self.sandbox.image_digest()
    }

    async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SandboxError> {
        self.sandbox.exec(command, timeout).await
    }

    async fn exec_root(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        self.sandbox.exec_root(command, timeout).await
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        self.sandbox.write_file(path, contents).await
    }

    async fn exec_serving(
        &self,
        command: &str,
        timeout: Duration,
        port: u16,
        gateway: &dyn Gateway,
    ) -> Result<ExecOutput, SandboxError> {
        self.sandbox
            .exec_serving(command, timeout, port, gateway)
            .await
    }

    /// Leaves the removal to the background ([`WarmPool::shutdown`] waits for it).
    async fn destroy(&self) -> Result<(), SandboxError> {
        if self.release() {
            self.pool.remove_later(Arc::clone(&self.sandbox));
        }
        Ok(())
    }
}
