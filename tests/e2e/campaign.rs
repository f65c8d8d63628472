//! Whole campaigns through the binary: records, checksums, verification, costs, retries.

use crate::synthfleet;
use crate::{Fixture, SECRET, containers_of, fake_model, path_str, standard_tasks};
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::CampaignState;
use synthfleet_core::trajectory::{ExitStatus, RecordStatus, Role};
use synthfleet_tests::fake_llm::{FakeLlm, Fault, Script};
use synthfleet_tests::task_line;

/// The fake model's prices (see `fake_model`): $1 / $2 per million tokens.
fn cost(input_tokens: u64, output_tokens: u64) -> MicroUsd {
    MicroUsd::from_usd_ceil((input_tokens as f64 + 2.0 * output_tokens as f64) / 1e6)
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calling_campaign_end_to_end() {
    let (tasks, scripts) = standard_tasks();
    let llm = FakeLlm::start(scripts);
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 5.0\n{}",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("e2e-tools", &tasks, &body);
    let out = synthfleet(
        &["run", fx.campaign_arg(), "--concurrency", "3"],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {stderr}");

    let results = fx.results().await;
    assert_eq!(results.records.len(), 6, "3 tasks x 2 samples");
    assert_eq!(results.campaign.state, CampaignState::Done);
    assert_eq!(
        (
            results.campaign.counts.success,
            results.campaign.counts.failed
        ),
        (4, 2)
    );
    for sample in 0..2 {
        for instance in ["median", "leap"] {
            let r = results.record(instance, sample);
            assert_eq!(r.exit_status, Some(ExitStatus::Submitted));
            let v = r.verification.as_ref().expect("verified");
            assert!(
                v.resolved && v.patch_applied && v.eval_exit_code == Some(0),
                "{instance}: {v:?}"
            );
            assert_eq!(r.status(), RecordStatus::Success);
            assert!(r.patch.starts_with("diff --git"), "{}", r.patch);
        }
        // The agent submitted a wrong fix: verification, not the claim, decides.
        let wrong = results.record("bsearch", sample);
        assert_eq!(wrong.exit_status, Some(ExitStatus::Submitted));
        let v = wrong.verification.as_ref().expect("verified");
        assert!(
            !v.resolved && v.patch_applied && v.eval_exit_code == Some(1),
            "{v:?}"
        );
        assert_eq!(v.reward, 0.0);
        assert!(wrong.object_key().contains("/failed/bsearch/"));
    }

    let median = results.record("median", 0);
    assert_eq!(median.steps.len(), 4);
    assert_eq!(median.steps[2].exit_code, Some(0));
    assert!(median.steps[0].observation.contains("def median"));
    assert_eq!(median.tools.len(), 2, "bash and submit tools are recorded");
    assert_eq!(median.messages[0].role, Role::System);
    assert_eq!(
        median
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .count(),
        4
    );
    assert_eq!(
        median.messages[2].reasoning_content.as_deref(),
        Some("step 0")
    );
    assert!(
        median
            .image_digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );

    // Costs: every step priced from the reported usage; totals and the ledger agree.
    let mut ledger = MicroUsd::ZERO;
    for r in &results.records {
        let steps: MicroUsd = r
            .steps
            .iter()
            .map(|s| cost(s.input_tokens, s.output_tokens))
            .sum();
        assert_eq!(
            MicroUsd::from_usd_ceil(r.totals.cost_usd),
            steps,
            "{}",
            r.instance_id
        );
        assert!(r.totals.input_tokens > 0 && r.totals.output_tokens > 0);
        assert_eq!(r.totals.n_steps as usize, r.steps.len());
        ledger = ledger.saturating_add(steps);
    }
    assert_eq!(results.campaign.ledger.spent, ledger);
    assert_eq!(results.campaign.ledger.reserved, MicroUsd::ZERO);
    for meta in &results.metas {
        assert_eq!(meta.sha256.len(), 64);
        assert_eq!(
            meta.expires_at.is_some(),
            meta.status == RecordStatus::Failed
        );
    }

    // The key went to the provider, and nowhere else.
    assert!(
        llm.authorization_headers()
            .iter()
            .all(|h| h == &format!("Bearer {SECRET}"))
    );
    for entry in walk(&fx.state_dir()) {
        let bytes = std::fs::read(&entry).expect("read");
        let text = zstd::decode_all(bytes.as_slice()).unwrap_or(bytes);
        assert!(
            !String::from_utf8_lossy(&text).contains(SECRET),
            "secret leaked into {}",
            entry.display()
        );
    }
    assert!(
        containers_of(&fx.name).await.is_empty(),
        "no labelled container may survive"
    );

    // Re-running a finished campaign does nothing.
    let again = synthfleet(&["run", fx.campaign_arg()], &[("FAKE_LLM_KEY", SECRET)]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 enqueued now, 6 already done"));

    // `show` verifies and renders a record.
    let id = &results.record("median", 1).trajectory_id;
    let shown = synthfleet(&["show", id, "--state-dir", path_str(&fx.state_dir())], &[]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && text.contains("RESOLVED") && text.contains("── patch ──"),
        "{text}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn text_protocol_records_format_errors() {
    let tasks = vec![task_line(
        "leap",
        "leapyear",
        "[leap-text] fix is_leap.",
        "python3 -m unittest -q",
    )];
    let llm = FakeLlm::start(vec![Script::new(
        "[leap-text]",
        &[
            "raw:I think I should look at the code first.",
            "raw:```bash\nls\n```\nand\n```bash\npwd\n```",
            "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py",
            "submit",
        ],
    )]);
    let body = format!(
        "budget_usd = 1.0\n{}\n[scaffold]\nprotocol = \"text\"\nmax_steps = 10\n",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("e2e-text", &tasks, &body);
    fx.run_ok(&[]);
    let results = fx.results().await;
    let r = results.record("leap", 0);
    assert!(r.tools.is_empty());
    assert!(
        llm.requests().iter().all(|q| q.get("tools").is_none()),
        "text mode offers no tools"
    );
    assert_eq!(r.steps.len(), 4);
    assert!(r.steps[0].format_error && r.steps[0].observation.contains("no ```bash block"));
    assert!(r.steps[1].format_error && r.steps[1].observation.contains("2 ```bash blocks"));
    assert!(!r.steps[2].format_error);
    assert_eq!(
        r.messages[3].role,
        Role::User,
        "format errors come back as user messages"
    );
    assert!(r.verification.as_ref().is_some_and(|v| v.resolved));
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_and_outages_are_retried_and_recorded() {
    let tasks = vec![task_line(
        "leap",
        "leapyear",
        "[leap-retry] fix is_leap.",
        "python3 -m unittest -q",
    )];
    let llm = FakeLlm::start(vec![Script::new(
        "[leap-retry]",
        &[
            "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py",
            "submit",
        ],
    )]);
    llm.push_faults([
        Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        Fault::Delay(std::time::Duration::from_secs(3)),
        Fault::Status {
            code: 503,
            retry_after: Some(0),
        },
        // A body cut off mid-way is a transport fault too: retried at the call.
        Fault::Malformed,
        Fault::Status {
            code: 409,
            retry_after: Some(0),
        },
    ]);
    let body = format!(
        "budget_usd = 1.0\n{}",
        fake_model(&llm.url, "request_timeout_s = 1\nmax_attempts = 8")
    );
    let fx = Fixture::new("e2e-retry", &tasks, &body);
    let started = std::time::Instant::now();
    fx.run_ok(&[]);
    assert!(
        started.elapsed().as_secs_f64() >= 1.0,
        "Retry-After: 1 was honoured"
    );
    let results = fx.results().await;
    let r = results.record("leap", 0);
    assert_eq!(
        r.steps[0].llm_retries, 6,
        "429, 500, timeout, 503, a cut-off body and 409 were each retried"
    );
    assert_eq!(r.totals.llm_retries, 6);
    // The cut-off body was billed: booked as the prompt and a full reply, estimated.
    assert!(
        r.steps[0].cost_estimated && r.steps[0].output_tokens >= 256,
        "{:?}",
        r.steps[0]
    );
    assert_eq!(
        results.campaign.ledger.spent,
        r.steps
            .iter()
            .map(|s| MicroUsd::from_usd_ceil(s.cost_usd))
            .sum::<MicroUsd>()
    );
    assert_eq!(r.exit_status, Some(ExitStatus::Submitted));
    assert_eq!(r.attempt, 1, "no fault cost the sample an attempt");
    assert!(r.verification.as_ref().is_some_and(|v| v.resolved));
    assert_eq!(llm.requests().len(), 6 + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_overflow_ends_the_rollout_as_its_own_outcome_without_retries() {
    let tasks = vec![task_line(
        "leap",
        "leapyear",
        "[leap-long] fix is_leap.",
        "python3 -m unittest -q",
    )];
    let llm = FakeLlm::start(vec![Script::new(
        "[leap-long]",
        &[
            "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py",
            "python3 -m unittest -q",
            "submit",
        ],
    )]);
    // The first call is answered; the second finds the conversation too long.
    llm.push_faults([
        Fault::Delay(std::time::Duration::ZERO),
        Fault::ContextOverflow,
    ]);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("e2e-context", &tasks, &body);
    fx.run_ok(&[]);
    let results = fx.results().await;
    let r = results.record("leap", 0);
    assert_eq!(r.exit_status, Some(ExitStatus::ContextExceeded));
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("context window")),
        "{:?}",
        r.error
    );
    assert_eq!(
        (r.attempt, r.steps.len()),
        (1, 1),
        "neither the call nor the rollout was retried"
    );
    assert_eq!(llm.requests().len(), 2);
    // The agent's work up to the overflow is verified like any ending.
    assert!(r.verification.as_ref().is_some_and(|v| v.resolved));
    assert!(results.dead.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_replies_are_a_clear_recorded_infrastructure_error() {
    let (mut tasks, mut scripts) = standard_tasks();
    tasks.truncate(2);
    scripts.truncate(2);
    tasks.push(task_line("broken", "median", "[broken] anything", "true"));
    scripts.push(Script {
        always: Some(Fault::Malformed),
        ..Script::new("[broken]", &["ls"])
    });
    let llm = FakeLlm::start(scripts);
    // A server that only ever answers garbage: each call is retried, then the rollout ends.
    let body = format!(
        "budget_usd = 1.0\n{}",
        fake_model(&llm.url, "max_attempts = 2")
    );
    let fx = Fixture::new("e2e-malformed", &tasks, &body);
    let out = synthfleet(
        &["run", fx.campaign_arg(), "--retry-backoff-s", "0"],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results = fx.results().await;
    // The other tasks were served; the broken one never counts as the agent failing.
    assert_eq!(results.records.len(), 2);
    assert_eq!(results.campaign.counts.dead_lettered, 1);
    let letter = &results.dead[0];
    assert_eq!(letter.key.instance_id, "broken");
    assert_eq!(letter.attempts, 3);
    assert!(
        letter.error.contains("error:llm_malformed")
            && letter.error.contains("malformed completion")
            && letter.error.contains("(after 2 attempts)"),
        "{}",
        letter.error
    );
    let status = synthfleet(&["status", fx.campaign_arg()], &[]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("1 dead-lettered") && text.contains("broken"),
        "{text}"
    );
    // The garbage was generated, and billed: its attempts are booked (estimated), on top
    // of what the committed records cost.
    let recorded: MicroUsd = results
        .records
        .iter()
        .map(|r| MicroUsd::from_usd_ceil(r.totals.cost_usd))
        .sum();
    assert!(
        results.campaign.ledger.spent > recorded,
        "{} spent, {recorded} recorded",
        results.campaign.ledger.spent
    );
    assert_eq!(results.campaign.ledger.reserved, MicroUsd::ZERO);

    // A redrive gives the sample fresh attempts and keeps why it died before.
    let state = fx.state_dir();
    let state = path_str(&state);
    let redriven = synthfleet(&["redrive", "e2e-malformed", "--state-dir", state], &[]);
    let text = String::from_utf8_lossy(&redriven.stdout);
    assert!(
        redriven.status.success() && text.contains("1 dead-lettered samples moved back"),
        "{text}{}",
        String::from_utf8_lossy(&redriven.stderr)
    );
    let between = fx.results().await;
    assert!(between.dead.is_empty(), "{:?}", between.dead);
    assert_eq!(between.campaign.counts.dead_lettered, 0);
    assert_ne!(between.campaign.state, CampaignState::Done);
    let again = synthfleet(
        &["run", fx.campaign_arg(), "--retry-backoff-s", "0"],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let results = fx.results().await;
    let letter = &results.dead[0];
    assert_eq!(
        (letter.attempts, results.campaign.counts.dead_lettered),
        (3, 1),
        "fresh attempts, counted once"
    );
    assert_eq!(letter.history.len(), 1);
    assert!(
        letter.history[0].contains("error:llm_malformed"),
        "{:?}",
        letter.history
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn budget_cap_stops_new_calls_and_says_why() {
    let (tasks, scripts) = standard_tasks();
    let llm = FakeLlm::start(scripts);
    // Each call reserves about $0.0015; $0.004 covers only a few of the ~20 calls.
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 0.004\n{}",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("e2e-budget", &tasks, &body);
    let out = synthfleet(
        &["run", fx.campaign_arg(), "--concurrency", "3"],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("budget cap"));
    let results = fx.results().await;
    let ledger = results.campaign.ledger;
    assert_eq!(results.campaign.state, CampaignState::Exhausted);
    assert!(
        results
            .campaign
            .state_reason
            .as_deref()
            .is_some_and(|r| r.contains("budget cap"))
    );
    assert!(
        ledger.spent <= ledger.budget,
        "spent {} > cap {}",
        ledger.spent,
        ledger.budget
    );
    assert_eq!(
        ledger.reserved,
        MicroUsd::ZERO,
        "every reservation was settled"
    );
    assert!(results.records.len() < 6, "not every sample could run");
    let calls_before = llm.requests().len();
    // Running again without raising the cap starts no call and dequeues nothing.
    let again = synthfleet(&["run", fx.campaign_arg()], &[("FAKE_LLM_KEY", SECRET)]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(llm.requests().len(), calls_before);
    assert!(containers_of(&fx.name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_wall_clock_limit_ends_the_rollout() {
    let mut task: serde_json::Value = serde_json::from_str(&task_line(
        "hang",
        "median",
        "[hang] wait for it.",
        "python3 -m unittest -q test_stats",
    ))
    .expect("task json");
    task["timeout_s"] = serde_json::json!(3);
    let llm = FakeLlm::start(vec![Script::new("[hang]", &["sleep 60", "submit"])]);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("e2e-timeout", &[task.to_string()], &body);
    fx.run_ok(&[]);
    let results = fx.results().await;
    let r = results.record("hang", 0);
    assert_eq!(r.exit_status, Some(ExitStatus::Timeout));
    assert!(
        r.steps[0].timed_out,
        "the command was cut at the rollout limit"
    );
    assert!(
        r.timings.duration_ms < 30_000,
        "{} ms",
        r.timings.duration_ms
    );
    assert!(
        r.verification.as_ref().is_some_and(|v| !v.resolved),
        "a timed-out rollout is still verified"
    );
    assert_eq!(results.campaign.ledger.reserved, MicroUsd::ZERO);
    assert!(containers_of(&fx.name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_on_the_provider_is_not_the_agents_time() {
    let mut task: serde_json::Value = serde_json::from_str(&task_line(
        "leap",
        "leapyear",
        "[leap-patient] fix is_leap.",
        "python3 -m unittest -q",
    ))
    .expect("task json");
    // 3 s for the agent; the provider makes it wait 4 s in rate limits first.
    task["timeout_s"] = serde_json::json!(3);
    let llm = FakeLlm::start(vec![Script::new(
        "[leap-patient]",
        &[
            "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py",
            "submit",
        ],
    )]);
    let limited = Fault::Status {
        code: 429,
        retry_after: Some(2),
    };
    llm.push_faults([limited.clone(), limited]);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("e2e-patient", &[task.to_string()], &body);
    fx.run_ok(&[]);
    let results = fx.results().await;
    let r = results.record("leap", 0);
    assert_eq!(r.exit_status, Some(ExitStatus::Submitted), "{:?}", r.error);
    assert!(r.timings.infra_wait_ms >= 4_000, "{:?}", r.timings);
    assert!(
        r.timings.duration_ms > 3_000,
        "the rollout outlived the agent's 3 s"
    );
    assert!(r.verification.as_ref().is_some_and(|v| v.resolved));
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_campaign_hands_out_nothing_until_resumed() {
    let (mut tasks, mut scripts) = standard_tasks();
    tasks.truncate(1);
    scripts.truncate(1);
    let llm = FakeLlm::start(scripts);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("e2e-pause", &tasks, &body);
    let env = [("FAKE_LLM_KEY", SECRET)];
    let state = fx.state_dir();
    let state = path_str(&state);

    let submitted = synthfleet(&["submit", fx.campaign_arg()], &env);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let paused = synthfleet(
        &[
            "pause",
            "e2e-pause",
            "--state-dir",
            state,
            "--reason",
            "holiday",
        ],
        &env,
    );
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );

    let blocked = synthfleet(&["run", fx.campaign_arg()], &env);
    assert_eq!(blocked.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&blocked.stdout).contains("is paused: holiday"));
    assert!(llm.requests().is_empty(), "no task was handed out");
    assert!(
        !synthfleet(&["pause", "e2e-pause", "--state-dir", state], &env)
            .status
            .success()
    );

    let resumed = synthfleet(&["resume", "e2e-pause", "--state-dir", state], &env);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let run = synthfleet(&["run", fx.campaign_arg()], &env);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results = fx.results().await;
    assert_eq!(results.records.len(), 1);
    assert_eq!(results.campaign.state, CampaignState::Done);
}

/// A worker whose Docker disk is short of room takes no task and says why; once there is
/// room (here: a lower threshold), the same campaign runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_stops_new_work_until_there_is_room() {
    use std::io::BufRead;
    let (tasks, scripts) = standard_tasks();
    let llm = FakeLlm::start(scripts);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("e2e-disk", &tasks, &body);
    // More free space than any disk has.
    let mut child = crate::synthfleet_command(
        &[
            "run",
            fx.campaign_arg(),
            "--min-free-disk-mb",
            "1000000000000",
        ],
        [("FAKE_LLM_KEY", SECRET)],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn synthfleet run");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let reason = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = said
            .recv_timeout(left)
            .expect("the run said why it takes no work");
        if line.contains("taking no new work") {
            break line;
        }
    };
    assert!(
        reason.contains("MB free") && reason.contains("--min-free-disk-mb"),
        "{reason}"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap child");
    assert!(llm.requests().is_empty(), "no rollout started");
    assert!(containers_of(&fx.name).await.is_empty());

    fx.run_ok(&["--min-free-disk-mb", "1"]);
    assert_eq!(fx.results().await.records.len(), 3);
}
