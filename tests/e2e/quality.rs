//! The quality jobs end to end, through `synthfleet` (which runs `synthfleet-jobs`, built
//! by the same `cargo test --workspace`): a real campaign with known outcomes, then its
//! report (numbers checked against the stored records), the dashboard rendered by headless
//! Chromium, the export read back by pyarrow and Hugging Face `datasets`, the review flow,
//! the LLM judge, and retention.

use crate::{
    Fixture, SECRET, fake_model, path_str, standard_tasks, synthfleet, synthfleet_command,
};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use synthfleet_tests::fake_llm::{FakeLlm, Script};
use synthfleet_tests::task_line;

pub(crate) fn ok(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn report_json(fx: &Fixture) -> Value {
    let out = synthfleet(&["report", fx.campaign_arg(), "--format", "json"], &[]);
    serde_json::from_str(&ok(&out, "report")).expect("report JSON")
}

fn survivors(report: &Value) -> Vec<(String, u64)> {
    report["funnel"]
        .as_array()
        .expect("funnel")
        .iter()
        .map(|f| {
            (
                f["stage"].as_str().unwrap_or_default().to_owned(),
                f["survivors"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn group<'a>(report: &'a Value, section: &str, key: &str) -> &'a Value {
    report[section]
        .as_array()
        .and_then(|rows| rows.iter().find(|g| g["key"] == key))
        .unwrap_or_else(|| panic!("no {section} row {key}"))
}

/// The standard tasks plus one that is solved only after a loop of `ls`: 4 tasks × 2
/// samples. Known answers: 8 trajectories; bsearch's wrong fix fails execution (2); the
/// loop fails heuristics (2); each task's second sample repeats the first's actions and is
/// an exact duplicate (2). Funnel 8 → 8 → 6 → 4 → 2.
fn known_campaign(name: &str, extra: &str) -> (FakeLlm, Fixture) {
    let (mut tasks, mut scripts) = standard_tasks();
    tasks.push(task_line(
        "leap-loop",
        "leapyear",
        "[leap-loop] is_leap() is wrong for century years.",
        "python3 -m unittest -q test_calendar_utils",
    ));
    scripts.push(Script::new(
        "[leap-loop]",
        &[
            "ls",
            "ls",
            "ls",
            "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py",
            "submit",
        ],
    ));
    // The judge's prompt holds "## Final patch": its script answers first.
    scripts.insert(
        0,
        Script::new(
            "## Final patch",
            &["raw:{\"verdict\": \"pass\", \"reason\": \"the patch fixes the reported bug\"}"],
        ),
    );
    let llm = FakeLlm::start(scripts);
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 5.0\n{}\n{}",
        fake_model(&llm.url, ""),
        extra.replace("ENDPOINT", &llm.url)
    );
    let fx = Fixture::new(name, &tasks, &body);
    let out = synthfleet(
        &["run", fx.campaign_arg(), "--concurrency", "2"],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    ok(&out, "run");
    (llm, fx)
}

#[tokio::test(flavor = "multi_thread")]
async fn report_dashboard_export_review_and_gc_on_a_known_campaign() {
    let (_llm, fx) = known_campaign("quality-e2e", "");
    let results = fx.results().await;
    assert_eq!(results.records.len(), 8);

    // --- Report: the numbers, against the stored records.
    let report = report_json(&fx);
    assert_eq!(
        survivors(&report),
        [
            ("total".to_owned(), 8),
            ("structural".into(), 8),
            // Honest scripted trajectories: no reward-hacking signal.
            ("integrity".into(), 8),
            ("execution".into(), 6),
            ("heuristics".into(), 4),
            ("dedup".into(), 2),
        ]
    );
    let totals = &report["totals"];
    assert_eq!(totals["trajectories"], 8);
    assert_eq!(totals["resolved"], 6);
    assert_eq!(totals["accepted"], 2);
    let cost: f64 = results.records.iter().map(|r| r.totals.cost_usd).sum();
    let tokens: u64 = results
        .records
        .iter()
        .map(|r| r.totals.input_tokens + r.totals.output_tokens)
        .sum();
    assert!(cost > 0.0);
    assert!((totals["cost_usd"].as_f64().unwrap_or_default() - cost).abs() < 1e-9);
    assert!((totals["cost_per_resolved"].as_f64().unwrap_or_default() - cost / 6.0).abs() < 1e-9);
    assert_eq!(
        totals["input_tokens"].as_u64().unwrap_or_default()
            + totals["output_tokens"].as_u64().unwrap_or_default(),
        tokens
    );
    assert_eq!(group(&report, "by_task", "median")["success_rate"], 1.0);
    assert_eq!(group(&report, "by_task", "bsearch")["success_rate"], 0.0);
    assert_eq!(group(&report, "by_task", "leap-loop")["accepted"], 0);
    assert_eq!(group(&report, "by_model", "fake")["success_rate"], 0.75);
    let median_steps: f64 = {
        let steps: Vec<u32> = results
            .records
            .iter()
            .filter(|r| r.instance_id == "median")
            .map(|r| r.totals.n_steps)
            .collect();
        f64::from(steps.iter().sum::<u32>()) / steps.len() as f64
    };
    assert_eq!(
        group(&report, "by_task", "median")["mean_steps"].as_f64(),
        Some(median_steps)
    );
    let reasons: Vec<(String, String, u64)> = report["rejections"]
        .as_array()
        .expect("rejections")
        .iter()
        .map(|r| {
            (
                r["stage"].as_str().unwrap_or_default().into(),
                r["reason"].as_str().unwrap_or_default().into(),
                r["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&(
            "dedup".into(),
            "exact duplicate of <id> (same actions)".into(),
            2
        )),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(
            "heuristics".into(),
            "action loop: `…` repeated # times in a row".into(),
            2
        )),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("execution".into(), "eval failed (exit code #)".into(), 2)),
        "{reasons:?}"
    );
    // Diversity: three distinct action patterns among the 8, none above 60%.
    let campaign_div = report["diversity"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["scope"] == "campaign"))
        .expect("campaign diversity");
    assert_eq!(campaign_div["trajectories"], 8);
    assert_eq!(campaign_div["distinct_patterns"], 4);
    assert_eq!(report["alarms"].as_array().map(Vec::len), Some(0));
    // The verdicts are recorded beside the trajectories.
    let recorded = fx
        .state_dir()
        .join("objects/quality/quality-e2e/assessments.json");
    let recorded: Value =
        serde_json::from_slice(&std::fs::read(&recorded).expect("assessments.json")).expect("json");
    assert_eq!(recorded.as_array().map(Vec::len), Some(8));

    // Text report: the funnel and the tables are there.
    let text = ok(
        &synthfleet(&["report", fx.campaign_arg()], &[]),
        "text report",
    );
    assert!(
        text.contains("Filter funnel") && text.contains("leap-loop"),
        "{text}"
    );

    dashboard_renders_in_chromium(&fx);
    export_loads_in_pyarrow_and_datasets(&fx);
    review_flow(&fx, &results);
    retention(&fx).await;
}

fn dashboard_renders_in_chromium(fx: &Fixture) {
    let html = fx.dir.path().join("dashboard.html");
    ok(
        &synthfleet(
            &[
                "report",
                fx.campaign_arg(),
                "--format",
                "html",
                "--out",
                path_str(&html),
            ],
            &[],
        ),
        "html report",
    );
    let page = std::fs::read_to_string(&html).expect("dashboard");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "self-contained"
    );
    let shot = fx.dir.path().join("dashboard.png");
    let chromium = ["chromium-headless-shell", "chromium"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect(
            "headless Chromium is missing: apt-get install chromium-headless-shell (.ci/run does)",
        );
    let url = format!("file://{}", html.display());
    let dom = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            &url,
        ])
        .output()
        .expect("chromium --dump-dom");
    let dom = String::from_utf8_lossy(&dom.stdout);
    // The browser parsed every chart: 9 charts; bars read back from the live DOM.
    assert_eq!(dom.matches("<figure class=\"chart\"").count(), 9, "{dom}");
    assert!(
        dom.contains("Learning signal (fixed sampling, groups of"),
        "the learning-signal chart: {dom}"
    );
    assert!(
        dom.contains(r#"data-label="fake" data-value="0.75""#),
        "success-rate bar of model fake: {dom}"
    );
    for (stage, n) in [("total", 8), ("execution", 6), ("dedup", 2)] {
        assert!(
            dom.contains(&format!(r#"data-label="{stage}" data-value="{n}""#)),
            "funnel bar {stage}"
        );
    }
    let status = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,2400",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .expect("chromium --screenshot");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
}

pub(crate) fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed (pip install pyarrow datasets; tests/run.sh does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn export_loads_in_pyarrow_and_datasets(fx: &Fixture) {
    let hf = fx.dir.path().join("hf");
    let out = synthfleet(
        &[
            "export",
            fx.campaign_arg(),
            "--format",
            "hf",
            "--out",
            path_str(&hf),
        ],
        &[],
    );
    assert!(ok(&out, "export").contains("exported 2 rows"));
    let card = std::fs::read_to_string(hf.join("README.md")).expect("dataset card");
    assert!(card.contains("path: data/train-*.parquet") && card.contains("| `messages` |"));
    assert!(
        card.contains("structural 8 → integrity 8 → execution 6 → heuristics 4 → dedup 2"),
        "{card}"
    );
    let checked = python(
        r#"
import glob, json, sys
import pyarrow.parquet as pq
from datasets import load_dataset
files = sorted(glob.glob(sys.argv[1] + "/data/train-*.parquet"))
table = pq.read_table(files)
schema = table.schema
assert str(schema.field("messages").type).startswith("list<element: struct<role: string, content: string"), schema.field("messages").type
rows = table.to_pylist()
ds = load_dataset("parquet", data_files=files, split="train")
print(json.dumps({
  "files": len(files), "rows": table.num_rows, "hf_rows": len(ds),
  "columns": schema.names, "hf_columns": ds.column_names,
  "instances": sorted(r["instance_id"] for r in rows),
  "accepted": [r["accepted"] for r in rows],
  "first_roles": [m["role"] for m in ds[0]["messages"]][:3],
  "patch": rows[0]["model_patch"][:10],
}))
"#,
        &[path_str(&hf)],
    );
    let v: Value = serde_json::from_str(checked.trim()).expect("python output");
    assert_eq!(v["files"], 1);
    assert_eq!(v["rows"], 2);
    assert_eq!(v["hf_rows"], 2);
    assert_eq!(v["instances"], serde_json::json!(["leap", "median"]));
    assert_eq!(v["accepted"], serde_json::json!([true, true]));
    assert_eq!(
        v["first_roles"],
        serde_json::json!(["system", "user", "assistant"])
    );
    assert_eq!(v["patch"], "diff --git");
    for column in [
        "instance_id",
        "trajectory_id",
        "model",
        "messages",
        "tools",
        "model_patch",
        "exit_status",
        "resolved",
        "reward",
        "cost_usd",
        "n_steps",
        "scaffold",
        "campaign",
        "structural",
        "execution",
        "heuristics",
        "dedup",
        "judge",
        "accepted",
    ] {
        assert!(
            v["columns"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x == column)),
            "{column}"
        );
        assert!(
            v["hf_columns"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x == column)),
            "{column}"
        );
    }

    // Everything, sharded, as the flat Parquet of RL pipelines.
    let all = fx.dir.path().join("all");
    ok(
        &synthfleet(
            &[
                "export",
                fx.campaign_arg(),
                "--filter",
                "all",
                "--rows-per-shard",
                "3",
                "--out",
                path_str(&all),
            ],
            &[],
        ),
        "export all",
    );
    let shards: Vec<_> = std::fs::read_dir(all.join("data"))
        .expect("shards")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(shards.len(), 3, "{shards:?}");
    assert!(shards.contains(&"train-00002-of-00003.parquet".to_owned()));
    let n = python(
        "import sys, pyarrow.parquet as pq, glob; print(pq.read_table(sorted(glob.glob(sys.argv[1] + '/data/*.parquet'))).num_rows)",
        &[path_str(&all)],
    );
    assert_eq!(n.trim(), "8");

    // Only what finished since a time: new shards beside the old ones, nothing rewritten
    // (every trajectory here finished after 2000).
    let since = synthfleet(
        &[
            "export",
            fx.campaign_arg(),
            "--filter",
            "all",
            "--since",
            "2000-01-01T00:00:00Z",
            "--out",
            path_str(&all),
        ],
        &[],
    );
    assert!(ok(&since, "export --since").contains("exported 8 rows"));
    let shards = std::fs::read_dir(all.join("data")).expect("shards").count();
    assert_eq!(shards, 4, "the three earlier shards and the new one");
    let card = std::fs::read_to_string(all.join("README.md")).expect("card");
    assert!(card.contains("- Rows: 16 "), "{card}");
}

fn review_flow(fx: &Fixture, results: &crate::Results) {
    let out = synthfleet(
        &[
            "review",
            "sample",
            fx.campaign_arg(),
            "--size",
            "4",
            "--seed",
            "3",
        ],
        &[],
    );
    assert!(ok(&out, "review sample").contains("sampled 4 of 8"));
    let sample: Value = serde_json::from_slice(
        &std::fs::read(
            fx.state_dir()
                .join("objects/reviews/quality-e2e/sample.json"),
        )
        .expect("sample stored"),
    )
    .expect("sample json");
    let ids: Vec<String> = sample["trajectory_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 4);
    // Both outcomes of the one model are in the sample.
    assert!(sample["strata"].as_array().is_some_and(|s| s.len() >= 2));

    // A reviewer answers in the terminal: accept every resolved one, reject the others.
    let answers: String = ids
        .iter()
        .map(|id| {
            let record = results
                .records
                .iter()
                .find(|r| &r.trajectory_id == id)
                .expect("sampled record");
            let resolved = record.verification.as_ref().is_some_and(|v| v.resolved);
            if resolved {
                "a looks right\n"
            } else {
                "r wrong fix\n"
            }
        })
        .collect();
    let mut child =
        synthfleet_command(&["review", "next", fx.campaign_arg()], [("USER", "tester")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("review next");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answers.as_bytes())
        .expect("answer");
    let out = child.wait_with_output().expect("review next output");
    assert_eq!(ok(&out, "review next").matches("recorded:").count(), 4);

    let report = report_json(fx);
    let review = &report["review"];
    assert_eq!(
        (
            review["sampled"].as_u64(),
            review["reviewed"].as_u64(),
            review["pending"].as_u64()
        ),
        (Some(4), Some(4), Some(0))
    );
    // Humans agree with execution verification on every one (that is how they answered);
    // with the pipeline only where it did not filter a resolved trajectory out.
    let execution = review["agreements"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["verifier"] == "execution"))
        .expect("execution agreement");
    assert_eq!(execution["agreement"], 1.0);
    let pipeline = review["agreements"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["verifier"] == "pipeline"))
        .expect("pipeline agreement");
    let accepted_ids = recorded_accepted(fx);
    let accepted: Vec<&String> = ids.iter().filter(|id| accepted_ids.contains(id)).collect();
    let resolved = ids
        .iter()
        .filter(|id| {
            results.records.iter().any(|r| {
                &&r.trajectory_id == id && r.verification.as_ref().is_some_and(|v| v.resolved)
            })
        })
        .count() as u64;
    assert_eq!(
        pipeline["both_accept"].as_u64(),
        Some(accepted.len() as u64)
    );
    assert_eq!(
        pipeline["only_human_accepts"].as_u64(),
        Some(resolved - accepted.len() as u64)
    );

    // A scripted verdict overrides the terminal one.
    ok(
        &synthfleet(
            &[
                "review",
                "record",
                fx.campaign_arg(),
                &ids[0],
                "--verdict",
                "reject",
                "--note",
                "second look",
            ],
            &[],
        ),
        "review record",
    );
    let stored: Value = serde_json::from_slice(
        &std::fs::read(fx.state_dir().join(format!(
            "objects/reviews/quality-e2e/verdicts/{}.json",
            ids[0]
        )))
        .expect("verdict stored"),
    )
    .expect("verdict json");
    assert_eq!(stored["verdict"], "reject");
    assert_eq!(stored["note"], "second look");
}

/// Ids the pipeline accepted, from the recorded verdicts.
fn recorded_accepted(fx: &Fixture) -> Vec<String> {
    let path = fx
        .state_dir()
        .join("objects/quality/quality-e2e/assessments.json");
    let v: Value =
        serde_json::from_slice(&std::fs::read(path).expect("assessments")).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .filter(|a| a["accepted"] == true)
        .filter_map(|a| a["trajectory_id"].as_str().map(str::to_owned))
        .collect()
}

async fn retention(fx: &Fixture) {
    let state = fx.state_dir();
    let state = path_str(&state);
    let count = |dir: &str| {
        let path = Path::new(state)
            .join("objects/trajectories/quality-e2e")
            .join(dir);
        walk(&path)
    };
    assert_eq!((count("success"), count("failed")), (6, 2));
    // Nothing is due today.
    let out = ok(&synthfleet(&["gc", "--state-dir", state], &[]), "gc");
    assert!(out.contains("deleted 0 failed"), "{out}");
    // 31 days on, the failed ones are; a dry run deletes nothing.
    let later = (chrono::Utc::now() + chrono::Duration::days(31)).to_rfc3339();
    let out = ok(
        &synthfleet(
            &["gc", "--state-dir", state, "--as-of", &later, "--dry-run"],
            &[],
        ),
        "gc dry run",
    );
    assert!(out.contains("would delete 2 failed"), "{out}");
    assert_eq!(count("failed"), 2);
    let out = ok(
        &synthfleet(&["gc", "--state-dir", state, "--as-of", &later], &[]),
        "gc",
    );
    assert!(out.contains("deleted 2 failed"), "{out}");
    assert_eq!((count("success"), count("failed")), (6, 0));
    let results = fx.results().await;
    assert_eq!(results.metas.len(), 6);
    assert!(results.metas.iter().all(|m| m.resolved == Some(true)));
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        usize::from(path.to_string_lossy().ends_with(".json.zst"))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_judge_is_a_second_verifier_within_the_budget() {
    let judge = "[[models]]\nname = \"judge\"\nprovider = \"openai\"\nmodel = \"fake-judge\"\nendpoint = \"ENDPOINT\"\napi_key_env = \"FAKE_LLM_KEY\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\nmax_tokens = 128\nweight = 0\n\n[quality.judge]\nmodel = \"judge\"\n";
    let (llm, fx) = known_campaign("quality-judge", judge);
    let before = fx.results().await.campaign.ledger.spent;
    let requests = llm.requests().len();

    // Before the judge ran, the judge stage holds everything back.
    let report = report_json(&fx);
    assert_eq!(report["totals"]["accepted"], 0);

    let out = synthfleet(&["assess", fx.campaign_arg()], &[("FAKE_LLM_KEY", SECRET)]);
    let stdout = ok(&out, "assess");
    assert!(stdout.contains("judge: 2 judged (2 pass)"), "{stdout}");
    // Only the two survivors of the earlier stages were judged, each once.
    let judge_requests: Vec<Value> = llm.requests()[requests..].to_vec();
    assert_eq!(judge_requests.len(), 2);
    assert!(judge_requests.iter().all(|r| r["model"] == "fake-judge"));
    let spent = fx.results().await.campaign.ledger.spent;
    assert!(
        spent > before,
        "the judge's calls are paid from the campaign budget"
    );

    let report = report_json(&fx);
    assert_eq!(survivors(&report).last(), Some(&("judge".to_owned(), 2)));
    assert_eq!(report["totals"]["accepted"], 2);
    // A second run finds the verdicts cached and pays nothing.
    let stdout = ok(
        &synthfleet(&["assess", fx.campaign_arg()], &[("FAKE_LLM_KEY", SECRET)]),
        "assess again",
    );
    assert!(stdout.contains("judge: 0 judged"), "{stdout}");
    assert_eq!(llm.requests().len(), requests + 2);
}
