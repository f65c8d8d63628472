//! The quality jobs at scale: a report over 1M synthetic trajectory rows, and exporting
//! them to Parquet, side by side with pyarrow writing the same data.
//!
//! `cargo bench -p synthfleet-quality --bench report [-- ROWS]`; prints a Markdown table
//! (kept in docs/benchmarks.md). Needs python3 with pyarrow for the comparison column.

use chrono::{Duration, TimeZone, Utc};
use std::process::Command;
use std::time::Instant;
use synthfleet_core::campaign::QualityConfig;
use synthfleet_core::ports::TrajectorySummary;
use synthfleet_quality::TrajectoryRow;
use synthfleet_quality::dataset::{Dataset, TRAJECTORY_COLUMNS, sql_path, write_jsonl};
use synthfleet_quality::report;

mod common;

use common::Rng;

fn rows(n: usize) -> impl Iterator<Item = TrajectoryRow> {
    const MODELS: [&str; 5] = [
        "gpt-4.1-mini",
        "qwen3-coder-30b",
        "llama-3.3-70b",
        "deepseek-v3",
        "claude-sonnet",
    ];
    const PATTERNS: [&str; 6] = [
        "cat > python3 > submit",
        "ls > cat > sed > pytest > submit",
        "grep > cat > python3 > pytest > submit",
        "find > cat > sed > submit",
        "ls > ls > ls",
        "cat > pytest",
    ];
    let start = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let mut rng = Rng(42);
    (0..n).map(move |i| {
        let resolved = rng.below(100) < 35;
        let stage = rng.below(100);
        let (structural, execution, heuristics, dedup) = match (resolved, stage) {
            (_, 0..=2) => ("fail", "skipped", "skipped", "skipped"),
            (false, _) => ("pass", "fail", "skipped", "skipped"),
            (true, 3..=12) => ("pass", "pass", "fail", "skipped"),
            (true, 13..=20) => ("pass", "pass", "pass", "fail"),
            (true, _) => ("pass", "pass", "pass", "pass"),
        };
        let accepted = dedup == "pass";
        let rejected_at = [
            ("structural", structural),
            ("execution", execution),
            ("heuristics", heuristics),
            ("dedup", dedup),
        ]
        .into_iter()
        .find(|(_, v)| *v == "fail")
        .map(|(s, _)| s.to_owned());
        let steps = 3 + rng.below(60) as u32;
        let input = u64::from(steps) * (2_000 + rng.below(6_000));
        let output = u64::from(steps) * (50 + rng.below(400));
        TrajectoryRow {
            summary: TrajectorySummary {
                campaign: "bench".into(),
                trajectory_id: format!("01JBENCH{i:018}"),
                instance_id: format!("task-{:05}", rng.below(20_000)),
                sample_index: rng.below(4) as u32,
                model: MODELS[rng.below(5) as usize].into(),
                provider: "openai".into(),
                cost_usd: (input as f64 * 0.4 + output as f64 * 1.6) / 1e6,
                input_tokens: input,
                output_tokens: output,
                cache_read_tokens: input / 2,
                cache_write_tokens: 0,
                n_steps: steps,
                created_at: start + Duration::seconds(i as i64),
                variant: None,
            },
            scaffold: if rng.below(2) == 0 {
                "bash@1".into()
            } else {
                "bash@2".into()
            },
            exit_status: if rng.below(10) == 0 {
                "step_limit".into()
            } else {
                "submitted".into()
            },
            resolved,
            reward: if resolved { 1.0 } else { 0.0 },
            duration_ms: u64::from(steps) * (500 + rng.below(4_000)),
            structural: structural.into(),
            integrity: "pass".into(),
            execution: execution.into(),
            heuristics: heuristics.into(),
            dedup: dedup.into(),
            judge: "skipped".into(),
            reject_reason: rejected_at
                .as_ref()
                .map(|s| format!("{s} rejected it (case {})", rng.below(7))),
            rejected_at,
            accepted,
            pattern: PATTERNS[rng.below(6) as usize].into(),
            patch_hash: resolved.then(|| format!("{:016x}", rng.below(1 << 20))),
            duplicate_of: None,
            review: (rng.below(1_000) == 0).then(|| {
                if rng.below(2) == 0 {
                    "accept".into()
                } else {
                    "reject".into()
                }
            }),
            suspect: false,
            hack_signals: String::new(),
            start_commit: Some(format!("{:040x}", i % 20_000)),
            harness_hash: None,
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let jsonl = dir.path().join("rows.jsonl");
    let t = Instant::now();
    write_jsonl(&jsonl, rows(n))?;
    let serialise = t.elapsed().as_secs_f64();
    let jsonl_mb = std::fs::metadata(&jsonl)?.len() as f64 / 1e6;

    let dataset = Dataset::new()?;
    let t = Instant::now();
    dataset.load_jsonl("trajectories", TRAJECTORY_COLUMNS, &jsonl)?;
    let ingest = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = report::query(&dataset, &QualityConfig::default(), false)?;
    let report_s = t.elapsed().as_secs_f64();
    assert_eq!(report.totals.trajectories, n as u64);
    let parquet = dir.path().join("duckdb.parquet");
    let t = Instant::now();
    dataset.execute(&format!(
        "COPY trajectories TO '{}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000)",
        sql_path(&parquet)
    ))?;
    let export = t.elapsed().as_secs_f64();
    let parquet_mb = std::fs::metadata(&parquet)?.len() as f64 / 1e6;

    let py = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import json, os, sys, time
import pyarrow.json as pj, pyarrow.parquet as pq
t = time.perf_counter(); table = pj.read_json(sys.argv[1]); read = time.perf_counter() - t
t = time.perf_counter(); pq.write_table(table, sys.argv[2], compression="zstd", row_group_size=100000); write = time.perf_counter() - t
print(json.dumps({"read": read, "write": write, "mb": os.path.getsize(sys.argv[2]) / 1e6, "rows": table.num_rows}))
"#,
        )
        .arg(&jsonl)
        .arg(dir.path().join("pyarrow.parquet"))
        .output()?;
    let pyarrow: Option<serde_json::Value> = serde_json::from_slice(&py.stdout).ok();
    let cell = |key: &str| {
        pyarrow
            .as_ref()
            .and_then(|v| v[key].as_f64())
            .map_or("n/a".to_owned(), |x| format!("{x:.2}"))
    };
    let rate = |secs: f64| format!("{:.0}k rows/s", n as f64 / secs / 1e3);
    println!("rows: {n}; JSONL {jsonl_mb:.0} MB, written by serde in {serialise:.2} s\n");
    println!("| step | synthfleet (DuckDB) | pyarrow |");
    println!("|---|---|---|");
    println!(
        "| ingest the JSONL (s) | {ingest:.2} ({}) | {} |",
        rate(ingest),
        cell("read")
    );
    println!(
        "| full report: 3 group-bys, funnel, rejections, diversity, agreement (s) | {report_s:.2} | n/a |"
    );
    println!(
        "| write Parquet, zstd (s) | {export:.2} ({}) | {} |",
        rate(export),
        cell("write")
    );
    println!("| Parquet size (MB) | {parquet_mb:.1} | {} |", cell("mb"));
    if pyarrow.is_none() {
        eprintln!(
            "pyarrow comparison failed: {}",
            String::from_utf8_lossy(&py.stderr)
        );
    }
    Ok(())
}
