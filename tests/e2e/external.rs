//! The `external` scaffold end to end: an agent program of its own (here a small
//! standard-library Python agent) runs in a `network = "none"` sandbox; its model calls go
//! to the metering gateway inside the sandbox, are answered by the campaign's pool (the
//! key never enters the sandbox), metered against the budget and recorded as steps; the
//! workdir's diff is verified like any other.

use crate::{Fixture, SECRET, fake_model};
use synthfleet_tests::fake_llm::{FakeLlm, Script};
use synthfleet_tests::task_line;

const FIX: &str = "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py";

/// The agent: it fails if anything but the gateway answers, then asks the model for a
/// command, runs it and reports the result, until the model submits.
const AGENT: &str = r#"
import json, os, re, socket, subprocess, sys, urllib.error, urllib.request
try:
    socket.create_connection(("192.0.2.1", 80), timeout=3)
    sys.exit(9)
except OSError:
    pass
base = os.environ["OPENAI_BASE_URL"]
messages = [{"role": "system", "content": "You are a tiny agent."},
            {"role": "user", "content": open(os.environ["SYNTHFLEET_PROBLEM_FILE"]).read()}]
for _ in range(10):
    request = urllib.request.Request(
        base + "/chat/completions",
        data=json.dumps({"model": os.environ["SYNTHFLEET_MODEL"], "messages": messages}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
    try:
        reply = json.load(urllib.request.urlopen(request, timeout=60))
    except urllib.error.HTTPError as e:
        print("the gateway said", e.code, e.read().decode())
        sys.exit(3)
    content = reply["choices"][0]["message"].get("content") or ""
    messages.append({"role": "assistant", "content": content})
    block = re.search(r"```bash\n(.*?)\n```", content, re.S)
    if not block or block.group(1).strip() == "submit":
        break
    ran = subprocess.run(block.group(1), shell=True, capture_output=True, text=True)
    messages.append({"role": "user", "content": "exit %d\n%s%s" % (ran.returncode, ran.stdout, ran.stderr)})
"#;

fn campaign(llm: &FakeLlm, budget: f64) -> String {
    format!(
        "budget_usd = {budget}\n{}\n[scaffold]\nkind = \"external\"\nprotocol = \"text\"\ncommand = '''\ncat > /tmp/agent.py <<'PY'\n{AGENT}\nPY\npython3 /tmp/agent.py\n'''\n",
        fake_model(&llm.url, "")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_agent_is_metered_recorded_and_verified() {
    let tasks = vec![task_line(
        "ext",
        "leapyear",
        "[ext] fix is_leap.",
        "python3 -m unittest -q",
    )];
    let llm = FakeLlm::start(vec![Script::new(
        "[ext]",
        &[FIX, "python3 -m unittest -q", "submit"],
    )]);
    let fx = Fixture::new("e2e-external", &tasks, &campaign(&llm, 1.0));
    fx.run_ok(&[]);

    let results = fx.results().await;
    let r = results.record("ext", 0);
    assert_eq!(r.scaffold.name, "external");
    assert!(
        r.verification.as_ref().is_some_and(|v| v.resolved),
        "{:?} {:?}",
        r.exit_status,
        r.error
    );
    assert_eq!(
        r.exit_status,
        Some(synthfleet_core::trajectory::ExitStatus::Submitted)
    );
    // Each call is a step, with what the reply asked to run and what the agent saw of it.
    let actions: Vec<Option<&str>> = r.steps.iter().map(|s| s.action.as_deref()).collect();
    assert_eq!(actions, [Some(FIX), Some("python3 -m unittest -q"), None]);
    assert!(
        r.steps[0].observation.starts_with("exit 0"),
        "{:?}",
        r.steps[0]
    );
    assert!(
        r.steps
            .iter()
            .all(|s| s.input_tokens > 0 && s.cost_usd > 0.0)
    );
    assert_eq!(r.totals.llm_calls, 3);
    assert!(r.totals.cost_usd > 0.0);
    // The conversation is the agent's own.
    assert_eq!(
        r.messages[0].content.as_deref(),
        Some("You are a tiny agent.")
    );
    assert_eq!(r.messages.len(), 7, "{:?}", r.messages);
    assert!(results.campaign.ledger.spent.as_usd() >= r.totals.cost_usd - 1e-9);
    // The provider saw the worker's key; the sandbox had only a placeholder.
    assert!(
        llm.authorization_headers()
            .iter()
            .all(|h| h == &format!("Bearer {SECRET}"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_agent_past_the_budget_is_refused() {
    let tasks = vec![task_line(
        "ext",
        "leapyear",
        "[ext] fix is_leap.",
        "python3 -m unittest -q",
    )];
    let llm = FakeLlm::start(vec![Script::new("[ext]", &[FIX, "ls", "ls", "submit"])]);
    // Room for about one call's worst case.
    let fx = Fixture::new("e2e-external-budget", &tasks, &campaign(&llm, 0.0006));
    let out = crate::synthfleet(&["run", fx.campaign_arg()], &[("FAKE_LLM_KEY", SECRET)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let results = fx.results().await;
    assert!(results.records.is_empty(), "{stderr}");
    assert_eq!(results.campaign.state.as_str(), "exhausted", "{stderr}");
    assert!(
        results.campaign.ledger.spent <= results.campaign.ledger.budget,
        "the cap holds"
    );
    assert!(llm.requests().len() <= 1, "refused past the budget");
}

/// mini-swe-agent, from PyPI, as the external agent: litellm talks to the gateway as to any
/// OpenAI-compatible server; its bash tool calls are recorded as steps, and its fix is
/// verified.
#[tokio::test(flavor = "multi_thread")]
async fn mini_swe_agent_runs_through_the_gateway() {
    synthfleet_tests::require_mini_swe_agent_image();
    let task = serde_json::json!({
        "instance_id": "mini",
        "image": synthfleet_tests::MINI_SWE_AGENT_IMAGE,
        "problem_statement": "[mini] is_leap() is wrong for century years.",
        "workdir": "/tasks/leapyear",
        "eval": "python3 -m unittest -q",
    })
    .to_string();
    let llm = FakeLlm::start(vec![Script::new(
        "[mini]",
        &[
            FIX,
            "python3 -m unittest -q",
            "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT",
        ],
    )]);
    let body = format!(
        "budget_usd = 1.0\n{}\n[scaffold]\nkind = \"external\"\ncommand = 'MSWEA_CONFIGURED=true MSWEA_COST_TRACKING=ignore_errors mini --yolo --exit-immediately --cost-limit 0 --model \"openai/$SYNTHFLEET_MODEL\" --task \"$(cat \"$SYNTHFLEET_PROBLEM_FILE\")\" --output /tmp/mini.traj.json'\n",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("e2e-mini-swe-agent", &[task], &body);
    fx.run_ok(&[]);

    let results = fx.results().await;
    let r = results.record("mini", 0);
    assert!(
        r.verification.as_ref().is_some_and(|v| v.resolved),
        "{:?} {:?}",
        r.exit_status,
        r.error
    );
    let actions: Vec<Option<&str>> = r.steps.iter().map(|s| s.action.as_deref()).collect();
    assert_eq!(
        actions,
        [
            Some(FIX),
            Some("python3 -m unittest -q"),
            Some("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")
        ]
    );
    // mini-swe-agent's own prompt and bash tool, as it sent them.
    assert!(
        r.messages[0]
            .content
            .as_deref()
            .is_some_and(|c| c.contains("helpful assistant")),
        "{:?}",
        r.messages[0]
    );
    assert!(r.totals.cost_usd > 0.0 && r.totals.llm_calls == 3);
}

/// On the fleet (SQS, S3 and DynamoDB on moto, a worker process): an experiment of an
/// `edit` arm and an `external` arm on the same task.
#[tokio::test(flavor = "multi_thread")]
async fn the_edit_and_external_scaffolds_run_on_the_fleet() {
    use crate::aws::{run_cli, spawn_worker, terminate, wait_for_trajectories};
    let moto = synthfleet_tests::moto::Moto::start().await;
    let tasks = vec![task_line(
        "ext",
        "leapyear",
        "[ext] fix is_leap.",
        "python3 -m unittest -q",
    )];
    let llm = FakeLlm::start(vec![Script::new("[ext]", &[FIX, "submit"])]);
    let body = format!(
        "samples_per_task = 2\n{}\n[[variants]]\nname = \"editor\"\nscaffold = \"edit\"\n\n[[variants]]\nname = \"agent\"\nscaffold = \"external\"\n",
        campaign(&llm, 1.0).replace("kind = \"external\"\n", "")
    );
    let fx = Fixture::new("aws-scaffolds", &tasks, &body);
    let submitted = run_cli(&moto, &["submit", fx.campaign_arg()]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let worker = spawn_worker(&moto, "w-ext", &[]);
    wait_for_trajectories(
        &moto,
        &fx.name,
        2,
        "both results",
        std::time::Duration::from_secs(120),
    )
    .await;
    let store = moto.store();
    let (status, log) = terminate(worker);
    assert!(status.success(), "{log}");
    let mut arms = Vec::new();
    for meta in store.metadata.trajectories(&fx.name).await.expect("list") {
        let record = store.load(&meta).await.expect("the record");
        assert!(
            record.verification.as_ref().is_some_and(|v| v.resolved),
            "{:?}",
            record.error
        );
        assert_eq!(record.steps[0].action.as_deref(), Some(FIX));
        assert_eq!(record.worker_id, "w-ext");
        arms.push((
            record.variant.clone().unwrap_or_default(),
            record.scaffold.name.clone(),
        ));
    }
    arms.sort();
    assert_eq!(
        arms,
        [
            ("agent".to_owned(), "external".to_owned()),
            ("editor".to_owned(), "edit".to_owned())
        ]
    );
}
