//! Fleet load: what a fleet of worker processes asks of DynamoDB, SQS and S3, per rollout
//! and per LLM request, measured through a counting endpoint in front of moto's server
//! (`synthfleet_tests::counting`), and projected to 1,000 and 10,000 concurrent rollouts
//! at one LLM call per 5 s next to the services' published limits.
//!
//! `cargo bench -p synthfleet-cli --bench fleet -- [--workers 4] [--concurrency 8]
//! [--tasks 16] [--samples 4] [--steps 12]`. Needs Docker, the quick start's image
//! (`examples/quickstart/build-image.sh`) and moto's server (`pip install 'moto[server]'`).
//! The tables go to stdout and to `target/bench/fleet.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use synthfleet_aws::DynamoMetadata;
use synthfleet_core::ports::MetadataStore;
use synthfleet_tests::bench::{self, BenchCampaign, Fleet};
use synthfleet_tests::counting::{CountingProxy, Counts};
use synthfleet_tests::fake_llm::{FakeLlm, Script};
use synthfleet_tests::moto::Moto;
use synthfleet_tests::{require_test_image, task_line, workspace_root};

/// `steps` is LLM calls per rollout (the last one submits).
fn options() -> Fleet {
    Fleet::of(&bench::options([
        ("workers", 4),
        ("concurrency", 8),
        ("tasks", 16),
        ("samples", 4),
        ("steps", 12),
    ]))
}

/// Published limits the projection is held against.
mod limits {
    /// DynamoDB: write units per second one partition serves (a transactional write of an
    /// item up to 1 KB costs 2).
    pub const PARTITION_WCU: f64 = 1_000.0;
    /// DynamoDB: read units per second one partition serves.
    pub const PARTITION_RCU: f64 = 3_000.0;
    /// DynamoDB on-demand: a table's default throughput quota, write units per second.
    pub const TABLE_WCU: f64 = 40_000.0;
    /// SQS standard queue: in-flight messages per queue.
    pub const SQS_IN_FLIGHT: f64 = 120_000.0;
    /// S3: PUT/COPY/POST/DELETE requests per second per prefix.
    pub const S3_PREFIX_WRITES: f64 = 3_500.0;
}

/// One LLM call per this many seconds per rollout, for the projection.
const CALL_EVERY_S: f64 = 5.0;

fn main() {
    let options = options();
    require_test_image();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let report = runtime.block_on(run(&options));
    println!("{report}");
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(out.join("fleet.md"), &report).expect("write target/bench/fleet.md");
}

async fn run(options: &Fleet) -> String {
    let moto = Moto::start().await;
    let proxy = CountingProxy::start(&moto.endpoint);
    let scripts: Vec<Script> = (0..options.tasks)
        .map(|t| {
            let mut actions: Vec<String> = (1..options.steps)
                .map(|s| format!("echo 'step {s} of t{t}' >> notes.txt"))
                .collect();
            actions.push("submit".into());
            let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
            Script::new(&format!("[t{t}]"), &actions)
        })
        .collect();
    let llm = FakeLlm::start(scripts);

    let tasks: Vec<String> = (0..options.tasks)
        .map(|t| {
            task_line(
                &format!("t{t}"),
                "median",
                &format!("[t{t}] keep notes."),
                "test -s notes.txt",
            )
        })
        .collect();
    let campaign = "fleet-bench";
    let file = BenchCampaign::write(
        campaign,
        &tasks,
        options.samples,
        &format!("max_steps = {}", options.steps + 2),
        &llm.url,
    );
    let env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "AWS_ENDPOINT_URL" {
                (k, proxy.url.clone())
            } else {
                (k, v)
            }
        })
        .chain([bench::key_env()])
        .collect();
    let synthfleet = Path::new(env!("CARGO_BIN_EXE_synthfleet"));
    file.submit(synthfleet, &env);
    let submit_counts = proxy.counts();
    proxy.reset();

    let total = options.tasks * options.samples;
    let started = Instant::now();
    let workers: Vec<Child> = (0..options.workers)
        .map(|w| {
            bench::worker(
                synthfleet,
                &env,
                &format!("bench-{w}"),
                &[
                    "--concurrency",
                    &options.concurrency.to_string(),
                    "--heartbeat-s",
                    "30",
                ],
            )
        })
        .collect();
    let metadata = DynamoMetadata::new(moto.clients.dynamodb.clone(), &moto.names.table);
    while bench::accounted(&metadata, campaign, started).await < total {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    bench::stop(workers);
    let counts = proxy.counts();
    let requests = llm.requests().len() as u64;
    let record = metadata
        .campaign(campaign)
        .await
        .expect("read the campaign")
        .expect("the campaign item");
    assert_eq!(record.ledger.reserved.0, 0, "every slice returned");
    report(
        options,
        &Measured {
            counts: &counts,
            submit: &submit_counts,
            rollouts: total,
            requests,
            elapsed,
            campaign_item: (format!("CAMPAIGN#{campaign}"), "CAMPAIGN".to_owned()),
        },
    )
}

struct Measured<'a> {
    counts: &'a Counts,
    submit: &'a Counts,
    rollouts: u64,
    requests: u64,
    elapsed: Duration,
    campaign_item: (String, String),
}

fn report(options: &Fleet, m: &Measured<'_>) -> String {
    let mut out = String::new();
    let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
    let _ = writeln!(
        out,
        "Fleet: {} workers x -j {}, {} rollouts of {} LLM calls ({} requests served), {:.0} s; moto behind a counting endpoint.\n",
        options.workers,
        options.concurrency,
        m.rollouts,
        options.steps,
        m.requests,
        m.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| service | operation | calls | per rollout | per LLM request |\n|---|---|---|---|---|"
    );
    for ((service, op), n) in &m.counts.calls {
        let _ = writeln!(
            out,
            "| {service} | {op} | {n} | {:.2} | {:.3} |",
            per(*n, m.rollouts),
            per(*n, m.requests)
        );
    }
    let submit_calls: u64 = m.submit.calls.values().sum();
    let _ = writeln!(
        out,
        "\n(`submit` made {submit_calls} calls before the fleet started, not counted above.)\n"
    );

    let campaign_writes = m
        .counts
        .item_writes
        .get(&m.campaign_item)
        .copied()
        .unwrap_or(0);
    let (hot_item, hot_item_writes) = m
        .counts
        .hottest_item()
        .map(|(k, n)| (format!("{} / {}", k.0, k.1), n))
        .unwrap_or_default();
    let (hot_pk, hot_pk_writes) = m
        .counts
        .hottest_partition()
        .map(|(k, n)| (k.clone(), n))
        .unwrap_or_default();
    let table_writes: u64 = m.counts.item_writes.values().sum();
    let s3_writes: BTreeMap<&str, u64> = m
        .counts
        .of_service("s3")
        .into_iter()
        .filter(|(op, _)| {
            !op.starts_with("Get") && !op.starts_with("Head") && !op.starts_with("List")
        })
        .collect();
    let s3_write_total: u64 = s3_writes.values().sum();
    let (hot_prefix, hot_prefix_requests) = m
        .counts
        .hottest_prefix()
        .map(|(k, n)| (k.clone(), n))
        .unwrap_or_default();
    let seconds = m.elapsed.as_secs_f64().max(1e-3);
    let _ = writeln!(
        out,
        "| hottest | key | writes | per LLM request | per second here |\n|---|---|---|---|---|"
    );
    for (what, key, n) in [
        (
            "campaign item",
            format!("{} / {}", m.campaign_item.0, m.campaign_item.1),
            campaign_writes,
        ),
        ("item", hot_item, hot_item_writes),
        ("partition key", hot_pk, hot_pk_writes),
        ("S3 prefix (all requests)", hot_prefix, hot_prefix_requests),
    ] {
        let _ = writeln!(
            out,
            "| {what} | `{key}` | {n} | {:.4} | {:.2} |",
            per(n, m.requests),
            n as f64 / seconds
        );
    }

    // Projection: per-request rates times the fleet's request rate. DynamoDB's write
    // units are counted at 2 per item write (transactional, up to 1 KB): the worst case.
    let _ = writeln!(
        out,
        "\nProjected at one LLM call per {CALL_EVERY_S:.0} s per rollout ({} calls per rollout as measured):\n",
        options.steps
    );
    let _ = writeln!(
        out,
        "| figure | 1,000 rollouts | 10,000 rollouts | limit | at 10,000 |\n|---|---|---|---|---|"
    );
    let project = |per_request: f64, rollouts: f64| per_request * rollouts / CALL_EVERY_S;
    let rows: [(&str, f64, f64); 6] = [
        (
            "campaign item, write units/s",
            2.0 * per(campaign_writes, m.requests),
            limits::PARTITION_WCU,
        ),
        (
            "hottest item, write units/s",
            2.0 * per(hot_item_writes, m.requests),
            limits::PARTITION_WCU,
        ),
        (
            "hottest partition key, write units/s",
            2.0 * per(hot_pk_writes, m.requests),
            limits::PARTITION_WCU,
        ),
        (
            "table, write units/s",
            2.0 * per(table_writes, m.requests),
            limits::TABLE_WCU,
        ),
        (
            "hottest S3 prefix, requests/s",
            per(hot_prefix_requests, m.requests),
            limits::S3_PREFIX_WRITES,
        ),
        (
            "S3 writes (all prefixes), requests/s",
            per(s3_write_total, m.requests),
            f64::INFINITY,
        ),
    ];
    for (figure, per_request, limit) in rows {
        let (at_1k, at_10k) = (
            project(per_request, 1_000.0),
            project(per_request, 10_000.0),
        );
        let share = if limit.is_finite() {
            format!("{:.1} %", 100.0 * at_10k / limit)
        } else {
            "—".into()
        };
        let limit = if limit.is_finite() {
            format!("{limit:.0}")
        } else {
            "per prefix".into()
        };
        let _ = writeln!(
            out,
            "| {figure} | {at_1k:.1} | {at_10k:.1} | {limit} | {share} |"
        );
    }
    let _ = writeln!(
        out,
        "| SQS messages in flight | 1,000 | 10,000 | {:.0} | {:.1} % |",
        limits::SQS_IN_FLIGHT,
        100.0 * 10_000.0 / limits::SQS_IN_FLIGHT
    );
    let _ = writeln!(
        out,
        "\nReads: the campaign item is read strongly consistently at each slice draw and settle; the partition limit is {:.0} read units/s.",
        limits::PARTITION_RCU
    );
    out
}
