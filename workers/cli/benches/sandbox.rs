//! Sandbox throughput: per-step overhead, acquisition (and what reducing a repository of
//! 10,000 commits to its starting state adds to it), rollouts per minute and worker
//! memory, side by side with mini-swe-agent on the same tasks, images and LLM server.
//!
//! `tests/benches/sandbox.sh` runs it (it installs mini-swe-agent from PyPI into a venv);
//! by hand: `cargo bench -p synthfleet-cli --bench sandbox -- [--mini PYTHON] [--quick]
//! [--levels 8:0,32:1] [--rollouts-only | --isolation-only]` (levels: concurrency:LLM seconds).
//! Needs Docker and the quick start's image (`examples/quickstart/build-image.sh`). The
//! tables go to stdout and to `target/bench/sandbox.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use synthfleet_core::campaign::{SandboxChannel, SandboxConfig};
use synthfleet_core::ports::{Sandbox, SandboxProvider, SandboxSpec};
use synthfleet_sandbox::{DockerSandboxes, WarmPool};
use synthfleet_tests::fake_llm::{FakeLlm, Fault, Script};
use synthfleet_tests::{TEST_IMAGE, require_test_image, workspace_root};

struct Options {
    /// The Python of a venv with mini-swe-agent; none: synthfleet alone.
    mini: Option<PathBuf>,
    quick: bool,
    /// Rollouts only: no step or acquisition measurements.
    rollouts_only: bool,
    /// The starting-state isolation only.
    isolation_only: bool,
    /// The rollout workloads: (concurrency, LLM latency in seconds).
    levels: Vec<(usize, u64)>,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        mini: None,
        quick: false,
        rollouts_only: false,
        isolation_only: false,
        levels: vec![(1, 0), (4, 0), (8, 0), (32, 0), (1, 1), (8, 1), (32, 1)],
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mini" => options.mini = args.next().map(PathBuf::from),
            "--rollouts-only" => options.rollouts_only = true,
            "--isolation-only" => options.isolation_only = true,
            "--quick" => {
                options.quick = true;
                options.levels = vec![(1, 0), (4, 0)];
            }
            // e.g. `--levels 8:0,32:1`: concurrency 8 with an instant LLM, 32 with 1 s.
            "--levels" => {
                options.levels = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|level| {
                        let (c, s) = level.split_once(':')?;
                        Some((c.parse().ok()?, s.parse().ok()?))
                    })
                    .collect()
            }
            // `cargo bench` passes --bench.
            _ => {}
        }
    }
    options
}

fn main() {
    require_test_image();
    let options = options();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut out = String::new();
    if options.isolation_only {
        out += &runtime.block_on(isolation(&options));
    } else {
        if !options.rollouts_only {
            out += &runtime.block_on(steps(&options));
            out += &runtime.block_on(acquisition(&options));
            out += &runtime.block_on(isolation(&options));
        }
        out += &rollouts(&options, &runtime);
    }
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("sandbox.md"), &out).expect("writing target/bench/sandbox.md");
    println!("\n(written to target/bench/sandbox.md)");
}

fn spec(workdir: &str, channel: SandboxChannel) -> SandboxSpec {
    SandboxSpec {
        image: TEST_IMAGE.into(),
        workdir: workdir.into(),
        labels: BTreeMap::from([("synthfleet.campaign".into(), "bench-sandbox".into())]),
        limits: SandboxConfig {
            channel,
            ..SandboxConfig::default()
        },
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Latencies of `count` trivial commands in `sandbox`.
async fn latencies(sandbox: &dyn Sandbox, count: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let out = sandbox
            .exec("true", Duration::from_secs(30))
            .await
            .expect("exec");
        assert_eq!(out.exit_code, Some(0));
        samples.push(started.elapsed());
    }
    samples
}

/// Per-step overhead: a trivial command through the relay and through `docker exec`,
/// against spawning the same command inside the container; then the relay's median with
/// 32 sandboxes stepping at once.
async fn steps(options: &Options) -> String {
    let engine = DockerSandboxes::connect("bench-steps").expect("docker");
    let count = if options.quick { 50 } else { 300 };
    let mut table = String::from("\n## Steps\n\n| what | p50 | p90 |\n|---|---|---|\n");
    let relay = engine
        .create(&spec("/tasks/median", SandboxChannel::Relay))
        .await
        .expect("sandbox");
    // Spawning `bash -c true` inside the container, timed inside it.
    let inside = relay
        .exec(
            &format!(
                "s=$(date +%s%N); for i in $(seq {count}); do bash -c true; done; e=$(date +%s%N); echo $(( (e - s) / {count} ))"
            ),
            Duration::from_secs(120),
        )
        .await
        .expect("exec");
    let spawn = Duration::from_nanos(inside.output.trim().parse().expect("ns per spawn"));
    table += &format!(
        "| spawn `bash -c true` inside the container | {} | |\n",
        ms(spawn)
    );
    let mut idle = latencies(relay.as_ref(), count).await;
    let relay_p50 = percentile(&mut idle, 0.5);
    table += &format!(
        "| step through the relay | {} | {} |\n",
        ms(relay_p50),
        ms(percentile(&mut idle, 0.9))
    );
    let exec = engine
        .create(&spec("/tasks/median", SandboxChannel::Exec))
        .await
        .expect("sandbox");
    let mut raw = latencies(exec.as_ref(), count / 2).await;
    table += &format!(
        "| step through `docker exec` (the engine's round trip) | {} | {} |\n",
        ms(percentile(&mut raw, 0.5)),
        ms(percentile(&mut raw, 0.9))
    );
    relay.destroy().await.expect("destroy");
    exec.destroy().await.expect("destroy");

    let concurrent = 32;
    let mut sandboxes = Vec::new();
    for _ in 0..concurrent {
        sandboxes.push(
            engine
                .create(&spec("/tasks/median", SandboxChannel::Relay))
                .await
                .expect("sandbox"),
        );
    }
    let per = if options.quick { 10 } else { 40 };
    let mut loaded: Vec<Duration> =
        futures_util::future::join_all(sandboxes.iter().map(|s| latencies(s.as_ref(), per)))
            .await
            .into_iter()
            .flatten()
            .collect();
    let loaded_p50 = percentile(&mut loaded, 0.5);
    table += &format!(
        "| step through the relay, {concurrent} sandboxes stepping at once | {} | {} |\n",
        ms(loaded_p50),
        ms(percentile(&mut loaded, 0.9))
    );
    for sandbox in &sandboxes {
        sandbox.destroy().await.expect("destroy");
    }
    table += &format!(
        "\nRelay overhead over spawning inside: {} (target ≤ 5 ms). {concurrent} sandboxes stepping back to back, with no think time, saturate the CPU: {:.2}× the idle median (the step median under 32 concurrent rollouts is in the rollouts table).\n",
        ms(relay_p50.saturating_sub(spawn)),
        loaded_p50.as_secs_f64() / relay_p50.as_secs_f64()
    );
    print!("{table}");
    table
}

/// Cold acquisition (create, start, relay) against a warm one (a spare of the pool).
async fn acquisition(options: &Options) -> String {
    let engine = DockerSandboxes::connect("bench-acquire").expect("docker");
    let rounds = if options.quick { 5 } else { 20 };
    let spec = spec("/tasks/roman", SandboxChannel::Relay);
    let mut cold = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let sandbox = engine.create(&spec).await.expect("sandbox");
        cold.push(started.elapsed());
        sandbox.destroy().await.expect("destroy");
    }
    let pool = WarmPool::new(engine, 4);
    // Sandboxes held in use keep the spec in demand, so the pool keeps spares of it.
    let mut held = Vec::new();
    for _ in 0..synthfleet_sandbox::pool::REPEATS {
        held.push(pool.create(&spec).await.expect("sandbox"));
    }
    let mut warm = Vec::new();
    for _ in 0..rounds {
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.stats().idle == 0 {
            assert!(Instant::now() < deadline, "no spare within a minute");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let sandbox = pool.create(&spec).await.expect("sandbox");
        warm.push(started.elapsed());
        held.push(sandbox);
        if held.len() > 6 {
            held.remove(0).destroy().await.expect("destroy");
        }
    }
    for sandbox in &held {
        sandbox.destroy().await.expect("destroy");
    }
    pool.shutdown().await;
    let table = format!(
        "\n## Acquiring a sandbox\n\n| acquisition | p50 | p90 |\n|---|---|---|\n| cold: create, start, relay | {} | {} |\n| warm: a spare of the pool, health-checked | {} | {} |\n",
        ms(percentile(&mut cold, 0.5)),
        ms(percentile(&mut cold, 0.9)),
        ms(percentile(&mut warm, 0.5)),
        ms(percentile(&mut warm, 0.9)),
    );
    print!("{table}");
    table
}

/// The image with a long history the isolation is measured on.
const HISTORY_BENCH_IMAGE: &str = "synthfleet/bench-history:10k";

/// Writes a `git fast-import` stream of 10,000 commits over 2,000 files, a release tag
/// every 100 commits.
const HISTORY_GENERATOR: &str = r##"
import sys
w = sys.stdout.buffer
def data(b):
    w.write(b"data %d\n" % len(b)); w.write(b); w.write(b"\n")
files, commits = 2000, 10000
for c in range(commits):
    w.write(b"commit refs/heads/main\nmark :%d\n" % (c + 1))
    w.write(b"committer dev <dev@bench.invalid> %d +0000\n" % (1600000000 + c))
    data(b"change %d" % c)
    if c:
        w.write(b"from :%d\n" % c)
    touched = range(files) if c == 0 else [(c * 7 + k * 13) % files for k in range(3)]
    for f in touched:
        w.write(b"M 100644 inline src/pkg%02d/mod%04d.py\n" % (f % 40, f))
        data((b"# module %d, revision %d\n" % (f, c)) + b"x = 1\n" * 100)
    if c % 100 == 99:
        w.write(b"tag v%d\nfrom :%d\ntagger dev <dev@bench.invalid> %d +0000\n" % (c // 100, c + 1, 1600000000 + c))
        data(b"release")
"##;

/// Builds (once, cached by tag) an image whose /work repository has 10,000 commits over
/// 2,000 files (~4 MB tree), release tags every 100 commits, a branch at the tip, and HEAD
/// reset to the middle of the history: what a large public task image holds.
fn history_image() {
    let present = Command::new("docker")
        .args(["image", "inspect", HISTORY_BENCH_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return;
    }
    let script = format!(
        "set -euo pipefail
mkdir -p /work && cd /work && git init -q -b main
python3 -c '{}' | git fast-import --quiet
git branch future main
git reset -q --hard main~5000
git gc -q
git count-objects -vH | grep size-pack
chown -R 1000:1000 /work",
        HISTORY_GENERATOR.replace('\'', r"'\''")
    );
    let name = "synthfleet-bench-history-build";
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    let out = Command::new("docker")
        .args([
            "run",
            "--name",
            name,
            "--network",
            "none",
            "--user",
            "0",
            TEST_IMAGE,
        ])
        .args(["bash", "-c", &script])
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "building the history: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = Command::new("docker")
        .args([
            "commit",
            "--change",
            "WORKDIR /work",
            name,
            HISTORY_BENCH_IMAGE,
        ])
        .output()
        .expect("docker commit");
    assert!(committed.status.success(), "docker commit");
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    println!(
        "built {HISTORY_BENCH_IMAGE}: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

/// What reducing the repository to its starting state (`synthfleet_core::start`) adds to
/// acquiring the agent's sandbox: the isolation script, timed on fresh sandboxes of a
/// 10,000-commit repository and of a one-commit quick-start task.
async fn isolation(options: &Options) -> String {
    history_image();
    let engine = DockerSandboxes::connect("bench-isolation").expect("docker");
    let rounds = if options.quick { 3 } else { 10 };
    let mut table = String::from(
        "\n## Reducing the repository to its starting state (once per rollout, at acquisition)\n\n| repository | p50 | p90 |\n|---|---|---|\n",
    );
    for (what, image, workdir) in [
        (
            "quick-start task (1 commit, a few files)",
            TEST_IMAGE,
            "/tasks/roman",
        ),
        (
            "10,000 commits, 2,000 files, 100 tags, HEAD mid-history",
            HISTORY_BENCH_IMAGE,
            "/work",
        ),
    ] {
        let spec = SandboxSpec {
            image: image.into(),
            ..spec(workdir, SandboxChannel::Relay)
        };
        let mut samples = Vec::new();
        for _ in 0..rounds {
            let sandbox = engine.create(&spec).await.expect("sandbox");
            let started = Instant::now();
            let out = sandbox
                .exec(
                    &synthfleet_core::start::isolation_script(workdir),
                    Duration::from_secs(300),
                )
                .await
                .expect("isolation");
            samples.push(started.elapsed());
            assert_eq!(out.exit_code, Some(0), "{}", out.output);
            let check = sandbox
                .exec(
                    "git -c safe.directory='*' rev-list --all --count",
                    Duration::from_secs(60),
                )
                .await
                .expect("count");
            assert_eq!(check.output.trim(), "1", "one commit left");
            sandbox.destroy().await.expect("destroy");
        }
        table += &format!(
            "| {what} | {} | {} |\n",
            ms(percentile(&mut samples, 0.5)),
            ms(percentile(&mut samples, 0.9))
        );
    }
    print!("{table}");
    table
}

/// One quick-start task: its problem, workdir and scripted actions.
struct BenchTask {
    line: serde_json::Value,
    actions: Vec<String>,
}

fn bench_tasks() -> Vec<BenchTask> {
    let path = workspace_root().join("examples/quickstart/tasks.jsonl");
    let text = std::fs::read_to_string(&path).expect("the quick start's tasks");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut line: serde_json::Value = serde_json::from_str(l).expect("task line");
            let actions = line["replay"]
                .as_array()
                .expect("replay actions")
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            if let Some(task) = line.as_object_mut() {
                task.remove("replay");
            }
            BenchTask { line, actions }
        })
        .collect()
}

/// The needle that picks a task's script: the start of its problem statement.
fn needle(task: &BenchTask) -> String {
    task.line["problem_statement"]
        .as_str()
        .expect("problem statement")
        .chars()
        .take(40)
        .collect()
}

/// What a run came to.
struct Measured {
    wall: Duration,
    completed: usize,
    peak_rss_mb: f64,
    /// Median sandbox time of an agent step, from the records (synthfleet only).
    step_p50: Option<Duration>,
    /// Share of sandboxes that came from the warm pool (synthfleet only).
    warm_share: Option<f64>,
}

/// Runs `command` to completion, sampling its peak resident memory.
fn measure(mut command: Command) -> (std::process::Output, Duration, f64) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let status = format!("/proc/{pid}/status");
    let mut peak_kb = 0u64;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let readers = [stdout.map(read_all), stderr.map(read_all)];
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        if child.try_wait().expect("poll").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed();
    let [stdout, stderr] =
        readers.map(|r| r.map(|h| h.join().expect("reader")).unwrap_or_default());
    let status = child.wait().expect("wait");
    (
        std::process::Output {
            status,
            stdout,
            stderr,
        },
        wall,
        peak_kb as f64 / 1024.0,
    )
}

fn read_all(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

fn write_tasks(dir: &Path, tasks: &[BenchTask]) -> PathBuf {
    let path = dir.join("tasks.jsonl");
    let lines: Vec<String> = tasks.iter().map(|t| t.line.to_string()).collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("tasks.jsonl");
    path
}

/// The sandbox time of every agent step of the campaign stored in `state`.
async fn step_durations(state: &Path) -> Vec<Duration> {
    use synthfleet_core::ports::MetadataStore;
    let local = synthfleet_local::LocalState::open(state).expect("open state");
    let metadata = std::sync::Arc::new(synthfleet_local::LocalMetadata::new(&local));
    let store = synthfleet_core::store::TrajectoryStore::new(
        std::sync::Arc::new(synthfleet_local::LocalObjectStore::new(
            &state.join("objects"),
        )),
        metadata.clone(),
    );
    let mut durations = Vec::new();
    for meta in metadata.trajectories("bench").await.expect("trajectories") {
        let record = store.load(&meta).await.expect("a record");
        durations.extend(
            record
                .steps
                .iter()
                .filter(|s| s.action.is_some())
                .map(|s| Duration::from_millis(s.duration_ms)),
        );
    }
    durations
}

/// A fake LLM server playing `actions(task)` for each task, taking `delay` per call.
fn scripted_llm(
    tasks: &[BenchTask],
    delay: Duration,
    actions: impl Fn(&BenchTask) -> Vec<String>,
) -> FakeLlm {
    let scripts = tasks
        .iter()
        .map(|t| {
            let actions = actions(t);
            Script {
                always: (!delay.is_zero()).then_some(Fault::Delay(delay)),
                ..Script::new(
                    &needle(t),
                    &actions.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            }
        })
        .collect();
    FakeLlm::start(scripts)
}

fn run_synthfleet(
    runtime: &tokio::runtime::Runtime,
    tasks: &[BenchTask],
    samples: u32,
    concurrency: usize,
    delay: Duration,
) -> Measured {
    let llm = scripted_llm(tasks, delay, |t| t.actions.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    write_tasks(dir.path(), tasks);
    let campaign = format!(
        "name = \"bench\"\ntasks = [\"tasks.jsonl\"]\nsamples_per_task = {samples}\nbudget_usd = 100.0\n\n[[models]]\nname = \"fake\"\nprovider = \"openai\"\nmodel = \"fake-coder\"\nendpoint = \"{}\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\nmax_tokens = 256\n\n[scaffold]\nmax_steps = 20\nstep_timeout_s = 60\n\n[sandbox]\nmemory_mb = 512\npids = 256\n\n[storage]\nkind = \"local\"\ndir = \"state\"\n",
        llm.url
    );
    let file = dir.path().join("campaign.toml");
    std::fs::write(&file, campaign).expect("campaign.toml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_synthfleet"));
    command.args([
        "--log-format",
        "json",
        "run",
        file.to_str().expect("utf-8 path"),
        "-j",
        &concurrency.to_string(),
        "--no-progress",
    ]);
    let (output, wall, peak_rss_mb) = measure(command);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "synthfleet run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let completed = stdout
        .lines()
        .find_map(|l| {
            l.split_once(": ")?
                .1
                .split(" trajectories")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    // The run's last log line counts the sandboxes the warm pool served.
    let finished: serde_json::Value = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "campaign run finished")
        .unwrap_or_default();
    let acquisitions = ["warm_acquisitions", "cold_acquisitions"]
        .map(|k| finished["fields"][k].as_u64().unwrap_or_default());
    let mut steps = runtime.block_on(step_durations(&dir.path().join("state")));
    Measured {
        warm_share: Some(acquisitions[0] as f64 / acquisitions.iter().sum::<u64>().max(1) as f64),
        wall,
        completed,
        peak_rss_mb,
        step_p50: (!steps.is_empty()).then(|| percentile(&mut steps, 0.5)),
    }
}

/// mini-swe-agent submits with a command whose output starts with this line (its
/// default configuration takes commands as `bash` tool calls, as the fake server sends).
const MINI_SUBMIT: &str = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git diff";

fn run_mini(
    python: &Path,
    tasks: &[BenchTask],
    samples: u32,
    concurrency: usize,
    delay: Duration,
) -> Measured {
    let llm = scripted_llm(tasks, delay, |t| {
        let mut actions: Vec<String> = t
            .actions
            .iter()
            .filter(|a| a.as_str() != "submit")
            .cloned()
            .collect();
        actions.push(MINI_SUBMIT.to_owned());
        actions
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let tasks_file = write_tasks(dir.path(), tasks);
    let results = dir.path().join("results.json");
    let mut command = Command::new(python);
    command
        .arg(workspace_root().join("tests/benches/mini_swe_agent.py"))
        .args(["--tasks", tasks_file.to_str().expect("utf-8 path")])
        .args(["--api-base", &llm.url, "--model", "fake-coder"])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--samples", &samples.to_string()])
        .args(["--out", results.to_str().expect("utf-8 path")]);
    let (output, wall, peak_rss_mb) = measure(command);
    assert!(
        output.status.success(),
        "mini-swe-agent failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).expect("results.json"))
            .expect("results JSON");
    Measured {
        wall,
        completed: results["completed"].as_u64().unwrap_or(0) as usize,
        peak_rss_mb,
        step_p50: None,
        warm_share: None,
    }
}

fn per_minute(m: &Measured) -> f64 {
    m.completed as f64 / m.wall.as_secs_f64() * 60.0
}

/// Rollouts per minute at concurrency 1, 4, 8 and 32, with an instant LLM and with 1 s
/// per call; synthfleet verifies every rollout in a fresh sandbox, mini-swe-agent does not.
fn rollouts(options: &Options, runtime: &tokio::runtime::Runtime) -> String {
    let tasks = bench_tasks();
    let mut table = String::from(
        "\n## Rollouts (six quick-start tasks; synthfleet verifies each rollout in a fresh sandbox, mini-swe-agent does not)\n\n| concurrency, LLM latency | rollouts | mini-swe-agent | synthfleet | ratio | synthfleet step median | sandboxes from the pool | peak RSS mini-swe-agent | peak RSS synthfleet |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    print!("{table}");
    for &(concurrency, delay_s) in &options.levels {
        let delay = Duration::from_secs(delay_s);
        // At least four rounds of the concurrency, at least two samples per task.
        let samples = ((concurrency * 4).div_ceil(tasks.len()) as u32).max(2);
        let total = samples as usize * tasks.len();
        let ours = run_synthfleet(runtime, &tasks, samples, concurrency, delay);
        assert_eq!(ours.completed, total, "synthfleet completed every rollout");
        let theirs = options
            .mini
            .as_deref()
            .map(|python| run_mini(python, &tasks, samples, concurrency, delay));
        let row = format!(
            "| {concurrency}, {} | {total} | {} | {:.1}/min | {} | {} | {} | {} | {:.0} MB |\n",
            if delay_s == 0 {
                "instant".to_owned()
            } else {
                format!("{delay_s} s per call")
            },
            theirs.as_ref().map_or("—".to_owned(), |m| format!(
                "{:.1}/min ({} done)",
                per_minute(m),
                m.completed
            )),
            per_minute(&ours),
            theirs.as_ref().map_or("—".to_owned(), |m| format!(
                "{:.2}×",
                per_minute(&ours) / per_minute(m)
            )),
            ours.step_p50.map_or("—".to_owned(), ms),
            ours.warm_share
                .map_or("—".to_owned(), |s| format!("{:.0}%", s * 100.0)),
            theirs
                .as_ref()
                .map_or("—".to_owned(), |m| format!("{:.0} MB", m.peak_rss_mb)),
            ours.peak_rss_mb,
        );
        print!("{row}");
        table += &row;
    }
    table
}
