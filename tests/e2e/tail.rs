//! `synthfleet tail`: committed trajectories as JSON lines in commit order, resumed by
//! cursor, followed as they land — on the local store and on moto — and the fleet's
//! commit events on SNS.

use crate::aws::{
    run_cli, spawn_worker_with, terminate, topic_with_inbox, wait_for, wait_for_trajectories,
};
use crate::{
    Fixture, SECRET, fake_model, path_str, standard_tasks, synthfleet, synthfleet_command,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synthfleet_core::commits::CommitCursor;
use synthfleet_tests::fake_llm::{FakeLlm, Fault};
use synthfleet_tests::moto::Moto;

/// A `synthfleet tail --follow` process and the lines it printed so far.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Follower {
    fn spawn<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        args: &[&str],
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Follower {
        let mut child = synthfleet_command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn synthfleet tail --follow");
        let stdout = child.stdout.take().expect("the follower's stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("a line of tail is JSON ({e}): {line}"));
                sink.lock().expect("lines").push(value);
            }
        });
        Follower { child, lines }
    }

    /// `synthfleet tail {campaign} --state-dir {state} --follow --interval-s {interval}`.
    fn local(campaign: &str, state: &str, interval: &str) -> Follower {
        Follower::spawn(
            &[
                "tail",
                campaign,
                "--state-dir",
                state,
                "--follow",
                "--interval-s",
                interval,
            ],
            std::iter::empty::<(&str, &str)>(),
        )
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lines").clone()
    }

    async fn wait_for_lines(&self, n: usize, timeout: Duration) -> Vec<Value> {
        wait_for(
            &format!("{n} lines from tail --follow"),
            timeout,
            async || self.lines().len() >= n,
        )
        .await;
        self.lines()
    }

    /// Ctrl-C: the follower exits cleanly.
    fn interrupt(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("wait for the follower");
        assert!(
            status.success(),
            "Ctrl-C ends tail --follow cleanly: {status}"
        );
    }
}

/// The JSON lines of a finished `tail`.
fn lines_of(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "tail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a line of tail is JSON"))
        .collect()
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l["trajectory_id"]
                .as_str()
                .expect("trajectory_id")
                .to_owned()
        })
        .collect()
}

fn cursor(line: &Value) -> &str {
    line["cursor"].as_str().expect("cursor")
}

/// Every line names its campaign and sample, carries its summary and object key, and a
/// cursor of its campaign; the cursors grow along the lines.
fn check_lines(lines: &[Value], campaign: &str) {
    let mut positions = Vec::new();
    for line in lines {
        assert_eq!(line["campaign"], campaign, "{line}");
        for field in [
            "instance_id",
            "model",
            "exit_status",
            "created_at",
            "object_key",
        ] {
            assert!(line[field].is_string(), "{field} in {line}");
        }
        for field in ["sample_index", "cost_usd", "input_tokens", "n_steps"] {
            assert!(line[field].is_number(), "{field} in {line}");
        }
        assert!(line["resolved"].is_boolean(), "verified: {line}");
        assert!(
            line["object_key"]
                .as_str()
                .is_some_and(|k| k.starts_with(&format!("trajectories/{campaign}/"))),
            "{line}"
        );
        let position = CommitCursor::decode_for(cursor(line), campaign).expect("a cursor");
        positions.push(position);
    }
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "cursors grow in commit order"
    );
}

/// A plain `tail` of `fx`'s local state once its run ended: the lines a follower printed,
/// in the same order, one per committed trajectory.
async fn tailed_again(fx: &Fixture, state: &str, followed: &[Value]) -> Vec<Value> {
    let all = lines_of(&synthfleet(&["tail", &fx.name, "--state-dir", state], &[]));
    assert_eq!(all, followed, "the same lines, in the same order");
    let committed: BTreeSet<String> = fx
        .results()
        .await
        .metas
        .iter()
        .map(|m| m.summary.trajectory_id.clone())
        .collect();
    assert_eq!(
        ids(&all).into_iter().collect::<BTreeSet<_>>(),
        committed,
        "every committed trajectory, once"
    );
    all
}

/// A local campaign `name` of the standard tasks, 2 samples each, on a fake LLM that
/// answers every call with `fault` (if any) first.
fn local_campaign(name: &str, fault: Option<Fault>) -> (FakeLlm, Fixture) {
    let (tasks, mut scripts) = standard_tasks();
    if let Some(fault) = fault {
        for script in &mut scripts {
            script.always = Some(fault.clone());
        }
    }
    let llm = FakeLlm::start(scripts);
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 5.0\n{}",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new(name, &tasks, &body);
    (llm, fx)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_tail_prints_commits_in_order_resumes_after_a_cursor_and_follows_a_run() {
    let (_llm, fx) = local_campaign("tail-local", None);
    let state = fx.state_dir();
    let state = path_str(&state);
    // A follower started while the run holds the state reads the commit log beside it
    // (`local_tail_streams_a_run_while_it_runs_and_never_holds_the_state` checks it prints
    // while the run runs).
    let run = synthfleet_command(
        &["run", fx.campaign_arg(), "--concurrency", "3"],
        [("FAKE_LLM_KEY", SECRET)],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn the run");
    let state_file = fx.state_dir().join("state.redb");
    wait_for("the run's state", Duration::from_secs(60), async || {
        state_file.exists()
    })
    .await;
    let follower = Follower::local(&fx.name, state, "0.5");
    let out = run.wait_with_output().expect("the run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let followed = follower.wait_for_lines(6, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(follower.lines().len(), 6, "each commit printed once");
    follower.interrupt();
    check_lines(&followed, &fx.name);

    // Without --follow: everything, in the same order, then it exits.
    let all = tailed_again(&fx, state, &followed).await;
    let results = fx.results().await;
    // The local order is the order of the commits: each line's commit came no earlier
    // than the rollouts before it finished... and the summary is the item's.
    for line in &all {
        let meta = results
            .metas
            .iter()
            .find(|m| line["trajectory_id"] == m.summary.trajectory_id.as_str())
            .expect("its item");
        assert_eq!(line["object_key"], meta.object_key.as_str());
        assert_eq!(line["instance_id"], meta.summary.instance_id.as_str());
        assert_eq!(line["resolved"], Value::from(meta.resolved));
        assert_eq!(line["sha256"], meta.sha256.as_str());
    }

    // Resumed after the third line: exactly the last three.
    let rest = lines_of(&synthfleet(
        &[
            "tail",
            &fx.name,
            "--state-dir",
            state,
            "--since",
            cursor(&all[2]),
        ],
        &[],
    ));
    assert_eq!(rest, all[3..]);
    let none = lines_of(&synthfleet(
        &[
            "tail",
            &fx.name,
            "--state-dir",
            state,
            "--since",
            cursor(&all[5]),
        ],
        &[],
    ));
    assert!(none.is_empty());

    // With the records, read and verified.
    let with_records = lines_of(&synthfleet(
        &["tail", &fx.name, "--state-dir", state, "--records"],
        &[],
    ));
    assert_eq!(ids(&with_records), ids(&all));
    for line in &with_records {
        assert_eq!(line["record"]["trajectory_id"], line["trajectory_id"]);
        assert!(
            line["record"]["steps"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        );
    }

    // A cursor of another campaign, or none at all, is refused with the reason.
    let other = CommitCursor::new("another", "00000000000000000001").encode();
    let refused = synthfleet(
        &["tail", &fx.name, "--state-dir", state, "--since", &other],
        &[],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not `tail-local`"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let garbled = synthfleet(
        &[
            "tail",
            &fx.name,
            "--state-dir",
            state,
            "--since",
            "not a cursor",
        ],
        &[],
    );
    assert!(!garbled.status.success());
    assert!(String::from_utf8_lossy(&garbled.stderr).contains("is not a commit cursor"));
}

/// A follower started before a run streams the run's commits while the run is still going
/// (it reads the commit log beside the database, never the database itself), each once and
/// in commit order; and no run or other command is ever refused the state because a
/// follower is polling it.
#[tokio::test(flavor = "multi_thread")]
async fn local_tail_streams_a_run_while_it_runs_and_never_holds_the_state() {
    // Slow replies: the run commits one rollout after another over several seconds.
    let (_llm, fx) = local_campaign("tail-live", Some(Fault::Delay(Duration::from_millis(800))));
    let state = fx.state_dir();
    let state = path_str(&state);
    // Following before the state exists, polling often: every poll is a chance to get in
    // the way of a process opening the state.
    let follower = Follower::local(&fx.name, state, "0.05");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run_log = fx.dir.path().join("run.log");
    let mut run = synthfleet_command(
        &["run", fx.campaign_arg(), "--concurrency", "2"],
        [("FAKE_LLM_KEY", SECRET)],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&run_log).expect("the run's log"))
    .spawn()
    .expect("spawn the run");
    let run_log_text = || std::fs::read_to_string(&run_log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        // The count first, then whether the run is alive: a line counted before the run
        // was seen alive was printed while it ran.
        let printed = follower.lines().len();
        let exited = run.try_wait().expect("the run's status");
        if printed >= 1 {
            assert!(
                exited.is_none(),
                "the follower printed its first line only after the run ended ({exited:?}): {}",
                run_log_text()
            );
            break;
        }
        assert!(
            exited.is_none(),
            "the run ended ({exited:?}) before the follower printed a line: {}",
            run_log_text()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no line from the follower while the run ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = run.wait().expect("the run");
    assert!(status.success(), "the run failed: {}", run_log_text());

    let followed = follower.wait_for_lines(6, Duration::from_secs(60)).await;
    // Commands that open the state while the follower keeps polling it: none is refused.
    for _ in 0..10 {
        let out = synthfleet(&["status", "--state-dir", state], &[]);
        assert!(
            out.status.success(),
            "status beside a follower: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for _ in 0..2 {
        fx.run_ok(&[]);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(follower.lines().len(), 6, "each commit printed once");
    follower.interrupt();
    check_lines(&followed, &fx.name);
    let all = tailed_again(&fx, state, &followed).await;
    // A state from before the commit logs: `tail` opens it once, which writes them.
    let logs = fx.state_dir().join("commits");
    std::fs::remove_dir_all(&logs).expect("remove the commit logs");
    let again = lines_of(&synthfleet(&["tail", &fx.name, "--state-dir", state], &[]));
    assert_eq!(again, all);
    assert!(logs.is_dir(), "the logs are written");
}

/// The SQS queue subscribed to the commit topic: the events it received so far, each its
/// body and message attributes.
async fn events(moto: &Moto, inbox: &str, into: &mut Vec<(Value, BTreeMap<String, String>)>) {
    let received = moto
        .clients
        .sqs
        .receive_message()
        .queue_url(inbox)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive events");
    for message in received.messages() {
        let envelope: Value =
            serde_json::from_str(message.body().expect("a body")).expect("SNS's envelope");
        let body: Value = serde_json::from_str(envelope["Message"].as_str().expect("Message"))
            .expect("the event is JSON");
        let attributes = envelope["MessageAttributes"]
            .as_object()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v["Value"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        into.push((body, attributes));
        moto.clients
            .sqs
            .delete_message()
            .queue_url(inbox)
            .receipt_handle(message.receipt_handle().expect("receipt"))
            .send()
            .await
            .expect("delete the event");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_commits_are_tailed_on_dynamodb_and_announced_on_sns() {
    let moto = Moto::start().await;
    let (_, topic, inbox) = topic_with_inbox(&moto, "commits", "trainer-inbox").await;

    let (tasks, scripts) = standard_tasks();
    let llm = FakeLlm::start(scripts);
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 5.0\n{}",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("tail-fleet", &tasks, &body);
    let submitted = run_cli(&moto, &["submit", fx.campaign_arg()]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    // Following before anything is committed.
    let follower = Follower::spawn(
        &[
            "tail",
            &fx.name,
            "--backend",
            "aws",
            "--follow",
            "--interval-s",
            "0.5",
            "--settle-s",
            "1",
        ],
        moto.env(),
    );
    let worker = spawn_worker_with(
        &moto,
        "w1",
        &[],
        &[("SYNTHFLEET_COMMITS_TOPIC", topic.as_str())],
    );
    let followed = follower.wait_for_lines(6, Duration::from_secs(240)).await;
    let (status, log) = terminate(worker);
    assert!(status.success(), "{log}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(follower.lines().len(), 6, "each commit printed once");
    follower.interrupt();
    check_lines(&followed, &fx.name);
    let store = moto.store();
    let metas = store.metadata.trajectories(&fx.name).await.expect("list");
    assert_eq!(
        ids(&followed).into_iter().collect::<BTreeSet<_>>(),
        metas
            .iter()
            .map(|m| m.summary.trajectory_id.clone())
            .collect::<BTreeSet<_>>()
    );
    let created: Vec<&str> = followed
        .iter()
        .map(|l| l["created_at"].as_str().expect("created_at"))
        .collect();
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(created, sorted, "ordered by when each rollout finished");

    // A new process from the start, and after a cursor.
    let tail = |extra: &[&str]| {
        let mut args = vec!["tail", fx.name.as_str(), "--settle-s", "0"];
        args.extend_from_slice(extra);
        lines_of(&run_cli(&moto, &args))
    };
    let all = tail(&[]);
    assert_eq!(all, followed);
    assert_eq!(tail(&["--since", cursor(&all[1])]), all[2..]);
    let with_records = tail(&["--records", "--since", cursor(&all[4])]);
    assert_eq!(ids(&with_records), ids(&all[5..]));
    assert_eq!(
        with_records[0]["record"]["trajectory_id"],
        all[5]["trajectory_id"]
    );

    // Items committed before the commit order existed (no `commit_order`) still tail, in
    // the same place.
    let dynamodb = &moto.clients.dynamodb;
    for id in [ids(&all)[0].clone(), ids(&all)[3].clone()] {
        let item = dynamodb
            .scan()
            .table_name(&moto.names.table)
            .send()
            .await
            .expect("scan")
            .items()
            .iter()
            .find(|item| item.get("sk").and_then(|v| v.as_s().ok()) == Some(&format!("TRAJ#{id}")))
            .cloned()
            .expect("the trajectory item");
        dynamodb
            .update_item()
            .table_name(&moto.names.table)
            .key("pk", item["pk"].clone())
            .key("sk", item["sk"].clone())
            .update_expression("REMOVE commit_order")
            .send()
            .await
            .expect("make the item one from before the commit order");
    }
    assert_eq!(tail(&[]), all, "unindexed items keep their place");
    assert_eq!(tail(&["--since", cursor(&all[0])]), all[1..]);

    // One event per commit, with the line's fields and cursor, and attributes to filter on.
    let mut received = Vec::new();
    wait_for("six commit events", Duration::from_secs(30), async || {
        events(&moto, &inbox, &mut received).await;
        received.len() >= 6
    })
    .await;
    assert_eq!(received.len(), 6, "one event per commit");
    for line in &all {
        let (event, attributes) = received
            .iter()
            .find(|(event, _)| event["trajectory_id"] == line["trajectory_id"])
            .expect("an event of the commit");
        for field in [
            "campaign",
            "instance_id",
            "sample_index",
            "object_key",
            "resolved",
            "reward",
            "cursor",
            "sha256",
        ] {
            assert_eq!(event[field], line[field], "{field}: {event} vs {line}");
        }
        assert_eq!(event["schema"], 1);
        assert_eq!(attributes.get("campaign"), Some(&fx.name));
        assert_eq!(
            attributes.get("resolved").map(String::as_str),
            line["resolved"]
                .as_bool()
                .map(|r| if r { "true" } else { "false" })
        );
        assert_eq!(
            attributes.get("status"),
            line["status"].as_str().map(str::to_owned).as_ref()
        );
    }

    // A topic the worker cannot publish to costs the commits nothing: the failure is
    // logged, and the trajectories are committed and tailed all the same.
    let fx = Fixture::new("tail-unannounced", &tasks[..1], &body);
    let submitted = run_cli(&moto, &["submit", fx.campaign_arg()]);
    assert!(submitted.status.success());
    let worker = spawn_worker_with(
        &moto,
        "w2",
        &[],
        &[(
            "SYNTHFLEET_COMMITS_TOPIC",
            "arn:aws:sns:us-east-1:123456789012:no-such-topic",
        )],
    );
    wait_for_trajectories(
        &moto,
        &fx.name,
        2,
        "the unannounced commits",
        Duration::from_secs(120),
    )
    .await;
    let (status, log) = terminate(worker);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("the commit event was not published"),
        "the failed publish is logged: {log}"
    );
    let lines = lines_of(&run_cli(&moto, &["tail", &fx.name, "--settle-s", "0"]));
    assert_eq!(lines.len(), 2, "both committed");
    events(&moto, &inbox, &mut received).await;
    assert_eq!(received.len(), 6, "nothing announced for them");
}
