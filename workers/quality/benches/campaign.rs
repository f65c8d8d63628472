//! The quality jobs end to end through the object store: a generated campaign of realistic
//! records (30–100 steps, observations of 1–4 KB) committed as workers commit them (the
//! record, its facts, the metadata item), then reports and exports as `synthfleet-jobs`
//! runs them — cold (facts objects only), again with nothing new (compacted segments), and
//! after 1% more trajectories — with the process's peak memory, the export's and its
//! reading's CPU time, and pyarrow writing the exported rows side by side.
//!
//! `cargo bench -p synthfleet-quality --bench campaign [-- N ...]` (default 10000; local
//! store); prints a Markdown table (kept in docs/benchmarks.md). Needs python3 with
//! pyarrow for the comparison column.

use chrono::{Duration, TimeZone, Utc};
use futures_util::StreamExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use synthfleet_core::MicroUsd;
use synthfleet_core::campaign::{CampaignConfig, Protocol};
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::submit::{CampaignSpec, put_spec};
use synthfleet_core::trajectory::{
    ChatMessage, ExitStatus, FunctionCall, Role, SCHEMA_VERSION, ScaffoldInfo, Step, Timings,
    ToolCall, Totals, TrajectoryRecord, Verification,
};
use synthfleet_local::{LocalMetadata, LocalObjectStore, LocalState};
use synthfleet_quality::export::{ExportOptions, Exported, Filter, Format, export};
use synthfleet_quality::{CampaignData, report};

mod common;

use common::Rng;

const WORDS: [&str; 16] = [
    "def", "return", "self", "import", "test_", "assert", "class", "None", "error:", "File",
    "line", "value", "=", "(", ")", "passed",
];
const COMMANDS: [&str; 6] = [
    "cat src/module.py",
    "grep -rn 'def parse' src/",
    "python3 -m pytest -q tests/test_parse.py",
    "sed -i 's/old/new/' src/module.py",
    "ls -la src/",
    "git diff",
];

/// Sample `i` of a campaign: a record of 30–100 steps with observations of 1–4 KB.
fn record(i: usize, rng: &mut Rng) -> TrajectoryRecord {
    let steps = 30 + rng.below(71) as u32;
    let started = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
        + Duration::seconds(i as i64);
    let mut messages = vec![
        ChatMessage::text(Role::System, "You are a coding agent working in a sandbox."),
        ChatMessage::text(Role::User, format!("Task {}: fix the parser.", i % 500)),
    ];
    let mut trajectory_steps = Vec::new();
    for s in 0..steps {
        let action = COMMANDS[rng.below(COMMANDS.len() as u64) as usize].to_owned();
        let size = 1024 + rng.below(3072) as usize;
        let mut observation = String::with_capacity(size + 16);
        while observation.len() < size {
            observation.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            observation.push(if rng.below(12) == 0 { '\n' } else { ' ' });
        }
        let id = format!("call_{s}");
        messages.push(ChatMessage {
            tool_calls: vec![ToolCall {
                id: id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "bash".into(),
                    arguments: serde_json::json!({ "command": action }).to_string(),
                },
            }],
            ..ChatMessage::text(Role::Assistant, "Next step.")
        });
        messages.push(ChatMessage {
            tool_call_id: Some(id),
            ..ChatMessage::text(Role::Tool, observation.clone())
        });
        trajectory_steps.push(Step {
            index: s,
            action: Some(action),
            observation,
            observation_truncated: false,
            exit_code: Some(i64::from(rng.below(5) == 0)),
            timed_out: false,
            duration_ms: 40 + rng.below(400),
            llm_duration_ms: 800 + rng.below(4000),
            input_tokens: 2000 + rng.below(20_000),
            output_tokens: 50 + rng.below(400),
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: 0.001,
            cost_estimated: false,
            llm_retries: 0,
            model: "m".into(),
            format_error: false,
            context_elided: Vec::new(),
            tool: None,
        });
    }
    let resolved = rng.below(100) < 35;
    TrajectoryRecord {
        schema_version: SCHEMA_VERSION,
        trajectory_id: format!("{i:08}"),
        campaign: "bench".into(),
        instance_id: format!("task-{}", i % 500),
        sample_index: (i / 500) as u32,
        model: ["gpt-4.1-mini", "qwen3-coder", "claude-sonnet"][i % 3].into(),
        route: None,
        provider: "openai".into(),
        scaffold: ScaffoldInfo {
            name: "bash".into(),
            version: "1".into(),
            protocol: Protocol::ToolCalls,
            template_hash: "0".repeat(64),
        },
        messages,
        tools: Vec::new(),
        totals: Totals {
            input_tokens: trajectory_steps.iter().map(|s| s.input_tokens).sum(),
            output_tokens: trajectory_steps.iter().map(|s| s.output_tokens).sum(),
            cost_usd: 0.001 * f64::from(steps),
            llm_calls: steps,
            n_steps: steps,
            ..Totals::default()
        },
        steps: trajectory_steps,
        patch: format!(
            "--- a/src/module.py\n+++ b/src/module.py\n@@ -1 +1 @@\n-old {i}\n+new {i}\n"
        ),
        exit_status: Some(ExitStatus::Submitted),
        error: None,
        verification: Some(Verification {
            eval_exit_code: Some(i64::from(!resolved)),
            resolved,
            reward: f64::from(u8::from(resolved)),
            patch_applied: true,
            output: "tests ran".into(),
            duration_ms: 900,
            harness: None,
            fail_to_pass: None,
            pass_to_pass: None,
            resolution: None,
        }),
        timings: Timings {
            started_at: started,
            finished_at: Some(started + Duration::seconds(60)),
            duration_ms: 60_000,
            llm_ms: 40_000,
            sandbox_ms: 10_000,
            verification_ms: 900,
            infra_wait_ms: 0,
            agent_ms: 0,
        },
        image: "synthfleet/bench:1".into(),
        image_digest: None,
        environment: None,
        worker_id: "bench".into(),
        attempt: 1,
        tags: Default::default(),
        resumed_from_step: None,
        resumes: Vec::new(),
        variant: None,
    }
}

/// Commits samples `from..to` as workers do, 8 at a time; returns the stored bytes.
async fn commit(store: &TrajectoryStore, from: usize, to: usize) -> u64 {
    futures_util::stream::iter(from..to)
        .map(|i| async move {
            let record = record(i, &mut Rng(i as u64));
            store.commit(&record).await.expect("commit");
            1u64
        })
        .buffer_unordered(8)
        .fold(0, |n, one| async move { n + one })
        .await
}

/// The CPU time the process has used so far (user and system, every thread), in seconds.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // After the command's name, which may hold spaces: utime and stime are the
            // 12th and 13th fields, in clock ticks (100 a second on Linux).
            let rest = s.rsplit_once(')')?.1;
            let mut fields = rest.split_whitespace().skip(11);
            let user: f64 = fields.next()?.parse().ok()?;
            let system: f64 = fields.next()?.parse().ok()?;
            Some((user + system) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The process's peak resident memory so far, in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Loads, assesses and builds the report, as `synthfleet report` does; seconds taken.
async fn report_once(store: &TrajectoryStore) -> (f64, CampaignData) {
    let t = Instant::now();
    let data = CampaignData::load(store, "bench", &|_, _| {})
        .await
        .expect("load");
    let assessments = data.assess();
    report::build(&data, &assessments).expect("report");
    (t.elapsed().as_secs_f64(), data)
}

async fn bench(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = LocalState::open(dir.path()).expect("state");
    let store = TrajectoryStore::new(
        Arc::new(LocalObjectStore::new(&dir.path().join("objects"))),
        Arc::new(LocalMetadata::new(&state)),
    );
    let config: CampaignConfig = toml::from_str(
        "name = \"bench\"\ntasks = [\"t.jsonl\"]\nbudget_usd = 1000000.0\n[[models]]\nname = \"m\"\nprovider = \"replay\"\n",
    )
    .expect("config");
    store
        .metadata
        .upsert_campaign("bench", MicroUsd::from_usd_ceil(1e6), n as u64)
        .await
        .expect("campaign");
    put_spec(
        store.objects.as_ref(),
        &CampaignSpec {
            config,
            templates: Default::default(),
            arm_templates: Default::default(),
        },
    )
    .await
    .expect("spec");
    let t = Instant::now();
    commit(&store, 0, n).await;
    let committed = t.elapsed().as_secs_f64();
    let stored_mb = dir_size(&dir.path().join("objects/trajectories")) as f64 / 1e6;

    let (cold, _) = report_once(&store).await;
    let cold_rss = peak_rss_mb();
    let (warm, _) = report_once(&store).await;
    let new = (n / 100).max(1);
    commit(&store, n, n + new).await;
    let (incremental, data) = report_once(&store).await;
    let report_rss = peak_rss_mb();

    // What the export's reading costs alone: every record read, verified and decoded
    // once, 16 in flight, each on a runtime thread of its own, as the export reads them.
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let read = futures_util::stream::iter(data.items.iter().cloned())
        .map(|item| {
            let store = store.clone();
            async move {
                tokio::spawn(async move { store.load_as::<Exported>(&item.meta).await })
                    .await
                    .expect("a read task")
                    .expect("a record")
            }
        })
        .buffered(16)
        .fold(0, |n, _| async move { n + 1 })
        .await;
    assert_eq!(read, data.items.len());
    let read_only = t.elapsed().as_secs_f64();
    let read_cpu = cpu_seconds() - cpu;

    let out = dir.path().join("export");
    let assessments = data.assess();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let summary = export(
        &data,
        &assessments,
        &store,
        &ExportOptions {
            format: Format::Hf,
            filter: Filter::All,
            out: out.clone(),
            anonymize: false,
            rows_per_shard: 5_000,
            since: None,
        },
        &|_, _| {},
    )
    .await
    .expect("export");
    let exported = t.elapsed().as_secs_f64();
    let export_cpu = cpu_seconds() - cpu;
    let export_rss = peak_rss_mb();
    let pyarrow = pyarrow_write(&out);
    let pyarrow_whole = pyarrow_job(&dir.path().join("objects"), &out);

    let total = n + new;
    println!("\n### {n} trajectories (+{new} new), {stored_mb:.0} MB of records stored\n");
    println!("| step | time | peak RSS so far |");
    println!("|---|---|---|");
    println!("| workers commit {n} records with their facts (8 at a time) | {committed:.1} s | |");
    println!(
        "| report, cold (facts objects read one by one, then compacted) | {cold:.2} s | {cold_rss:.0} MB |"
    );
    println!("| report, nothing new (segments only) | {warm:.2} s | |");
    println!(
        "| report after {new} new (segments + {new} facts objects) | {incremental:.2} s | {report_rss:.0} MB |"
    );
    println!(
        "| export {total} rows with messages (read every record once, write Parquet) | {exported:.1} s ({:.0} rows/s, {:.0} MB; {export_cpu:.1} s of CPU) | {export_rss:.0} MB |",
        total as f64 / exported,
        summary.bytes as f64 / 1e6
    );
    println!(
        "| read, verify and decode every record alone (what the export reads; 16 in flight) | {read_only:.1} s ({:.0} rows/s; {read_cpu:.1} s of CPU) | |",
        total as f64 / read_only
    );
    println!(
        "| pyarrow writing the same rows (write only, from a table in memory) | {} | |",
        pyarrow.map_or("n/a".to_owned(), |s| format!(
            "{s:.1} s ({:.0} rows/s); export/pyarrow = {:.2}×",
            total as f64 / s,
            exported / s
        ))
    );
    println!(
        "| Python + pyarrow doing the export's whole job (read, verify, decompress, parse, build rows, write) | {} | |",
        pyarrow_whole.map_or(
            "n/a (pip install pyarrow zstandard)".to_owned(),
            |s| format!(
                "{s:.1} s ({:.0} rows/s); export/this = {:.2}×",
                total as f64 / s,
                exported / s
            )
        )
    );
    if let Some(pyarrow) = pyarrow {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        println!(
            "| CPU: the export's writing (export − reading) against pyarrow's write (1 core) | {:.1} s against {pyarrow:.1} s: {:.2}× | |",
            export_cpu - read_cpu,
            (export_cpu - read_cpu) / pyarrow
        );
        println!(
            "| the export's floor on {cores} cores: reading + pyarrow's write, over the cores | {:.1} s ({:.2}× pyarrow's write) | |",
            (read_cpu + pyarrow) / cores,
            (read_cpu + pyarrow) / cores / pyarrow
        );
    }
}

/// Seconds Python with pyarrow takes to do the export's whole job on the same stored
/// records: read each record, verify its checksum, decompress and parse it, build its row,
/// write zstd-3 Parquet in row groups of 500 (as the export does). The columns that come
/// from the quality stages rather than the record are taken from the export's own rows,
/// untimed. `None` without pyarrow and zstandard.
fn pyarrow_job(objects: &std::path::Path, export: &std::path::Path) -> Option<f64> {
    python_seconds(
        r#"
import glob, hashlib, json, sys, time
import pyarrow.parquet as pq, pyarrow as pa, zstandard
objects, export = sys.argv[1], sys.argv[2]
ours = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(export + "/data/*.parquet"))])
from_record = {"messages", "tools", "model_patch", "template_hash", "image_digest"}
staged = {r["trajectory_id"]: r for r in ours.select([n for n in ours.schema.names if n not in from_record]).to_pylist()}
paths = sorted(glob.glob(objects + "/trajectories/**/*.json.zst", recursive=True))
t = time.perf_counter()
unzstd = zstandard.ZstdDecompressor()
writer = pq.ParquetWriter(export + "/pyarrow-job.parquet", ours.schema, compression="zstd", compression_level=3)
rows = []
def flush():
    writer.write_table(pa.Table.from_pylist(rows, schema=ours.schema), row_group_size=500)
    rows.clear()
for path in paths:
    data = open(path, "rb").read()
    if hashlib.sha256(data).hexdigest() != open(path + ".sha256").read().strip():
        raise SystemExit("checksum mismatch: " + path)
    record = json.loads(unzstd.decompress(data))
    row = dict(staged[record["trajectory_id"]])
    for m in record["messages"]:
        m.setdefault("tool_calls", [])
    row.update(messages=record["messages"], tools=json.dumps(record.get("tools", [])), model_patch=record["patch"],
               template_hash=record["scaffold"]["template_hash"], image_digest=record.get("image_digest"))
    rows.append(row)
    if len(rows) == 500:
        flush()
if rows:
    flush()
writer.close()
print(time.perf_counter() - t)
"#,
        &[objects, export],
    )
}

/// Seconds pyarrow takes to write the rows of the export's shards as zstd Parquet at
/// zstd level 3, the export's (pyarrow's own default is 1).
fn pyarrow_write(export: &std::path::Path) -> Option<f64> {
    python_seconds(
        r#"
import glob, sys, time
import pyarrow.parquet as pq, pyarrow as pa
table = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(sys.argv[1] + "/data/*.parquet"))])
t = time.perf_counter(); pq.write_table(table, sys.argv[1] + "/pyarrow.parquet", compression="zstd", compression_level=3, row_group_size=20000); print(time.perf_counter() - t)
"#,
        &[export],
    )
}

/// Runs the Python `script` with `args` and reads the seconds it prints; `None` when
/// Python or a module it imports is missing.
fn python_seconds(script: &str, args: &[&std::path::Path]) -> Option<f64> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_size(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    for n in if sizes.is_empty() {
        vec![10_000]
    } else {
        sizes
    } {
        runtime.block_on(bench(n));
    }
}
