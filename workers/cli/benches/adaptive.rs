//! What adaptive sampling buys: one campaign of tasks with known pass rates — some the
//! model always solves, some never, some sometimes — sampled by a fleet of worker processes
//! (moto's server for SQS, S3 and DynamoDB, real Docker sandboxes, the fake LLM server)
//! twice from the same pool of samples: `fixed` and `adaptive`. Reported from each
//! campaign's own report (`synthfleet report --format json`): the learning signal (the
//! share of trajectories in groups with mixed outcomes), and where the samples went.
//!
//! `cargo bench -p synthfleet-cli --bench adaptive -- [--workers 3] [--concurrency 4]
//! [--tasks-per-rate 4] [--samples 8] [--round 4] [--max 16]`. Needs Docker, the quick
//! start's image (`examples/quickstart/build-image.sh`), moto's server
//! (`pip install 'moto[server]'`) and the jobs binary of the same profile
//! (`cargo build --release -p synthfleet-jobs`). The table goes to stdout and
//! `target/bench/adaptive.md`.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use synthfleet_aws::DynamoMetadata;
use synthfleet_core::ports::MetadataStore;
use synthfleet_tests::bench::{self, BenchCampaign};
use synthfleet_tests::fake_llm::{FakeLlm, Script};
use synthfleet_tests::moto::Moto;
use synthfleet_tests::{require_test_image, task_line, workspace_root};

/// The pass rates of the tasks, in percent: `--tasks-per-rate` tasks of each.
const RATES: [u64; 4] = [0, 100, 50, 20];

/// The model's fix of the `leapyear` project.
const FIX: &str = "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py";

/// What one campaign's report said.
struct Measured {
    strategy: &'static str,
    sampling: Value,
    /// Trajectories per pass rate.
    by_rate: Vec<(u64, u64)>,
    /// Samples dead-lettered, and trajectories whose outcome contradicts their task's
    /// known rate (resolved at 0 %, unresolved at 100 %), with their exit status.
    dead_letters: Vec<String>,
    contradictions: Vec<String>,
    elapsed: Duration,
}

fn main() {
    let o = bench::options([
        ("workers", 3),
        ("concurrency", 4),
        ("tasks-per-rate", 4),
        ("samples", 8),
        ("round", 4),
        ("max", 16),
    ]);
    require_test_image();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let report = runtime.block_on(async {
        let moto = Moto::start().await;
        let mut runs = Vec::new();
        for adaptive in [false, true] {
            runs.push(run(&o, &moto, adaptive).await);
        }
        report(&o, &runs)
    });
    println!("{report}");
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(out.join("adaptive.md"), &report).expect("write target/bench/adaptive.md");
}

async fn run(
    o: &std::collections::BTreeMap<&'static str, u64>,
    moto: &Moto,
    adaptive: bool,
) -> Measured {
    let campaign = if adaptive {
        "signal-adaptive"
    } else {
        "signal-fixed"
    };
    let tasks_of = |rate: u64| (0..o["tasks-per-rate"]).map(move |i| format!("p{rate}-{i}"));
    // Each conversation draws its outcome in the sandbox: the fix with the task's rate.
    let scripts: Vec<Script> = RATES
        .iter()
        .flat_map(|rate| tasks_of(*rate).map(move |t| (t, *rate)))
        .map(|(t, rate)| {
            let draw = format!(
                "python3 -c 'import random, sys; sys.exit(random.random() >= {})' && {FIX}; true",
                rate as f64 / 100.0
            );
            Script::new(&format!("[{t}]"), &[&draw, "submit"])
        })
        .collect();
    let llm = FakeLlm::start(scripts);
    let tasks: Vec<String> = RATES
        .iter()
        .flat_map(|rate| tasks_of(*rate))
        .map(|t| {
            task_line(
                &t,
                "leapyear",
                &format!("[{t}] is_leap() is wrong for century years."),
                "python3 -m unittest -q test_calendar_utils",
            )
        })
        .collect();
    let sampling = if adaptive {
        format!(
            "\n[sampling]\nstrategy = \"adaptive\"\nround_size = {}\nmax_per_task = {}\n",
            o["round"], o["max"]
        )
    } else {
        String::new()
    };
    let file = BenchCampaign::write(campaign, &tasks, o["samples"], "max_steps = 4", &llm.url);
    let mut text = std::fs::read_to_string(&file.file).expect("the campaign file");
    text.push_str(&sampling);
    std::fs::write(&file.file, text).expect("the campaign file");
    let env: Vec<(String, String)> = moto.env().into_iter().chain([bench::key_env()]).collect();
    let synthfleet = Path::new(env!("CARGO_BIN_EXE_synthfleet"));
    file.submit(synthfleet, &env);

    let concurrency = o["concurrency"].to_string();
    let workers: Vec<_> = (0..o["workers"])
        .map(|i| {
            bench::worker(
                synthfleet,
                &env,
                &format!("{campaign}-{i}"),
                // The default heartbeat: at 1 s, beats queued behind the load on one
                // machine's moto read as dead workers, whose sandboxes their peers reap.
                &["--concurrency", &concurrency],
            )
        })
        .collect();
    let metadata = DynamoMetadata::new(moto.clients.dynamodb.clone(), &moto.names.table);
    let started = Instant::now();
    // Finished: every planned sample accounted for, and no round open.
    while !metadata
        .campaign(campaign)
        .await
        .ok()
        .flatten()
        .is_some_and(|c| c.is_finished())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60 * 60),
            "the fleet did not finish in an hour"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    bench::stop(workers);

    let metas = metadata.trajectories(campaign).await.expect("the results");
    let by_rate = RATES
        .iter()
        .map(|rate| {
            let prefix = format!("p{rate}-");
            let n = metas
                .iter()
                .filter(|m| m.summary.instance_id.starts_with(&prefix))
                .count() as u64;
            (*rate, n)
        })
        .collect();
    let contradictions = metas
        .iter()
        .filter(|m| {
            let id = &m.summary.instance_id;
            (id.starts_with("p0-") && m.resolved == Some(true))
                || (id.starts_with("p100-") && m.resolved != Some(true))
        })
        .map(|m| {
            format!(
                "{}#{} {:?} {}",
                m.summary.instance_id, m.summary.sample_index, m.resolved, m.exit_status
            )
        })
        .collect();
    let dead_letters = metadata
        .dead_letters(campaign)
        .await
        .expect("the dead letters")
        .into_iter()
        .map(|d| format!("{}: {}", d.key, d.error))
        .collect();
    let out = Command::new(synthfleet)
        .args(["report"])
        .arg(&file.file)
        .args(["--format", "json"])
        .envs(env.iter().cloned())
        .output()
        .expect("synthfleet report");
    assert!(
        out.status.success(),
        "report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report's JSON");
    Measured {
        strategy: if adaptive { "adaptive" } else { "fixed" },
        sampling: report["sampling"].clone(),
        by_rate,
        dead_letters,
        contradictions,
        elapsed,
    }
}

fn report(o: &std::collections::BTreeMap<&'static str, u64>, runs: &[Measured]) -> String {
    let mut out = format!(
        "Adaptive sampling: {} tasks at each pass rate of {:?} %, a pool of {} samples per task; adaptive rounds of {}, at most {} per task; {} workers × -j {} on moto and Docker.\n\n",
        o["tasks-per-rate"],
        RATES,
        o["samples"],
        o["round"],
        o["max"],
        o["workers"],
        o["concurrency"]
    );
    out += "| sampling | trajectories | groups (mixed) | learning signal | samples on 0 % / 100 % / 50 % / 20 % tasks | tasks stopped | wall time |\n|---|---|---|---|---|---|---|\n";
    for r in runs {
        let s = &r.sampling;
        let stopped = s["tally"].as_object().map_or("—".to_owned(), |t| {
            [
                "all_resolved",
                "all_unresolved",
                "max_per_task",
                "pool_spent",
                "no_outcome",
            ]
            .iter()
            .filter(|k| t.get(**k).and_then(Value::as_u64).unwrap_or(0) > 0)
            .map(|k| format!("{k} {}", t[*k]))
            .collect::<Vec<_>>()
            .join(", ")
        });
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {:.1} % | {} | {} | {:.0} s |",
            r.strategy,
            s["trajectories"],
            s["groups"],
            s["mixed_groups"],
            s["signal_share"].as_f64().unwrap_or(0.0) * 100.0,
            r.by_rate
                .iter()
                .map(|(_, n)| n.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            stopped,
            r.elapsed.as_secs_f64()
        );
    }
    for r in runs {
        for line in r
            .dead_letters
            .iter()
            .map(|d| format!("dead letter: {d}"))
            .chain(
                r.contradictions
                    .iter()
                    .map(|c| format!("outcome against the known rate: {c}")),
            )
        {
            let _ = writeln!(out, "\n{} — {line}", r.strategy);
        }
    }
    out
}
