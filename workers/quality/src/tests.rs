//! The pipeline on generated campaigns with known answers: stage verdicts, the funnel,
//! duplicates found, report numbers and the export, checked number by number.

use crate::export::{ExportOptions, Filter, Format, export};
use crate::report;
use crate::stages::{Stage, Verdict, assess, funnel};
use crate::{CampaignData, TrajectoryRow};
use chrono::{Duration, TimeZone, Utc};
use std::sync::Arc;
use synthfleet_core::MicroUsd;
use synthfleet_core::campaign::{CampaignConfig, Protocol, QualityConfig};
use synthfleet_core::facts::TrajectoryFacts;
use synthfleet_core::hacks::Signal;
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::submit::{CampaignSpec, put_spec};
use synthfleet_core::trajectory::{
    ChatMessage, Environment, ErrorKind, ExitStatus, Role, SCHEMA_VERSION, ScaffoldInfo, Step,
    Timings, Totals, TrajectoryRecord, Verification,
};
use synthfleet_local::{LocalMetadata, LocalObjectStore, LocalState};

/// A trajectory of `actions` (each a successful step unless it starts with `!`).
pub(crate) fn record(
    id: &str,
    task: &str,
    model: &str,
    actions: &[&str],
    resolved: bool,
    minute: i64,
) -> TrajectoryRecord {
    let started = Utc
        .with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .unwrap_or_default()
        + Duration::minutes(minute);
    let mut messages = vec![
        ChatMessage::text(Role::System, "You are a coding agent."),
        ChatMessage::text(Role::User, format!("Fix {task}. Contact jane@example.com")),
    ];
    let steps: Vec<Step> = actions
        .iter()
        .enumerate()
        .map(|(i, action)| {
            let failed = action.starts_with('!');
            let action = action.trim_start_matches('!');
            messages.push(ChatMessage::text(
                Role::Assistant,
                format!("```bash\n{action}\n```"),
            ));
            messages.push(ChatMessage::text(Role::User, "ok"));
            Step {
                index: i as u32,
                action: Some(action.to_owned()),
                observation: "ok".into(),
                observation_truncated: false,
                exit_code: Some(if failed { 1 } else { 0 }),
                timed_out: false,
                duration_ms: 100,
                llm_duration_ms: 200,
                input_tokens: 1000,
                output_tokens: 100,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cost_usd: 0.001,
                cost_estimated: false,
                llm_retries: 0,
                model: model.into(),
                format_error: false,
                context_elided: Vec::new(),
                tool: None,
            }
        })
        .collect();
    let n = steps.len() as u32;
    TrajectoryRecord {
        schema_version: SCHEMA_VERSION,
        trajectory_id: id.into(),
        campaign: "known".into(),
        instance_id: task.into(),
        sample_index: minute as u32,
        model: model.into(),
        route: None,
        provider: "openai".into(),
        scaffold: ScaffoldInfo {
            name: "bash".into(),
            version: "1".into(),
            protocol: Protocol::Text,
            template_hash: "abc".into(),
        },
        messages,
        tools: Vec::new(),
        steps,
        patch: format!("diff --git a/{task}.py b/{task}.py\n+fix by {model}\n"),
        exit_status: Some(ExitStatus::Submitted),
        error: None,
        verification: Some(Verification {
            eval_exit_code: Some(if resolved { 0 } else { 1 }),
            resolved,
            reward: if resolved { 1.0 } else { 0.0 },
            patch_applied: true,
            output: String::new(),
            duration_ms: 500,
            harness: None,
            fail_to_pass: None,
            pass_to_pass: None,
            resolution: None,
        }),
        totals: Totals {
            input_tokens: 1000 * u64::from(n),
            output_tokens: 100 * u64::from(n),
            cost_usd: 0.001 * f64::from(n),
            llm_calls: n,
            llm_retries: 0,
            n_steps: n,
            cache_read_tokens: 500 * u64::from(n),
            ..Totals::default()
        },
        timings: Timings {
            started_at: started,
            finished_at: Some(started + Duration::seconds(30)),
            duration_ms: 30_000,
            llm_ms: 0,
            sandbox_ms: 0,
            verification_ms: 0,
            infra_wait_ms: 0,
            agent_ms: 0,
        },
        image: "img".into(),
        image_digest: Some("sha256:00".into()),
        environment: Some(Environment {
            workdir: "/testbed".into(),
            start_commit: Some("1".repeat(40)),
            harness_hash: "2".repeat(64),
        }),
        worker_id: "w".into(),
        attempt: 1,
        tags: Default::default(),
        resumed_from_step: None,
        resumes: Vec::new(),
        variant: None,
    }
}

/// Seven trajectories over three tasks and two models, each stage rejecting someone.
fn known_records() -> Vec<TrajectoryRecord> {
    let long: Vec<String> = (0..40)
        .map(|i| format!("sed -i 's/a{i}/b{i}/' x.py"))
        .collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let mut near = long.clone();
    near[39] = "sed -i 's/zz/yy/' x.py";
    let mut broken = record("t6", "beta", "m2", &["cat a"], true, 6);
    broken.exit_status = Some(ExitStatus::Error(ErrorKind::LlmUnavailable));
    broken.error = Some("429s outlasted every retry".into());
    vec![
        record("t1", "alpha", "m1", &long, true, 1),
        // Same task, 39 of 40 actions equal: a near duplicate of t1.
        record("t2", "alpha", "m1", &near, true, 2),
        // Exact duplicate of t3's actions on the same task.
        record(
            "t3",
            "beta",
            "m1",
            &["cat b.py", "python3 fix.py", "pytest"],
            true,
            3,
        ),
        record(
            "t4",
            "beta",
            "m2",
            &["cat b.py", "python3 fix.py", "pytest"],
            true,
            4,
        ),
        // A loop.
        record(
            "t5",
            "gamma",
            "m2",
            &["ls", "ls", "ls", "python3 fix.py"],
            true,
            5,
        ),
        broken,
        // Verification says no.
        record(
            "t7",
            "gamma",
            "m1",
            &["cat c.py", "!python3 wrong.py", "pytest"],
            false,
            7,
        ),
    ]
}

/// The records committed to a real local store, and the campaign loaded back from it.
pub(crate) struct Stored {
    _dir: tempfile::TempDir,
    pub(crate) store: TrajectoryStore,
    pub(crate) data: CampaignData,
}

pub(crate) async fn stored(records: Vec<TrajectoryRecord>) -> Stored {
    let config: CampaignConfig = toml::from_str(
        "name = \"known\"\ntasks = [\"t.jsonl\"]\nbudget_usd = 1.0\n[[models]]\nname = \"m1\"\nprovider = \"replay\"\n",
    )
    .expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = LocalState::open(dir.path()).expect("state");
    let store = TrajectoryStore::new(
        Arc::new(LocalObjectStore::new(&dir.path().join("objects"))),
        Arc::new(LocalMetadata::new(&state)),
    );
    store
        .metadata
        .upsert_campaign("known", MicroUsd::from_usd_ceil(1.0), records.len() as u64)
        .await
        .expect("campaign");
    let spec = CampaignSpec {
        config,
        templates: Default::default(),
        arm_templates: Default::default(),
    };
    put_spec(store.objects.as_ref(), &spec).await.expect("spec");
    for record in &records {
        store.commit(record).await.expect("commit");
    }
    let data = CampaignData::load(&store, "known", &|_, _| {})
        .await
        .expect("load");
    Stored {
        _dir: dir,
        store,
        data,
    }
}

fn assess_with(
    records: &[TrajectoryRecord],
    config: &QualityConfig,
    judged: Option<&std::collections::HashMap<String, crate::stages::JudgeVerdict>>,
) -> Vec<crate::stages::Assessment> {
    let facts: Vec<TrajectoryFacts> = records.iter().map(|r| TrajectoryFacts::of(r, "")).collect();
    assess(
        &facts.iter().collect::<Vec<_>>(),
        config,
        50,
        judged,
        &Default::default(),
    )
}

#[tokio::test]
async fn stages_reject_with_reasons_and_the_funnel_counts_survivors() {
    let known = stored(known_records()).await;
    let data = &known.data;
    let a = data.assess();
    let by_id = |id: &str| a.iter().find(|x| x.trajectory_id == id).expect("assessed");
    let reason =
        |id: &str, stage: Stage| by_id(id).verdict(stage).reason().unwrap_or("").to_owned();
    assert!(by_id("t1").accepted);
    assert_eq!(by_id("t2").rejected_at(), Some(Stage::Dedup));
    assert!(
        reason("t2", Stage::Dedup).starts_with("near duplicate of t1"),
        "{}",
        reason("t2", Stage::Dedup)
    );
    assert!(by_id("t3").accepted);
    assert_eq!(
        reason("t4", Stage::Dedup),
        "exact duplicate of t3 (same actions)"
    );
    assert_eq!(by_id("t4").duplicate_of.as_deref(), Some("t3"));
    assert_eq!(
        reason("t5", Stage::Heuristics),
        "action loop: `ls` repeated 3 times in a row"
    );
    assert_eq!(
        reason("t6", Stage::Structural),
        "rollout ended in error:llm_unavailable: 429s outlasted every retry"
    );
    assert_eq!(
        by_id("t6").verdict(Stage::Execution),
        &Verdict::skipped("rejected by an earlier stage")
    );
    assert_eq!(reason("t7", Stage::Execution), "eval failed (exit code 1)");
    assert_eq!(
        by_id("t1").verdict(Stage::Judge),
        &Verdict::skipped("no judge configured")
    );
    assert_eq!(
        funnel(&a, false),
        [
            ("total", 7),
            ("structural", 6),
            ("integrity", 6),
            ("execution", 5),
            ("heuristics", 4),
            ("dedup", 2)
        ]
        .map(|(s, n)| (s.to_owned(), n))
    );
    assert_eq!(by_id("t3").pattern, "cat > python3 > pytest > submit");
}

#[test]
fn thresholds_come_from_the_campaign() {
    let records = known_records();
    // Looser: loops of 4, near duplicates only from 0.999 on.
    let loose = QualityConfig {
        max_repeated_actions: 4,
        near_duplicate_threshold: 0.999,
        ..QualityConfig::default()
    };
    let a = assess_with(&records, &loose, None);
    let accepted: Vec<&str> = a
        .iter()
        .filter(|x| x.accepted)
        .map(|x| x.trajectory_id.as_str())
        .collect();
    assert_eq!(accepted, ["t1", "t2", "t3", "t5"]);
    // Stricter: at most 2 steps.
    let strict = QualityConfig {
        max_steps: Some(2),
        ..QualityConfig::default()
    };
    let a = assess_with(&records, &strict, None);
    assert_eq!(a.iter().filter(|x| x.accepted).count(), 0);
    assert!(
        a[0].verdict(Stage::Heuristics)
            .reason()
            .unwrap_or("")
            .contains("more than max_steps = 2")
    );
    // Error ratio: one failed step of three is above 0.3.
    let mut r = record("e", "delta", "m1", &["a", "!b", "c"], true, 0);
    r.verification.as_mut().expect("verified").resolved = true;
    let tight = QualityConfig {
        max_error_ratio: 0.3,
        ..QualityConfig::default()
    };
    let a = assess_with(std::slice::from_ref(&r), &tight, None);
    assert_eq!(a[0].rejected_at(), Some(Stage::Heuristics));
}

#[tokio::test]
async fn report_numbers_on_a_known_campaign() {
    let known = stored(known_records()).await;
    let data = &known.data;
    let a = data.assess();
    let r = report::build(data, &a).expect("report");
    assert_eq!(r.totals.trajectories, 7);
    assert_eq!(r.totals.resolved, 6);
    assert_eq!(r.totals.accepted, 2);
    // 40 + 40 + 3 + 3 + 4 + 1 + 3 steps at $0.001.
    assert!(
        (r.totals.cost_usd - 0.094).abs() < 1e-9,
        "{}",
        r.totals.cost_usd
    );
    assert!((r.totals.cost_per_resolved.unwrap_or_default() - 0.094 / 6.0).abs() < 1e-9);
    assert_eq!(r.totals.input_tokens, 94_000);
    assert_eq!(
        r.totals.cache_read_tokens, 47_000,
        "cache reads are summed apart"
    );
    let m1 = r.by_model.iter().find(|g| g.key == "m1").expect("m1");
    assert_eq!((m1.trajectories, m1.resolved, m1.accepted), (4, 3, 2));
    assert!((m1.success_rate - 0.75).abs() < 1e-12);
    assert!((m1.mean_steps - 86.0 / 4.0).abs() < 1e-12);
    let funnel: Vec<(&str, u64)> = r
        .funnel
        .iter()
        .map(|f| (f.stage.as_str(), f.survivors))
        .collect();
    assert_eq!(
        funnel,
        [
            ("total", 7),
            ("structural", 6),
            ("integrity", 6),
            ("execution", 5),
            ("heuristics", 4),
            ("dedup", 2)
        ]
    );
    let rejections: Vec<(&str, &str, u64)> = r
        .rejections
        .iter()
        .map(|x| (x.stage.as_str(), x.reason.as_str(), x.count))
        .collect();
    assert!(
        rejections.contains(&("dedup", "near duplicate of t# (action similarity #)", 1)),
        "{rejections:?}"
    );
    assert!(rejections.contains(&(
        "heuristics",
        "action loop: `…` repeated # times in a row",
        1
    )));
    let campaign = r
        .diversity
        .iter()
        .find(|d| d.scope == "campaign")
        .expect("campaign row");
    // Structurally valid: 6; patterns: sed×40 (t1, t2), cat > python3 > pytest (t3, t4,
    // t7), the ls loop. Patches differ by task and model: 5 distinct of 6.
    assert_eq!((campaign.trajectories, campaign.distinct_patterns), (6, 3));
    assert_eq!((campaign.patches, campaign.distinct_patches), (6, 5));
    assert!(r.alarms.is_empty());
    // A campaign where one pattern dominates raises the alarm.
    let same: Vec<TrajectoryRecord> = (0..12)
        .map(|i| {
            record(
                &format!("s{i:02}"),
                &format!("task{i}"),
                "m1",
                &["cat a", "python3 f.py"],
                true,
                i,
            )
        })
        .collect();
    let collapsed = stored(same).await;
    let collapsed = &collapsed.data;
    let r = report::build(collapsed, &collapsed.assess()).expect("report");
    assert_eq!(r.alarms.len(), 2, "{:?}", r.alarms);
    assert!(
        r.alarms[0].contains("100% of 12 trajectories"),
        "{}",
        r.alarms[0]
    );
    let html = r.to_html().expect("html");
    assert!(html.contains("class=\"alarm\""));
    assert!(r.to_text().contains("ALARM: mode collapse?"));
}

#[tokio::test]
async fn export_writes_an_hf_layout_that_duckdb_reads_back() {
    let known = stored(known_records()).await;
    let data = &known.data;
    let a = data.assess();
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = export(
        data,
        &a,
        &known.store,
        &ExportOptions {
            format: Format::Hf,
            filter: Filter::Resolved,
            out: dir.path().to_owned(),
            anonymize: true,
            rows_per_shard: 4,
            since: None,
        },
        &|_, _| {},
    )
    .await
    .expect("export");
    assert_eq!(summary.rows, 6);
    assert_eq!(
        summary.files.len(),
        3,
        "2 shards and the card: {:?}",
        summary.files
    );
    let ds = crate::dataset::Dataset::new().expect("duckdb");
    #[derive(serde::Deserialize)]
    struct Back {
        n: u64,
        accepted: u64,
        roles: String,
        leaked: u64,
    }
    let glob = dir.path().join("data/train-*.parquet");
    let back: Back = ds
        .query_one(&format!(
            "SELECT count(*)::UBIGINT AS n, count(*) FILTER (WHERE accepted)::UBIGINT AS accepted,
                    (SELECT string_agg(m.role, ',') FROM (SELECT unnest(messages) AS m FROM read_parquet('{0}') WHERE trajectory_id = 't3')) AS roles,
                    count(*) FILTER (WHERE CAST(messages AS VARCHAR) LIKE '%jane@example.com%')::UBIGINT AS leaked
             FROM read_parquet('{0}')",
            crate::dataset::sql_path(&glob)
        ))
        .expect("read back");
    assert_eq!((back.n, back.accepted, back.leaked), (6, 2, 0));
    assert_eq!(
        back.roles,
        "system,user,assistant,user,assistant,user,assistant,user"
    );
    let card = std::fs::read_to_string(dir.path().join("README.md")).expect("card");
    assert!(
        card.contains("anonymised") && card.contains("dedup 2"),
        "{card}"
    );

    // `--since` the last export: only the trajectory finished since, as a new shard
    // beside the earlier ones.
    let last = data.items.iter().map(|i| i.facts.summary.created_at).max();
    let late = record("t-late", "late-task", "m1", &["ls", "pytest"], true, 500);
    known.store.commit(&late).await.expect("commit");
    let data = CampaignData::load(&known.store, "known", &|_, _| {})
        .await
        .expect("load");
    let progress = std::sync::Mutex::new(Vec::new());
    let summary = export(
        &data,
        &data.assess(),
        &known.store,
        &ExportOptions {
            format: Format::Hf,
            filter: Filter::Resolved,
            out: dir.path().to_owned(),
            anonymize: false,
            rows_per_shard: 4,
            since: last,
        },
        &|done, total| progress.lock().expect("progress").push((done, total)),
    )
    .await
    .expect("export since");
    assert_eq!(summary.rows, 1);
    assert_eq!(progress.into_inner().expect("progress"), vec![(1, 1)]);
    let n: u64 = ds
        .query_one::<serde_json::Value>(&format!(
            "SELECT count(*)::UBIGINT AS n FROM read_parquet('{}')",
            crate::dataset::sql_path(&glob)
        ))
        .expect("count")["n"]
        .as_u64()
        .unwrap_or_default();
    assert_eq!(
        n, 7,
        "the earlier shards stay, the new one adds the late trajectory"
    );
    let card = std::fs::read_to_string(dir.path().join("README.md")).expect("card");
    assert!(
        card.contains("- Rows: 7 "),
        "the card counts every shard: {card}"
    );
}

#[tokio::test]
async fn suspects_fail_integrity_are_counted_by_model_and_left_out_of_accepted_data() {
    // An honest fix, a history reader that was still graded resolved (as it was on a clone
    // before the sandbox was cleaned), and one that edits the tests and skips one.
    let honest = record(
        "h1",
        "alpha",
        "m1",
        &["cat a.py", "python3 fix.py"],
        true,
        1,
    );
    let history = record(
        "h2",
        "beta",
        "m1",
        &["git log --all --oneline", "git checkout v1.1 -- calc.py"],
        true,
        2,
    );
    let mut skipper = record("h3", "gamma", "m2", &["cat tests/test_x.py"], true, 3);
    skipper.patch = "diff --git a/tests/test_x.py b/tests/test_x.py\n--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1,2 +1,3 @@\n import pytest\n+@pytest.mark.skip(reason='flaky')\n def test_x():\n".into();
    let known = stored(vec![honest, history, skipper]).await;
    let data = &known.data;
    let a = data.assess();
    let by_id = |id: &str| a.iter().find(|x| x.trajectory_id == id).expect("assessed");
    assert!(by_id("h1").accepted && by_id("h1").suspect.is_empty());
    let h2 = by_id("h2");
    assert_eq!(h2.rejected_at(), Some(Stage::Integrity));
    assert!(!h2.accepted);
    let reason = h2.verdict(Stage::Integrity).reason().unwrap_or_default();
    assert!(
        reason.starts_with("suspect: history (step 0: `git log --all --oneline`)"),
        "{reason}"
    );
    assert_eq!(
        by_id("h2").verdict(Stage::Execution),
        &Verdict::skipped("rejected by an earlier stage"),
        "a suspect is not graded on"
    );
    let h3 = by_id("h3");
    assert_eq!(h3.rejected_at(), Some(Stage::Integrity));
    assert!(h3.suspect.contains(&Signal::SkipMarker), "{:?}", h3.suspect);

    let r = report::build(data, &a).expect("report");
    assert_eq!((r.integrity.suspect, r.integrity.suspect_resolved), (2, 2));
    let by_signal: Vec<(&str, u64)> = r
        .integrity
        .by_signal
        .iter()
        .map(|s| (s.signal.as_str(), s.trajectories))
        .collect();
    assert!(by_signal.contains(&("history", 1)), "{by_signal:?}");
    assert!(by_signal.contains(&("skip_marker", 1)), "{by_signal:?}");
    let suspects = |groups: &[report::Group], key: &str| {
        groups
            .iter()
            .find(|g| g.key == key)
            .map(|g| g.suspect)
            .unwrap_or_default()
    };
    assert_eq!(
        (suspects(&r.by_model, "m1"), suspects(&r.by_model, "m2")),
        (1, 1)
    );
    assert_eq!(suspects(&r.by_scaffold, "bash@1"), 2);
    assert!(
        r.to_text().contains("Integrity: 2 suspect"),
        "{}",
        r.to_text()
    );
    assert!(
        r.to_html()
            .expect("html")
            .contains(r#"<b id="suspect">2</b>"#)
    );

    // `--filter accepted` leaves the suspects out; `all` keeps them, flagged.
    let dir = tempfile::tempdir().expect("tempdir");
    for (filter, rows) in [(Filter::Accepted, 1), (Filter::All, 3)] {
        let out = dir.path().join(filter.as_str());
        let summary = export(
            data,
            &a,
            &known.store,
            &ExportOptions {
                format: Format::Hf,
                filter,
                out: out.clone(),
                anonymize: false,
                rows_per_shard: 100,
                since: None,
            },
            &|_, _| {},
        )
        .await
        .expect("export");
        assert_eq!(summary.rows, rows, "{}", filter.as_str());
        let ds = crate::dataset::Dataset::new().expect("duckdb");
        let glob = out.join("data").join("*.parquet");
        let suspects: serde_json::Value = ds
            .query_one(&format!(
                "SELECT count(*) FILTER (WHERE suspect)::UBIGINT AS n, count(start_commit)::UBIGINT AS traced FROM read_parquet('{}')",
                crate::dataset::sql_path(&glob)
            ))
            .expect("read back");
        assert_eq!(
            suspects["n"].as_u64(),
            Some(rows - 1),
            "{}",
            filter.as_str()
        );
        assert_eq!(
            suspects["traced"].as_u64(),
            Some(rows),
            "every row names its start"
        );
    }
}

#[tokio::test]
async fn the_report_lists_flaky_tasks_by_test_from_the_stored_gold_report() {
    use synthfleet_core::gold::{GoldReport, Problem, TaskResult, put_report};
    let known = stored(vec![
        record(
            "f1",
            "flaky",
            "m1",
            &["cat a.py", "python3 fix.py"],
            true,
            1,
        ),
        record("f2", "flaky", "m2", &["cat a.py"], false, 2),
    ])
    .await;
    let test = "tests/test_a.py::test_random".to_owned();
    let report = GoldReport {
        campaign: "known".into(),
        created_at: Utc::now(),
        tasks: vec![TaskResult {
            instance_id: "flaky".into(),
            gold: None,
            empty: None,
            problem: Some(Problem::Flaky {
                tests: vec![test.clone()],
                runs: 5,
            }),
            runs: 5,
            gold_outcomes: None,
            empty_outcomes: None,
        }],
    };
    put_report(known.store.objects.as_ref(), &report)
        .await
        .expect("store the gold report");
    let data = CampaignData::load(&known.store, "known", &|_, _| {})
        .await
        .expect("load");
    let a = data.assess();
    assert!(a.iter().all(|x| !x.accepted), "no flaky grade is trusted");
    let r = report::build(&data, &a).expect("report");
    assert_eq!(r.integrity.flaky_tasks.len(), 1);
    let flaky = &r.integrity.flaky_tasks[0];
    assert_eq!(
        (
            flaky.instance_id.as_str(),
            flaky.tests.as_slice(),
            flaky.trajectories
        ),
        ("flaky", std::slice::from_ref(&test), 2)
    );
    assert!(r.to_text().contains(&test), "{}", r.to_text());
    let html = r.to_html().expect("html");
    assert!(
        html.contains(r#"id="flaky-table""#) && html.contains("test_random"),
        "the dashboard lists it"
    );
}

#[test]
fn a_resolved_trajectory_of_a_flaky_task_is_marked_at_execution() {
    let records = [
        record(
            "f1",
            "flaky",
            "m1",
            &["cat a.py", "python3 fix.py"],
            true,
            1,
        ),
        record(
            "f2",
            "steady",
            "m1",
            &["cat b.py", "python3 fix.py"],
            true,
            2,
        ),
    ];
    let facts: Vec<TrajectoryFacts> = records.iter().map(|r| TrajectoryFacts::of(r, "")).collect();
    let flaky = std::collections::BTreeMap::from([(
        "flaky".to_owned(),
        vec!["tests/test_a.py::test_random".to_owned()],
    )]);
    let a = assess(
        &facts.iter().collect::<Vec<_>>(),
        &QualityConfig::default(),
        50,
        None,
        &flaky,
    );
    assert_eq!(
        a[0].verdict(Stage::Execution).reason(),
        Some("the task is flaky: tests/test_a.py::test_random changed outcome between gold runs")
    );
    assert!(!a[0].accepted);
    assert!(a[1].accepted);
}

#[tokio::test]
async fn rows_carry_the_first_rejection() {
    let known = stored(known_records()).await;
    let data = &known.data;
    let a = data.assess();
    let rows: Vec<TrajectoryRow> = data.rows(&a).collect();
    let t7 = rows
        .iter()
        .find(|r| r.summary.trajectory_id == "t7")
        .expect("t7");
    assert_eq!(t7.rejected_at.as_deref(), Some("execution"));
    assert_eq!(
        (
            t7.structural.as_str(),
            t7.execution.as_str(),
            t7.heuristics.as_str()
        ),
        ("pass", "fail", "skipped")
    );
}

#[test]
fn the_judge_decides_last_and_holds_back_what_it_has_not_seen() {
    use crate::stages::JudgeVerdict;
    let records = known_records();
    let verdict = |id: &str, pass: bool| JudgeVerdict {
        trajectory_id: id.into(),
        model: "judge".into(),
        pass,
        reason: if pass {
            "fine".into()
        } else {
            "edits the tests".into()
        },
        cost_usd: 0.0,
    };
    // t1 and t3 survive the other stages: one passes, one fails; t5 (a loop) was judged
    // too (only_accepted = false) but its earlier rejection stands.
    let judged: std::collections::HashMap<String, JudgeVerdict> = [
        verdict("t1", true),
        verdict("t3", false),
        verdict("t5", true),
    ]
    .into_iter()
    .map(|j| (j.trajectory_id.clone(), j))
    .collect();
    let a = assess_with(&records, &QualityConfig::default(), Some(&judged));
    let by_id = |id: &str| a.iter().find(|x| x.trajectory_id == id).expect("assessed");
    assert!(by_id("t1").accepted);
    assert_eq!(
        by_id("t3").verdict(Stage::Judge),
        &Verdict::fail("judge judge: edits the tests")
    );
    assert!(!by_id("t3").accepted);
    assert_eq!(by_id("t5").rejected_at(), Some(Stage::Heuristics));
    assert_eq!(funnel(&a, true).last(), Some(&("judge".to_owned(), 1)));
    // Nothing judged yet: the stage holds everything back, and says why.
    let a = assess_with(
        &records,
        &QualityConfig::default(),
        Some(&Default::default()),
    );
    assert_eq!(a.iter().filter(|x| x.accepted).count(), 0);
    assert!(
        a[0].verdict(Stage::Judge)
            .reason()
            .is_some_and(|r| r.contains("synthfleet assess"))
    );
}

/// Facts are read incrementally: the ones written at commit, compacted into a segment
/// once there are enough; a record committed without facts (an older campaign) or with
/// outdated ones is read once and its facts stored; a later run reads the segments and
/// no record.
#[tokio::test]
async fn facts_are_read_once_compacted_and_back_filled() {
    use crate::facts::{COMPACT_AFTER, FactsStats};
    use synthfleet_core::facts::facts_key;
    let n = COMPACT_AFTER + 4;
    let records: Vec<TrajectoryRecord> = (0..n)
        .map(|i| {
            record(
                &format!("t{i:04}"),
                &format!("task{}", i % 7),
                "m1",
                &["ls", &format!("cat f{i}")],
                i % 2 == 0,
                i as i64,
            )
        })
        .collect();
    let known = stored(records).await;
    let loaded = |store: TrajectoryStore| async move {
        CampaignData::load(&store, "known", &|_, _| {})
            .await
            .expect("load")
    };
    assert_eq!(
        known.data.facts_stats,
        FactsStats {
            objects: n as u64,
            segments_written: 1,
            ..FactsStats::default()
        },
        "every facts object was written at commit; then compacted"
    );
    let again = loaded(known.store.clone()).await;
    assert_eq!(
        again.facts_stats,
        FactsStats {
            compacted: n as u64,
            ..FactsStats::default()
        },
        "nothing new: segments only"
    );
    assert_eq!(again.assess(), known.data.assess(), "the same verdicts");

    // One more trajectory, committed as an older synthfleet did: without facts.
    let late = record("t9999", "task1", "m1", &["pwd"], true, 999);
    known.store.commit(&late).await.expect("commit");
    let objects = known.store.objects.as_ref();
    objects
        .delete(&facts_key("known", "t9999"))
        .await
        .expect("delete facts");
    let third = loaded(known.store.clone()).await;
    assert_eq!(
        third.facts_stats,
        FactsStats {
            compacted: n as u64,
            derived: 1,
            ..FactsStats::default()
        }
    );
    assert!(
        objects.get(&facts_key("known", "t9999")).await.is_ok(),
        "back-filled"
    );
    let fourth = loaded(known.store.clone()).await;
    assert_eq!(
        (fourth.facts_stats.objects, fourth.facts_stats.derived),
        (1, 0),
        "read from its stored facts now"
    );
}
