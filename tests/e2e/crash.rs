//! A run killed with SIGKILL mid-rollout: its sandboxes go with it (each is tethered to the
//! worker), and the next run completes every sample exactly once.

use crate::synthfleet_command;
use crate::{Fixture, SECRET, containers_of, fake_model};
use std::time::{Duration, Instant};
use synthfleet_tests::fake_llm::{FakeLlm, Script};
use synthfleet_tests::task_line;

#[tokio::test(flavor = "multi_thread")]
async fn killed_run_resumes_with_exactly_one_result_per_sample() {
    let fix = "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py";
    let tasks = vec![
        task_line(
            "slow-a",
            "leapyear",
            "[slow-a] fix is_leap.",
            "python3 -m unittest -q",
        ),
        task_line(
            "slow-b",
            "leapyear",
            "[slow-b] fix is_leap.",
            "python3 -m unittest -q",
        ),
    ];
    let llm = FakeLlm::start(vec![
        Script::new("[slow-a]", &["sleep 8", fix, "submit"]),
        Script::new("[slow-b]", &["sleep 8", fix, "submit"]),
    ]);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("e2e-crash", &tasks, &body);

    let mut child = synthfleet_command(
        &["run", fx.campaign_arg(), "--concurrency", "2"],
        [("FAKE_LLM_KEY", SECRET)],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawn synthfleet run");
    // Wait until both rollouts are inside their `sleep` step.
    let deadline = Instant::now() + Duration::from_secs(60);
    while llm.requests().len() < 2 || containers_of(&fx.name).await.len() < 2 {
        assert!(Instant::now() < deadline, "rollouts did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap child");
    // Nobody removes them: the engine does, once the dead worker's tethers are gone.
    crate::aws::wait_for(
        "the killed run's sandboxes to go",
        Duration::from_secs(30),
        async || containers_of(&fx.name).await.is_empty(),
    )
    .await;

    let out = fx.run_ok(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("leftover sandboxes"), "{stderr}");
    assert!(containers_of(&fx.name).await.is_empty());

    let results = fx.results().await;
    assert_eq!(results.records.len(), 2, "exactly one result per sample");
    for r in &results.records {
        assert_eq!(r.attempt, 1, "{}: the crash cost no attempt", r.instance_id);
        assert!(r.verification.as_ref().is_some_and(|v| v.resolved));
    }
    assert_eq!(results.campaign.counts.success, 2);
}
