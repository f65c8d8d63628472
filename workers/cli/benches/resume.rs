//! What resume saves: one campaign of long rollouts on a fleet of worker processes (moto's
//! server for SQS, S3 and DynamoDB, real Docker sandboxes, the fake LLM server) while one
//! worker is killed with SIGKILL at random every few seconds and a replacement starts, run
//! once with `scaffold.resume` on and once with it off. Reported per committed trajectory:
//! LLM requests, prompt tokens, dollars booked and wall time, and LLM requests per
//! committed step (the target with resume: ≤ 1.05).
//!
//! `cargo bench -p synthfleet-cli --bench resume -- [--workers 3] [--concurrency 4]
//! [--tasks 6] [--samples 2] [--steps 30] [--kill-every-s 30]`. Needs Docker, the quick
//! start's image (`examples/quickstart/build-image.sh`) and moto's server
//! (`pip install 'moto[server]'`). The table goes to stdout and `target/bench/resume.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use synthfleet_aws::DynamoMetadata;
use synthfleet_core::ports::MetadataStore;
use synthfleet_tests::bench::{self, BenchCampaign, Fleet};
use synthfleet_tests::fake_llm::{FakeLlm, Fault, Script};
use synthfleet_tests::moto::Moto;
use synthfleet_tests::{require_test_image, task_line, workspace_root};

/// A fleet (`steps`: commands per rollout, then it submits) and how often a worker is
/// killed.
struct Options {
    fleet: Fleet,
    kill_every: Duration,
}

fn options() -> Options {
    let o = bench::options([
        ("workers", 3),
        ("concurrency", 4),
        ("tasks", 6),
        ("samples", 2),
        ("steps", 30),
        ("kill-every-s", 30),
    ]);
    Options {
        fleet: Fleet::of(&o),
        kill_every: Duration::from_secs(o["kill-every-s"]),
    }
}

/// Deliveries of a message before it counts as a poison task, here.
const MAX_RECEIVES: u32 = 1000;

/// What one run measured.
struct Measured {
    resume: bool,
    rollouts: u64,
    committed_steps: u64,
    resumed: u64,
    restarted: u64,
    kills: u32,
    requests: u64,
    prompt_tokens: u64,
    spent_usd: f64,
    elapsed: Duration,
}

fn main() {
    let options = options();
    require_test_image();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let report = runtime.block_on(async {
        // Kills this frequent redeliver a message many times: the poison-task backstop
        // (queue redrive and the workers' --max-receives) is set out of the way.
        let moto = Moto::start_with(MAX_RECEIVES).await;
        let mut runs = Vec::new();
        for resume in [true, false] {
            runs.push(run(&options, &moto, resume).await);
        }
        report(&options, &runs)
    });
    println!("{report}");
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(out.join("resume.md"), &report).expect("write target/bench/resume.md");
}

/// A pseudo-random number below `n` (the kill schedule: xorshift, seeded per run).
fn below(state: &mut u64, n: usize) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % n as u64) as usize
}

async fn run(options: &Options, moto: &Moto, resume: bool) -> Measured {
    let campaign = if resume { "resume-on" } else { "resume-off" };
    // Each step: a model that takes 0.5 s, then a command of 0.5 s.
    let scripts: Vec<Script> = (0..options.fleet.tasks)
        .map(|t| {
            let mut actions: Vec<String> = (0..options.fleet.steps)
                .map(|s| format!("sleep 0.5; echo 'step {s} of t{t}' >> notes.txt"))
                .collect();
            actions.push("submit".into());
            let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
            Script {
                always: Some(Fault::Delay(Duration::from_millis(500))),
                ..Script::new(&format!("[t{t}]"), &actions)
            }
        })
        .collect();
    let llm = FakeLlm::start(scripts);
    let tasks: Vec<String> = (0..options.fleet.tasks)
        .map(|t| {
            task_line(
                &format!("t{t}"),
                "median",
                &format!("[t{t}] keep notes."),
                &format!("test \"$(wc -l < notes.txt)\" = {}", options.fleet.steps),
            )
        })
        .collect();
    let file = BenchCampaign::write(
        campaign,
        &tasks,
        options.fleet.samples,
        &format!("max_steps = {}\nresume = {resume}", options.fleet.steps + 2),
        &llm.url,
    );
    let env: Vec<(String, String)> = moto.env().into_iter().chain([bench::key_env()]).collect();
    let synthfleet = Path::new(env!("CARGO_BIN_EXE_synthfleet"));
    file.submit(synthfleet, &env);

    let concurrency = options.fleet.concurrency.to_string();
    let max_receives = MAX_RECEIVES.to_string();
    let spawn = |id: String| -> Child {
        bench::worker(
            synthfleet,
            &env,
            &id,
            &[
                "--concurrency",
                &concurrency,
                "--heartbeat-s",
                "1",
                "--visibility-s",
                "6",
                "--max-receives",
                &max_receives,
            ],
        )
    };
    let mut spawned = 0;
    let mut next_id = || {
        spawned += 1;
        format!("{campaign}-{spawned}")
    };
    let mut workers: Vec<Child> = (0..options.fleet.workers)
        .map(|_| spawn(next_id()))
        .collect();

    let total = options.fleet.tasks * options.fleet.samples;
    let metadata = DynamoMetadata::new(moto.clients.dynamodb.clone(), &moto.names.table);
    let started = Instant::now();
    let mut next_kill = started + options.kill_every;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut kills = 0;
    while bench::accounted(&metadata, campaign, started).await < total {
        if Instant::now() >= next_kill {
            let victim = below(&mut seed, workers.len());
            let mut killed = workers.swap_remove(victim);
            let _ = killed.kill();
            let _ = killed.wait();
            workers.push(spawn(next_id()));
            kills += 1;
            next_kill += options.kill_every;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    bench::stop(workers);

    let store = moto.store();
    let metas = metadata.trajectories(campaign).await.expect("the results");
    let (mut committed_steps, mut resumed, mut restarted) = (0, 0, 0);
    for meta in &metas {
        let record = store.load(meta).await.expect("a record");
        committed_steps += u64::from(record.totals.n_steps);
        resumed += u64::from(record.resumed_from_step.is_some());
        restarted += u64::from(record.resumes.iter().any(|r| {
            matches!(
                r.rebuild,
                synthfleet_core::resume::Rebuild::Restarted { .. }
            )
        }));
    }
    let item = metadata
        .campaign(campaign)
        .await
        .expect("read the campaign")
        .expect("the campaign item");
    Measured {
        resume,
        rollouts: metas.len() as u64,
        committed_steps,
        resumed,
        restarted,
        kills,
        requests: llm.requests().len() as u64,
        prompt_tokens: llm.prompt_tokens(),
        spent_usd: item.ledger.spent.as_usd(),
        elapsed,
    }
}

fn report(options: &Options, runs: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Resume: {} workers x -j {}, {} rollouts of {} steps (0.5 s model + 0.5 s command each), one worker killed -9 every {} s and replaced.\n",
        options.fleet.workers,
        options.fleet.concurrency,
        options.fleet.tasks * options.fleet.samples,
        options.fleet.steps + 1,
        options.kill_every.as_secs()
    );
    let _ = writeln!(
        out,
        "| resume | kills | resumed / restarted | requests per trajectory | requests per committed step | prompt tokens per trajectory | $ booked per trajectory | wall time |\n|---|---|---|---|---|---|---|---|"
    );
    for m in runs {
        let per = |n: f64| n / m.rollouts.max(1) as f64;
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {:.1} | {:.3} | {:.0} | {:.4} | {:.0} s |",
            if m.resume { "on" } else { "off" },
            m.kills,
            m.resumed,
            m.restarted,
            per(m.requests as f64),
            m.requests as f64 / m.committed_steps.max(1) as f64,
            per(m.prompt_tokens as f64),
            per(m.spent_usd),
            m.elapsed.as_secs_f64()
        );
    }
    out
}
