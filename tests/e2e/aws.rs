//! The fleet path against moto's server: `submit --backend aws`, `synthfleet worker`
//! processes, SQS/S3/DynamoDB, crashes, poison tasks and bad messages.

use crate::synthfleet_command;
use crate::{Fixture, SECRET, fake_model, standard_tasks};
use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthfleet_core::MicroUsd;
use synthfleet_core::ports::SandboxProvider;
use synthfleet_core::trajectory::RecordStatus;
use synthfleet_sandbox::DockerSandboxes;
use synthfleet_tests::fake_llm::{FakeLlm, Fault, Script};
use synthfleet_tests::moto::{MAX_RECEIVES, Moto};
use synthfleet_tests::task_line;

fn env(moto: &Moto) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.push(("FAKE_LLM_KEY".into(), SECRET.into()));
    env
}

pub(crate) fn run_cli(moto: &Moto, args: &[&str]) -> std::process::Output {
    synthfleet_command(args, env(moto))
        .output()
        .expect("running synthfleet")
}

pub(crate) fn spawn_worker(moto: &Moto, id: &str, extra: &[&str]) -> Child {
    spawn_worker_with(moto, id, extra, &[])
}

/// [`spawn_worker`] with extra environment variables.
pub(crate) fn spawn_worker_with(
    moto: &Moto,
    id: &str,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> Child {
    let mut args = vec![
        "worker",
        "--worker-id",
        id,
        "--concurrency",
        "2",
        "--visibility-s",
        "6",
        "--poll-wait-s",
        "0",
        "--grace-s",
        "30",
    ];
    args.extend_from_slice(extra);
    let mut env = env(moto);
    env.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    synthfleet_command(&args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker")
}

/// SIGTERM, then the exit status and the worker's log.
pub(crate) fn terminate(child: Child) -> (std::process::ExitStatus, String) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("wait for worker");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits (up to `timeout`, failing with `what`) until `campaign` has `n` committed
/// trajectories on moto.
pub(crate) async fn wait_for_trajectories(
    moto: &Moto,
    campaign: &str,
    n: usize,
    what: &str,
    timeout: Duration,
) {
    let store = moto.store();
    wait_for(what, timeout, async || {
        store
            .metadata
            .trajectories(campaign)
            .await
            .is_ok_and(|t| t.len() == n)
    })
    .await;
}

/// Waits (up to `timeout`) for the one result of `campaign`'s one sample, and reads it.
pub(crate) async fn the_one_result(
    moto: &Moto,
    campaign: &str,
    timeout: Duration,
) -> (
    synthfleet_core::ports::TrajectoryMeta,
    synthfleet_core::trajectory::TrajectoryRecord,
) {
    wait_for_trajectories(moto, campaign, 1, "the sample's result", timeout).await;
    let store = moto.store();
    let meta = store
        .metadata
        .trajectories(campaign)
        .await
        .expect("list")
        .remove(0);
    let record = store.load(&meta).await.expect("the record");
    (meta, record)
}

/// An SNS topic named `topic` with an SQS queue named `inbox` subscribed to it, so a test
/// reads what is published: the client, the topic's ARN and the queue's URL.
pub(crate) async fn topic_with_inbox(
    moto: &Moto,
    topic: &str,
    inbox: &str,
) -> (aws_sdk_sns::Client, String, String) {
    let sns = aws_sdk_sns::Client::new(&moto.config);
    let topic = sns
        .create_topic()
        .name(topic)
        .send()
        .await
        .expect("topic")
        .topic_arn()
        .expect("arn")
        .to_owned();
    let queue_url = moto
        .clients
        .sqs
        .create_queue()
        .queue_name(inbox)
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("url")
        .to_owned();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(format!("arn:aws:sqs:us-east-1:123456789012:{inbox}"))
        .send()
        .await
        .expect("subscribe");
    (sns, topic, queue_url)
}

pub(crate) async fn wait_for(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub(crate) async fn labelled(label: &str, value: &str) -> Vec<String> {
    DockerSandboxes::connect("test-observer")
        .expect("docker")
        .containers_labelled(label, value)
        .await
        .expect("list containers")
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_completes_a_campaign_through_a_worker_crash() {
    let moto = Moto::start().await;
    let (mut tasks, mut scripts) = standard_tasks();
    let fix = "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py";
    tasks.push(task_line(
        "slow",
        "leapyear",
        "[slow] fix is_leap.",
        "python3 -m unittest -q",
    ));
    scripts.push(Script::new("[slow]", &["sleep 10", fix, "submit"]));
    let llm = FakeLlm::start(scripts);
    // The first calls take a while, so a worker can be killed in the middle of one.
    llm.push_faults(vec![Fault::Delay(Duration::from_millis(1_500)); 16]);
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 5.0\n{}",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("aws-fleet", &tasks, &body);

    let submitted = run_cli(&moto, &["submit", fx.campaign_arg()]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    assert!(String::from_utf8_lossy(&submitted.stdout).contains("8 enqueued"));
    let again = run_cli(&moto, &["submit", fx.campaign_arg()]);
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("0 enqueued, 0 already done, 8 already queued"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // Heartbeats every second: a worker that misses three is dead. Named a deployment, the
    // workers publish their metrics as EMF lines among their JSON logs.
    let beats = ["--heartbeat-s", "1", "--deployment", "e2e"];
    let w1 = spawn_worker(&moto, "w1", &beats);
    let mut w2 = spawn_worker(&moto, "w2", &beats);
    // A worker without the model's key variable hands every task back, costing no attempt.
    let keyless = synthfleet_command(
        &[
            "worker",
            "--worker-id",
            "keyless",
            "--poll-wait-s",
            "0",
            "--defer-s",
            "1",
        ],
        moto.env(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn the keyless worker");
    // Kill w1 with SIGKILL in the middle of an LLM call of one of its rollouts: it holds
    // a budget lease and a sandbox.
    let store = moto.store();
    wait_for("an LLM call on w1", Duration::from_secs(90), async || {
        store
            .metadata
            .leases(&fx.name)
            .await
            .is_ok_and(|leases| leases.iter().any(|l| l.owner == "w1"))
    })
    .await;
    // w1's sandboxes go with it (their tethers end). One its tether cannot end — held
    // open here, as by an engine that kept the connection — only a reaper removes.
    synthfleet_tests::require_test_image();
    let stuck = DockerSandboxes::connect("w1")
        .expect("docker")
        .create(&synthfleet_core::ports::SandboxSpec {
            image: synthfleet_tests::TEST_IMAGE.into(),
            workdir: "/tasks/median".into(),
            labels: Default::default(),
            limits: Default::default(),
        })
        .await
        .expect("a sandbox of w1's");
    std::mem::forget(stuck);
    let mut w1 = w1;
    w1.kill().expect("SIGKILL w1");
    w1.wait().expect("reap w1");
    // w2 reclaims the dead worker's reservation once w1's heartbeat is stale.
    wait_for(
        "w2 reclaiming the dead worker's budget lease",
        Duration::from_secs(60),
        async || {
            store
                .metadata
                .leases(&fx.name)
                .await
                .is_ok_and(|leases| leases.iter().all(|l| l.owner != "w1"))
        },
    )
    .await;
    // w1 may never come back: w2, on the same host, sees its heartbeat go stale and
    // removes what it left.
    wait_for(
        "w2 reaping the dead worker's sandboxes",
        Duration::from_secs(60),
        async || labelled("synthfleet.worker", "w1").await.is_empty(),
    )
    .await;
    let w1 = spawn_worker(&moto, "w1", &beats);

    wait_for("all 8 results", Duration::from_secs(240), async || {
        store
            .metadata
            .trajectories(&fx.name)
            .await
            .map(|t| t.len() >= 8)
            .unwrap_or(false)
    })
    .await;
    let (_, keyless_log) = terminate(keyless);
    assert!(
        keyless_log.contains("cannot serve the campaign on this worker"),
        "{keyless_log}"
    );
    let (status1, log1) = terminate(w1);
    assert!(w2.try_wait().expect("poll w2").is_none(), "w2 kept serving");
    let (status2, log2) = terminate(w2);
    assert!(status1.success() && status2.success(), "{log1}\n{log2}");
    assert!(
        log2.contains("\"worker stopped\""),
        "graceful stop is logged: {log2}"
    );
    assert!(
        log1.contains("\"campaign\":\"aws-fleet\"") || log2.contains("\"campaign\":\"aws-fleet\""),
        "JSON logs carry campaign spans"
    );
    let emf: Vec<serde_json::Value> = [&log1, &log2]
        .iter()
        .flat_map(|log| log.lines())
        .filter(|line| line.contains("\"_aws\""))
        .map(|line| serde_json::from_str(line).expect("an EMF line is one JSON object"))
        .collect();
    for metric in ["RolloutsCompleted", "LlmRequests", "WorkerHeartbeat"] {
        assert!(
            emf.iter()
                .any(|doc| doc.get(metric).is_some() && doc["Deployment"] == "e2e"),
            "{metric} published: {log1}\n{log2}"
        );
    }

    // Exactly one result per (instance, sample), each complete and verified on read.
    let metas = store.metadata.trajectories(&fx.name).await.expect("list");
    assert_eq!(metas.len(), 8);
    let keys: BTreeSet<_> = metas
        .iter()
        .map(|m| (m.summary.instance_id.clone(), m.summary.sample_index))
        .collect();
    assert_eq!(keys.len(), 8, "one result per sample");
    for meta in &metas {
        let record = store
            .load(meta)
            .await
            .expect("checksum-verified read from S3");
        assert_eq!(record.trajectory_id, meta.summary.trajectory_id);
        assert_eq!(
            record.attempt, 1,
            "{}: the killed worker's delivery cost no attempt",
            meta.summary.instance_id
        );
        let expected = if meta.summary.instance_id == "bsearch" {
            RecordStatus::Failed
        } else {
            RecordStatus::Success
        };
        assert_eq!(meta.status, expected, "{}", meta.summary.instance_id);
        assert_eq!(
            meta.expires_at.is_some(),
            meta.status == RecordStatus::Failed
        );
    }
    let objects = store
        .objects
        .list(&format!("trajectories/{}/success/", fx.name))
        .await
        .expect("list S3");
    assert_eq!(objects.len(), 6);
    let campaign = store
        .metadata
        .campaign(&fx.name)
        .await
        .expect("read")
        .expect("campaign item");
    assert_eq!((campaign.counts.success, campaign.counts.failed), (6, 2));
    assert_eq!(
        campaign.ledger.reserved,
        MicroUsd::ZERO,
        "no reservation outlives a killed worker"
    );
    assert!(
        store
            .metadata
            .leases(&fx.name)
            .await
            .expect("leases")
            .is_empty()
    );
    assert!(campaign.ledger.spent > MicroUsd::ZERO);
    assert!(
        store
            .metadata
            .dead_letters(&fx.name)
            .await
            .expect("dead letters")
            .is_empty(),
        "a killed worker costs no sample"
    );
    assert!(
        labelled("synthfleet.campaign", &fx.name).await.is_empty(),
        "no sandbox survives"
    );
    let beats = store.metadata.heartbeats().await.expect("heartbeats");
    assert!(beats.iter().any(|b| b.worker_id == "w1") && beats.iter().any(|b| b.worker_id == "w2"));
    let status = run_cli(&moto, &["status", "--json"]);
    assert!(status.status.success());

    // The quality jobs read the campaign from S3 and DynamoDB and record beside it.
    let report = run_cli(&moto, &["report", &fx.name, "--format", "json"]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("report JSON");
    // Each task's two samples took the same actions: dedup keeps one of each resolved task.
    assert_eq!(report["totals"]["trajectories"], 8);
    assert_eq!(report["totals"]["resolved"], 6);
    assert_eq!(report["totals"]["accepted"], 3);
    let assessments = store
        .objects
        .get(&format!("quality/{}/assessments.json", fx.name))
        .await
        .expect("verdicts recorded in S3");
    assert!(!assessments.is_empty());
    let out = tempfile::tempdir().expect("tempdir");
    let export = run_cli(
        &moto,
        &[
            "export",
            &fx.name,
            "--out",
            out.path().to_str().expect("utf-8"),
        ],
    );
    assert!(
        String::from_utf8_lossy(&export.stdout).contains("exported 3 rows"),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(
        out.path()
            .join("data/train-00000-of-00001.parquet")
            .is_file()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_tasks_bad_messages_and_duplicates() {
    let moto = Moto::start().await;
    let (mut tasks, scripts) = standard_tasks();
    tasks.truncate(1); // median
    tasks.push(
        serde_json::json!({"instance_id": "poison", "image": "synthfleet/no-such-image:0",
                           "problem_statement": "[poison]", "eval": "true"})
        .to_string(),
    );
    let llm = FakeLlm::start(scripts);
    let body = format!("budget_usd = 1.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("aws-poison", &tasks, &body);
    let submitted = run_cli(&moto, &["submit", fx.campaign_arg()]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );

    // Bad messages straight onto the queue, and a duplicate of the good task's message.
    let sqs = &moto.clients.sqs;
    let queue = &moto.names.queue_url;
    let median_message = synthfleet_core::message::TaskMessage::new(
        &fx.name,
        &synthfleet_core::task::parse_tasks(std::path::Path::new("t"), &tasks[0]).expect("task")[0],
        0,
    );
    for body in [
        "this is not JSON".to_owned(),
        r#"{"schema_version": 99, "campaign": "x"}"#.to_owned(),
        r#"{"schema_version": 1, "campaign": "aws-poison", "sample_index": 0}"#.to_owned(),
        median_message.to_body(),
        // A well-formed message for a sample the campaign does not have.
        synthfleet_core::message::TaskMessage {
            sample_index: 7,
            ..median_message.clone()
        }
        .to_body(),
    ] {
        sqs.send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }

    let worker = spawn_worker(
        &moto,
        "wp",
        &["--retry-backoff-s", "0", "--max-attempts", "2"],
    );
    let store = moto.store();
    let dlq = &moto.names.dead_letter_queue_url;
    let dead_count = async || {
        sqs.get_queue_attributes()
            .queue_url(dlq)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()
            .and_then(|o| {
                o.attributes()
                    .and_then(|a| a.values().next().and_then(|v| v.parse::<u32>().ok()))
            })
            .unwrap_or(0)
    };
    wait_for(
        "5 dead letters and the good result",
        Duration::from_secs(180),
        async || {
            dead_count().await >= 5
                && store
                    .metadata
                    .trajectories(&fx.name)
                    .await
                    .map(|t| t.len() == 1)
                    .unwrap_or(false)
        },
    )
    .await;
    // Let the duplicate settle, then stop.
    wait_for("an empty task queue", Duration::from_secs(60), async || {
        sqs.get_queue_attributes()
            .queue_url(queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .ok()
            .and_then(|o| {
                let a = o.attributes()?.clone();
                let visible = a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)?.clone();
                let hidden = a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?.clone();
                Some(visible == "0" && hidden == "0")
            })
            .unwrap_or(false)
    })
    .await;
    let (status, log) = terminate(worker);
    assert!(status.success(), "the worker never crashed: {log}");

    // Each dead letter says why.
    let received = sqs
        .receive_message()
        .queue_url(dlq)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive DLQ");
    let reasons: Vec<String> = received
        .messages()
        .iter()
        .filter_map(|m| {
            m.message_attributes()?
                .get("synthfleet_reason")?
                .string_value()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("sample 7 of `median` is outside campaign")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("schema_version 99")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("missing field") || r.contains("task")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("gave up after 2 attempts") && r.contains("no-such-image")),
        "{reasons:?}"
    );
    let letters = store
        .metadata
        .dead_letters(&fx.name)
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key.instance_id, "poison");
    assert!(
        letters[0].error.contains("error:sandbox"),
        "{}",
        letters[0].error
    );

    // The duplicate delivery made no second result.
    let metas = store.metadata.trajectories(&fx.name).await.expect("list");
    assert_eq!(metas.len(), 1);
    let campaign = store
        .metadata
        .campaign(&fx.name)
        .await
        .expect("read")
        .expect("item");
    assert_eq!(
        (campaign.counts.success, campaign.counts.dead_lettered),
        (1, 1)
    );
    assert!(labelled("synthfleet.campaign", &fx.name).await.is_empty());
    let _ = MAX_RECEIVES;
}

/// A fake EC2 instance metadata service: IMDSv2 tokens, and a Spot interruption notice
/// once `notice` holds one (every other notice path answers 404, as on a calm instance).
fn fake_imds(notice: Arc<std::sync::Mutex<Option<String>>>) -> (String, impl Drop) {
    use axum::http::StatusCode;
    use axum::routing::{get, put};
    let app = axum::Router::new()
        .route("/latest/api/token", put(|| async { "imds-token" }))
        .route(
            "/latest/meta-data/spot/instance-action",
            get(move || {
                let notice = notice.lock().expect("notice").clone();
                async move {
                    match notice {
                        Some(body) => (StatusCode::OK, body),
                        None => (StatusCode::NOT_FOUND, String::new()),
                    }
                }
            }),
        );
    let (addr, shutdown) = synthfleet_tests::serve(app);
    struct Stop(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(stop) = self.0.take() {
                let _ = stop.send(());
            }
        }
    }
    (format!("http://{addr}"), Stop(Some(shutdown)))
}

/// A Spot interruption notice read from the instance metadata stops the worker like
/// SIGTERM, but within the notice: its rollout is handed back at its next step boundary,
/// checkpointed, before the instance goes, costing no attempt; another worker resumes it
/// from there (the model never asked again for a recorded step); a worker started on a
/// host under notice takes no work at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_spot_interruption_notice_hands_rollouts_back_within_the_notice() {
    let moto = Moto::start().await;
    let tasks = vec![task_line(
        "long",
        "median",
        "[long] take your time.",
        "test \"$(cat notes.txt)\" = \"$(printf 'step%s\\n' 0 1 2 3 4 5 6 7)\"",
    )];
    let actions: Vec<String> = (0..8)
        .map(|i| format!("sleep 2; echo step{i} >> notes.txt"))
        .chain(["submit".to_owned()])
        .collect();
    let script: Vec<&str> = actions.iter().map(String::as_str).collect();
    let llm = FakeLlm::start(vec![Script::new("[long]", &script)]);
    let body = format!(
        "samples_per_task = 1\nbudget_usd = 5.0\n{}",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("aws-spot", &tasks, &body);
    let submitted = run_cli(&moto, &["submit", fx.campaign_arg()]);
    assert!(submitted.status.success());

    let notice = Arc::new(std::sync::Mutex::new(None));
    let (imds, _imds) = fake_imds(notice.clone());
    // Its grace (30 s) outlasts what the notice leaves: only the notice can make the
    // worker hand back this early.
    let spot = spawn_worker(&moto, "spot", &["--imds-url", &imds, "--heartbeat-s", "1"]);
    let store = moto.store();
    wait_for(
        "the rollout's second step",
        Duration::from_secs(90),
        async || llm.requests().len() >= 2,
    )
    .await;
    let noticed = Instant::now();
    *notice.lock().expect("notice") = Some(
        serde_json::json!({
            "action": "terminate",
            "time": (chrono::Utc::now() + chrono::Duration::seconds(40)).to_rfc3339(),
        })
        .to_string(),
    );
    let out = spot
        .wait_with_output()
        .expect("the worker exits on its own");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        noticed.elapsed() < Duration::from_secs(40),
        "handed back within the notice: {:?}",
        noticed.elapsed()
    );
    assert!(log.contains("Spot interruption notice"), "{log}");
    assert!(
        log.contains("handing the rollout back at its step boundary"),
        "{log}"
    );
    assert!(
        store
            .metadata
            .trajectories(&fx.name)
            .await
            .expect("list")
            .is_empty(),
        "the rollout did not finish on the departing host"
    );

    // A worker started while the notice stands takes nothing.
    let late = spawn_worker(&moto, "late", &["--imds-url", &imds]);
    let out = late.wait_with_output().expect("the worker exits at once");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && log.contains("taking no work"),
        "{log}"
    );

    // Another host finishes the sample: attempt 1, the interruption cost nothing.
    let other = spawn_worker(&moto, "other", &[]);
    let (meta, record) = the_one_result(&moto, &fx.name, Duration::from_secs(180)).await;
    let (status, log) = terminate(other);
    assert!(status.success(), "{log}");
    assert_eq!(
        record.attempt, 1,
        "the interrupted delivery cost no attempt"
    );
    assert_eq!(
        meta.status,
        RecordStatus::Success,
        "{:?}",
        record.verification
    );
    // Resumed on the other host from the step the departing one handed back at: each
    // step recorded once, the model asked once per step.
    let from = record.resumed_from_step.expect("resumed") as usize;
    assert!(from >= 2, "resumed from step {from}");
    assert_eq!(record.resumes[0].worker_id, "other");
    assert_eq!(record.steps.len(), script.len());
    assert_eq!(
        crate::resume::asked_per_turn(&llm.requests()),
        vec![1; script.len()],
        "a hand-back at a step boundary loses no answer"
    );
}
