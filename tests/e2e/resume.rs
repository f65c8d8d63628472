//! Work survives its machine (invariant 12): a rollout killed -9 part-way continues from
//! its last recorded step — on the next local run, or on another fleet worker — with the
//! sandbox rebuilt by replaying the recorded commands and the model never asked again for
//! a recorded step; one whose sandbox state cannot be rebuilt starts over, saying why.
//! (The Spot notice's hand-back at a step boundary: `aws.rs`.)

use crate::aws::{run_cli, spawn_worker, terminate, the_one_result, wait_for};
use crate::synthfleet_command;
use crate::{Fixture, SECRET, containers_of, fake_model};
use serde_json::Value;
use std::time::{Duration, Instant};
use synthfleet_core::resume::Rebuild;
use synthfleet_core::trajectory::TrajectoryRecord;
use synthfleet_tests::fake_llm::{FakeLlm, Script};
use synthfleet_tests::moto::Moto;
use synthfleet_tests::task_line;

const FIX: &str = "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py";

/// The turn a request asks for: the assistant turns already in its conversation.
pub fn turn(request: &Value) -> usize {
    request["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "assistant").count())
}

/// How many requests asked for each turn.
pub fn asked_per_turn(requests: &[Value]) -> Vec<usize> {
    let mut asked = Vec::new();
    for request in requests {
        let turn = turn(request);
        if asked.len() <= turn {
            asked.resize(turn + 1, 0);
        }
        asked[turn] += 1;
    }
    asked
}

/// Starts `synthfleet run` on the fixture and kills it with SIGKILL once the model has
/// been asked for `turns` turns; waits until its sandboxes are gone.
async fn run_and_kill_after(fx: &Fixture, llm: &FakeLlm, turns: usize) {
    let mut child = synthfleet_command(&["run", fx.campaign_arg()], [("FAKE_LLM_KEY", SECRET)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn synthfleet run");
    let deadline = Instant::now() + Duration::from_secs(120);
    while llm.requests().len() < turns {
        assert!(
            Instant::now() < deadline,
            "the rollout did not get far enough"
        );
        assert!(
            child.try_wait().expect("poll the run").is_none(),
            "the run ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap the run");
    wait_for(
        "the killed run's sandboxes to go",
        Duration::from_secs(30),
        async || containers_of(&fx.name).await.is_empty(),
    )
    .await;
}

/// A long task: eight steps that each append a line (a replay that ran one twice, or
/// skipped one, fails the eval), then the fix. Returns its task line and script.
fn long_task() -> (String, Vec<String>) {
    let task = task_line(
        "long",
        "leapyear",
        "[long] fix is_leap, keeping notes.",
        "python3 -m unittest -q && test \"$(cat notes.txt)\" = \"$(printf 'line%s\\n' 0 1 2 3 4 5 6 7)\"",
    );
    let script = (0..8)
        .map(|i| format!("sleep 0.3; echo line{i} >> notes.txt"))
        .chain([FIX.to_owned(), "submit".to_owned()])
        .collect();
    (task, script)
}

/// `record` of the long task continued an attempt killed while the model was asked for
/// step 5 or later: every recorded command replayed, the workdir checked, each step once
/// and in order, the model asked once for each recorded step (the step in flight at the
/// kill at most twice), and verified like any other.
fn assert_resumed(record: &TrajectoryRecord, script: &[String], requests: &[Value]) {
    let from = record
        .resumed_from_step
        .expect("the second attempt continued the first") as usize;
    assert!(from >= 5, "resumed from step {from}");
    let resume = &record.resumes[0];
    assert_eq!(resume.from_steps as usize, from);
    assert!(
        matches!(resume.rebuild, Rebuild::Replayed { commands, workdir_checked: true, .. }
            if commands as usize == from),
        "every recorded command replayed and the workdir checked: {resume:?}"
    );
    let recorded: Vec<Option<&str>> = record.steps.iter().map(|s| s.action.as_deref()).collect();
    let expected: Vec<Option<&str>> = script
        .iter()
        .map(|a| (a != "submit").then_some(a.as_str()))
        .collect();
    assert_eq!(recorded, expected);
    assert!(
        record
            .steps
            .iter()
            .enumerate()
            .all(|(i, s)| s.index as usize == i)
    );
    let asked = asked_per_turn(requests);
    assert_eq!(asked.len(), script.len());
    for (turn, n) in asked.iter().enumerate() {
        let most = if turn == from { 2 } else { 1 };
        assert!(
            *n >= 1 && *n <= most,
            "turn {turn} asked {n} times: {asked:?}"
        );
    }
    assert_eq!(record.totals.n_steps as usize, script.len());
    assert!(record.totals.llm_calls as usize >= script.len());
    assert!(
        record.verification.as_ref().is_some_and(|v| v.resolved),
        "a resumed trajectory is verified like any other: {:?}",
        record.verification
    );
    assert_eq!(record.attempt, 1, "the kill cost no attempt");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_part_way_resumes_from_its_last_step() {
    let (task, script) = long_task();
    let llm = FakeLlm::start(vec![Script::new(
        "[long]",
        &script.iter().map(String::as_str).collect::<Vec<_>>(),
    )]);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("e2e-resume", &[task], &body);

    // Killed while the model is asked for step 5: steps 0-4 are checkpointed.
    run_and_kill_after(&fx, &llm, 6).await;
    fx.run_ok(&[]);

    let results = fx.results().await;
    assert_eq!(results.records.len(), 1);
    assert_resumed(&results.records[0], &script, &llm.requests());
    assert!(results.checkpoints.is_empty(), "{:?}", results.checkpoints);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_worker_killed_part_way_is_resumed_by_another() {
    let moto = Moto::start().await;
    let (task, script) = long_task();
    let llm = FakeLlm::start(vec![Script::new(
        "[long]",
        &script.iter().map(String::as_str).collect::<Vec<_>>(),
    )]);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("aws-resume", &[task], &body);
    assert!(
        run_cli(&moto, &["submit", fx.campaign_arg()])
            .status
            .success()
    );

    let mut first = spawn_worker(&moto, "first", &[]);
    wait_for("step 5 asked for", Duration::from_secs(120), async || {
        llm.requests().len() >= 6
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reap the worker");
    // The message comes back when its visibility (6 s) ends, to another host.
    let second = spawn_worker(&moto, "second", &[]);
    let (_, record) = the_one_result(&moto, &fx.name, Duration::from_secs(120)).await;
    let (status, log) = terminate(second);
    assert!(status.success(), "{log}");
    assert_resumed(&record, &script, &llm.requests());
    assert_eq!(record.resumes[0].worker_id, "second");
    assert!(
        moto.store()
            .objects
            .list(&format!("checkpoints/{}/", fx.name))
            .await
            .expect("list")
            .is_empty(),
        "the commit removed the checkpoints"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_state_that_cannot_be_rebuilt_starts_over_with_the_reason() {
    // Step 0 is killed at its timeout: what it had done by then no replay reproduces.
    let script = [
        "sleep 30",
        "echo a >> notes.txt",
        "sleep 0.3",
        "sleep 0.3",
        FIX,
        "submit",
    ];
    let tasks = vec![task_line(
        "stuck",
        "leapyear",
        "[stuck] fix is_leap.",
        "python3 -m unittest -q",
    )];
    let llm = FakeLlm::start(vec![Script::new("[stuck]", &script)]);
    let body = format!(
        "budget_usd = 1.0\n{}\n[scaffold]\nstep_timeout_s = 2\n",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("e2e-resume-restart", &tasks, &body);

    run_and_kill_after(&fx, &llm, 4).await;
    fx.run_ok(&[]);

    let results = fx.results().await;
    let record = &results.records[0];
    assert_eq!(record.resumed_from_step, None);
    let Rebuild::Restarted { reason } = &record.resumes[0].rebuild else {
        panic!("{:?}", record.resumes);
    };
    assert!(reason.starts_with("step 0 timed out"), "{reason}");
    assert!(record.resumes[0].from_steps >= 3);
    // The restart ran the script from its first step.
    assert_eq!(record.steps.len(), script.len());
    assert_eq!(record.steps[0].action.as_deref(), Some("sleep 30"));
    assert!(record.steps[0].timed_out);
    assert_eq!(
        asked_per_turn(&llm.requests())[0],
        2,
        "the restart asked again"
    );
    assert!(record.verification.as_ref().is_some_and(|v| v.resolved));
}
