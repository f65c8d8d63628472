//! Test doubles for the crate's unit tests: sandboxes in memory, a scripted model, and a
//! submitted campaign on the local backends in a temporary directory. A whole worker runs
//! over them in milliseconds, with no Docker and no HTTP.

use crate::campaigns::SingleCampaign;
use crate::rollout::Rollouts;
use crate::worker::{Worker, WorkerConfig, WorkerEvent, WorkerSummary};
use async_trait::async_trait;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synthfleet_core::MicroUsd;
use synthfleet_core::campaign::Campaign;
use synthfleet_core::message::TaskMessage;
use synthfleet_core::metrics::{DataPoint, Metric, MetricSink};
use synthfleet_core::ports::{
    ChatCompletion, ChatModel, ChatRequest, ExecOutput, LlmError, MetadataStore, Queue, Sandbox,
    SandboxError, SandboxProvider, SandboxSpec, ScaleInProtection, StoreError, Usage,
};
use synthfleet_core::start;
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::task::parse_tasks;
use synthfleet_core::templates::Templates;
use synthfleet_core::trajectory::{ChatMessage, FunctionCall, Role, ToolCall};
use synthfleet_llm::{ModelGuards, ModelPool, Wallet};
use synthfleet_local::{LocalMetadata, LocalObjectStore, LocalQueue, LocalState};
use tokio_util::sync::CancellationToken;

/// The commit the isolation script reports in every memory sandbox.
pub const START_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// The workdir's diff in every memory sandbox.
pub const PATCH: &str = "diff --git a/fix.txt b/fix.txt\nnew file mode 100644\n--- /dev/null\n+++ b/fix.txt\n@@ -0,0 +1 @@\n+fixed\n";

/// The name of the campaign a [`TestBed`] submits, and of its one model.
pub const CAMPAIGN: &str = "demo";
pub const MODEL: &str = "scripted";

/// A message of sample 0 of task `t1` of the campaign `demo`, after `failures` failed attempts.
pub fn message(failures: u32) -> TaskMessage {
    let task = parse_tasks(Path::new("t.jsonl"), &task_row("t1"))
        .expect("task")
        .remove(0);
    TaskMessage {
        failures,
        ..TaskMessage::new(CAMPAIGN, &task, 0)
    }
}

/// A command that exited with `code`, printing `output`.
pub fn exited(code: i64, output: &str) -> ExecOutput {
    ExecOutput {
        exit_code: Some(code),
        output: output.to_owned(),
        truncated: false,
        timed_out: false,
        duration: Duration::from_millis(1),
    }
}

/// Answers a command, or leaves it to the defaults (`None`).
pub type Answers = Arc<dyn Fn(&str) -> Option<ExecOutput> + Send + Sync>;

/// What the memory sandboxes saw.
#[derive(Debug, Default, Clone)]
pub struct SandboxLog {
    pub created: usize,
    pub destroyed: usize,
    /// Every command, in order (as root or not).
    pub commands: Vec<String>,
    /// Paths written.
    pub files: Vec<String>,
}

/// Sandboxes in memory. A command is answered by the test's answers first; else the
/// isolation script (`core::start`, which the agent's sandbox runs first) reports
/// [`START_COMMIT`], `git diff --cached` prints [`PATCH`], and anything else exits 0 with
/// no output.
#[derive(Clone)]
pub struct MemorySandboxes {
    answers: Answers,
    log: Arc<Mutex<SandboxLog>>,
}

impl MemorySandboxes {
    pub fn new() -> MemorySandboxes {
        MemorySandboxes::answering(|_| None)
    }

    pub fn answering(
        answers: impl Fn(&str) -> Option<ExecOutput> + Send + Sync + 'static,
    ) -> MemorySandboxes {
        MemorySandboxes {
            answers: Arc::new(answers),
            log: Arc::default(),
        }
    }

    pub fn log(&self) -> SandboxLog {
        self.log.lock().expect("sandbox log").clone()
    }
}

struct MemorySandbox {
    id: String,
    workdir: String,
    answers: Answers,
    log: Arc<Mutex<SandboxLog>>,
}

impl MemorySandbox {
    fn answer(&self, command: &str) -> ExecOutput {
        self.log
            .lock()
            .expect("sandbox log")
            .commands
            .push(command.to_owned());
        if let Some(out) = (self.answers)(command) {
            return out;
        }
        if command == start::isolation_script(&self.workdir) {
            exited(0, &format!("synthfleet-start: {START_COMMIT}\n"))
        } else if command.contains("diff --cached") {
            exited(0, PATCH)
        } else {
            exited(0, "")
        }
    }
}

#[async_trait]
impl Sandbox for MemorySandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn image_digest(&self) -> Option<&str> {
        Some("sha256:memory")
    }

    async fn exec(&self, command: &str, _timeout: Duration) -> Result<ExecOutput, SandboxError> {
        Ok(self.answer(command))
    }

    async fn exec_root(
        &self,
        command: &str,
        _timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        Ok(self.answer(command))
    }

    async fn write_file(&self, path: &str, _contents: &[u8]) -> Result<(), SandboxError> {
        self.log
            .lock()
            .expect("sandbox log")
            .files
            .push(path.to_owned());
        Ok(())
    }

    /// Runs the command; the gateway is never asked (nothing in memory makes requests).
    async fn exec_serving(
        &self,
        command: &str,
        timeout: Duration,
        _port: u16,
        _gateway: &dyn synthfleet_core::ports::Gateway,
    ) -> Result<ExecOutput, SandboxError> {
        self.exec(command, timeout).await
    }

    async fn destroy(&self) -> Result<(), SandboxError> {
        self.log.lock().expect("sandbox log").destroyed += 1;
        Ok(())
    }
}

#[async_trait]
impl SandboxProvider for MemorySandboxes {
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let id = {
            let mut log = self.log.lock().expect("sandbox log");
            log.created += 1;
            format!("memory-{}", log.created)
        };
        Ok(Box::new(MemorySandbox {
            id,
            workdir: spec.workdir.clone(),
            answers: self.answers.clone(),
            log: self.log.clone(),
        }))
    }

    async fn reap(&self) -> Result<usize, SandboxError> {
        Ok(0)
    }

    async fn owners(&self) -> Result<Vec<String>, SandboxError> {
        Ok(Vec::new())
    }

    async fn reap_owner(&self, _owner: &str) -> Result<usize, SandboxError> {
        Ok(0)
    }
}

/// A provider whose `create` panics: a message handler that panics mid-rollout.
pub struct PanickingSandboxes;

#[async_trait]
impl SandboxProvider for PanickingSandboxes {
    async fn create(&self, _spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        panic!("the sandbox provider panicked (on purpose)");
    }

    async fn reap(&self) -> Result<usize, SandboxError> {
        Ok(0)
    }

    async fn owners(&self) -> Result<Vec<String>, SandboxError> {
        Ok(Vec::new())
    }

    async fn reap_owner(&self, _owner: &str) -> Result<usize, SandboxError> {
        Ok(0)
    }
}

/// Records every scale-in protection the worker sets.
#[derive(Default)]
pub struct RecordedProtection(pub Mutex<Vec<bool>>);

#[async_trait]
impl ScaleInProtection for RecordedProtection {
    async fn set_protected(&self, protected: bool) -> Result<(), StoreError> {
        self.0.lock().expect("protection log").push(protected);
        Ok(())
    }
}

/// Every data point a worker published.
#[derive(Default)]
pub struct RecordedMetrics(pub Mutex<Vec<DataPoint>>);

impl RecordedMetrics {
    /// The points of `metric`.
    pub fn of(&self, metric: Metric) -> Vec<DataPoint> {
        let points = self.0.lock().expect("metrics log");
        points
            .iter()
            .filter(|p| p.metric == metric)
            .cloned()
            .collect()
    }
}

impl MetricSink for RecordedMetrics {
    fn publish(&self, point: DataPoint) {
        self.0.lock().expect("metrics log").push(point);
    }
}

type Reply = dyn Fn(usize) -> Result<ChatMessage, LlmError> + Send + Sync;

/// A model whose n-th answer in a conversation (n counted from the assistant turns already
/// in it) is scripted, each call using 100 tokens in and 20 out.
#[derive(Clone)]
pub struct ScriptedChat(Arc<Reply>);

impl ScriptedChat {
    /// Runs `commands` with the `bash` tool, one a step, then submits.
    pub fn running(commands: &[&str]) -> ScriptedChat {
        let commands: Vec<String> = commands.iter().map(|c| (*c).to_owned()).collect();
        ScriptedChat(Arc::new(move |turn| {
            Ok(match commands.get(turn) {
                Some(command) => tool_call(turn, "bash", json!({ "command": command })),
                None => tool_call(turn, "submit", json!({})),
            })
        }))
    }

    /// Like [`ScriptedChat::running`], but its first answer at `fail_at` is unavailable
    /// (an infrastructure fault: the sample is retried); every turn asked for is logged
    /// in `asked`.
    pub fn running_failing_once(
        commands: &[&str],
        fail_at: usize,
        asked: Arc<Mutex<Vec<usize>>>,
    ) -> ScriptedChat {
        let running = ScriptedChat::running(commands);
        let failed = std::sync::atomic::AtomicBool::new(false);
        ScriptedChat(Arc::new(move |turn| {
            asked.lock().expect("asked").push(turn);
            if turn == fail_at && !failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return (ScriptedChat::unavailable().0)(turn);
            }
            (running.0)(turn)
        }))
    }

    /// Unavailable on every call (after the provider's retries): an infrastructure fault.
    pub fn unavailable() -> ScriptedChat {
        ScriptedChat(Arc::new(|_| {
            Err(LlmError::Unavailable {
                endpoint: MODEL.into(),
                attempts: 1,
                last: "503 Service Unavailable".into(),
                billed: MicroUsd::ZERO,
            })
        }))
    }
}

fn tool_call(turn: usize, name: &str, arguments: serde_json::Value) -> ChatMessage {
    ChatMessage {
        tool_calls: vec![ToolCall {
            id: format!("call_{turn}"),
            kind: "function".into(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.to_string(),
            },
        }],
        ..ChatMessage::text(Role::Assistant, format!("Step {}.", turn + 1))
    }
}

#[async_trait]
impl ChatModel for ScriptedChat {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatCompletion, LlmError> {
        let turn = request.turn();
        Ok(ChatCompletion {
            message: (self.0)(turn)?,
            usage: Usage {
                input_tokens: 100,
                output_tokens: 20,
                ..Usage::default()
            },
            retries: 0,
            finish_reason: Some("stop".into()),
            generation: Duration::from_millis(1),
        })
    }
}

/// A task of `id` whose eval passes in a memory sandbox.
pub fn task_row(id: &str) -> String {
    json!({"instance_id": id, "image": "img", "problem_statement": "Fix it.", "eval": "true"})
        .to_string()
}

/// Campaign [`CAMPAIGN`] over `tasks` (JSONL rows), submitted to the local backends in a
/// temporary directory: its item made and one message per sample sent.
pub struct TestBed {
    _dir: tempfile::TempDir,
    pub campaign: Arc<Campaign>,
    pub queue: Arc<LocalQueue>,
    pub metadata: Arc<LocalMetadata>,
    pub store: TrajectoryStore,
    /// The test worker's budget slices.
    pub wallet: Arc<Wallet>,
}

impl TestBed {
    pub async fn submitted(tasks: &[String], samples_per_task: u32) -> TestBed {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = LocalState::open(dir.path()).expect("local state");
        let queue = Arc::new(LocalQueue::new(&state, CAMPAIGN, 10));
        let metadata = Arc::new(LocalMetadata::new(&state));
        let objects = Arc::new(LocalObjectStore::new(&dir.path().join("objects")));
        let store = TrajectoryStore::new(objects.clone(), metadata.clone());
        let source = PathBuf::from("campaign.toml");
        let config = Campaign::parse(
            &source,
            &format!(
                r#"
name = "{CAMPAIGN}"
tasks = ["tasks.jsonl"]
samples_per_task = {samples_per_task}
budget_usd = 10.0

[[models]]
name = "{MODEL}"
provider = "openai"
endpoint = "http://127.0.0.1:9/v1"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
"#
            ),
        )
        .expect("campaign");
        let tasks = parse_tasks(Path::new("tasks.jsonl"), &tasks.join("\n")).expect("tasks");
        let campaign = Arc::new(Campaign::with_tasks(config, source, tasks).expect("campaign"));
        let total = campaign.tasks.len() as u64 * u64::from(samples_per_task);
        metadata
            .upsert_campaign(CAMPAIGN, campaign.budget(), total)
            .await
            .expect("the campaign item");
        for task in &campaign.tasks {
            for sample in 0..samples_per_task {
                let body = TaskMessage::new(CAMPAIGN, task, sample).to_body();
                queue.send(&body, Duration::ZERO).await.expect("send");
            }
        }
        TestBed {
            _dir: dir,
            campaign,
            queue,
            wallet: Arc::new(Wallet::new(metadata.clone(), &self::config().worker_id)),
            metadata,
            store,
        }
    }

    /// The campaign's rollouts, on `chat` and `sandboxes`.
    pub fn rollouts(
        &self,
        chat: ScriptedChat,
        sandboxes: Arc<dyn SandboxProvider>,
    ) -> Arc<Rollouts> {
        let mut pool =
            ModelPool::new(&self.campaign.config.models, &ModelGuards::default()).expect("pool");
        pool.set_client(MODEL, Arc::new(chat));
        Arc::new(Rollouts {
            campaign: self.campaign.clone(),
            pool: Arc::new(pool),
            sandboxes,
            store: self.store.clone(),
            templates: Arc::new(Templates::new("bash", &BTreeMap::new()).expect("templates")),
            worker_id: config().worker_id,
            wallet: self.wallet.clone(),
            secrets: Vec::new(),
        })
    }

    /// A worker of the campaign's queue serving `rollouts`.
    pub fn worker(&self, rollouts: Arc<Rollouts>, config: WorkerConfig) -> Worker {
        Worker::new(
            Arc::new(SingleCampaign(rollouts)),
            self.queue.clone(),
            self.metadata.clone(),
            self.wallet.clone(),
            config,
        )
    }

    /// Runs `worker` until it stops (within a few seconds, or the test fails); returns its
    /// summary and every event it sent.
    pub async fn run(&self, worker: &Worker) -> (WorkerSummary, Vec<WorkerEvent>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let events = events.clone();
            Arc::new(move |event: WorkerEvent| {
                events.lock().expect("events").push(event);
            })
        };
        let token = CancellationToken::new();
        let summary = tokio::time::timeout(
            Duration::from_secs(20),
            worker.run(token.clone(), token, sink),
        )
        .await
        .expect("the worker stops once the queue is drained");
        let events = events.lock().expect("events").clone();
        (summary, events)
    }
}

/// A worker's configuration for tests: quick polls and heartbeats, retries at once, and it
/// stops once the queue is drained.
pub fn config() -> WorkerConfig {
    WorkerConfig {
        worker_id: "test-worker".into(),
        concurrency: 2,
        visibility: Duration::from_secs(30),
        max_attempts: 3,
        max_receives: 5,
        retry_backoff: Duration::ZERO,
        idle_poll: Duration::from_millis(5),
        stop_when_drained: true,
        stop_when_campaign_stops: true,
        defer_delay: Duration::from_secs(300),
        heartbeat_every: Duration::from_secs(1),
    }
}
