//! The control-plane functions, invoked in-process as Lambda invokes them (a `LambdaEvent`
//! with its `Context`), against moto's server.

use crate::aws::topic_with_inbox;
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;
use std::sync::Arc;
use synthfleet_backend::Backend;
use synthfleet_control::budget::{AlertTopic, BudgetGuard};
use synthfleet_control::enqueue::Enqueuer;
use synthfleet_control::finalize::{Finalizer, JobsTask};
use synthfleet_control::scaler::{Capacity, Scaler};
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::{BudgetLease, CampaignState, Spend};
use synthfleet_core::message::ResultKey;
use synthfleet_core::ports::{DeadLetter, MetadataStore, WorkerHeartbeat};
use synthfleet_core::scaling::ScalingPolicy;
use synthfleet_tests::conformance;
use synthfleet_tests::fake_ecs::{FakeEcsAgent, FakeEcsApi};
use synthfleet_tests::fake_llm::{FakeLlm, Fault};
use synthfleet_tests::moto::Moto;
use synthfleet_tests::task_line;

fn event(payload: serde_json::Value) -> LambdaEvent<serde_json::Value> {
    LambdaEvent::new(payload, Context::default())
}

pub(crate) async fn upload(moto: &Moto, key: &str, body: &str) {
    moto.clients
        .s3
        .put_object()
        .bucket(&moto.names.bucket)
        .key(key)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .expect("upload");
}

/// An ECS service `workers` in cluster `fleet`, at 0 tasks, for the scaler to size.
async fn worker_service(moto: &Moto) -> aws_sdk_ecs::Client {
    let ecs = aws_sdk_ecs::Client::new(&moto.config);
    ecs.create_cluster()
        .cluster_name("fleet")
        .send()
        .await
        .expect("cluster");
    ecs.register_task_definition()
        .family("worker")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("worker")
                .image("synthfleet:latest")
                .memory(512)
                .build(),
        )
        .send()
        .await
        .expect("task definition");
    ecs.create_service()
        .cluster("fleet")
        .service_name("workers")
        .task_definition("worker")
        .desired_count(0)
        .send()
        .await
        .expect("service");
    ecs
}

/// An Auto Scaling group `workers` of `desired` instances (moto launches them).
async fn worker_group(moto: &Moto, desired: i32) -> aws_sdk_autoscaling::Client {
    let asg = aws_sdk_autoscaling::Client::new(&moto.config);
    asg.create_launch_configuration()
        .launch_configuration_name("workers")
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .expect("launch configuration");
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("workers")
        .launch_configuration_name("workers")
        .min_size(0)
        .max_size(5)
        .desired_capacity(desired)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("group");
    asg
}

/// Whether each instance of the group is protected from scale-in, by instance id.
async fn protection(asg: &aws_sdk_autoscaling::Client) -> Vec<(String, bool)> {
    asg.describe_auto_scaling_groups()
        .auto_scaling_group_names("workers")
        .send()
        .await
        .expect("describe the group")
        .auto_scaling_groups()[0]
        .instances()
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_owned(),
                i.protected_from_scale_in().unwrap_or(false),
            )
        })
        .collect()
}

fn enqueuer(moto: &Moto) -> Enqueuer {
    Enqueuer {
        backend: Backend::aws(&moto.clients, moto.names.clone()),
        s3: moto.clients.s3.clone(),
        bucket: moto.names.bucket.clone(),
    }
}

/// Uploads the `nightly` campaign (three tasks, `CAMPAIGN`) where the enqueue function
/// takes uploads.
pub(crate) async fn upload_nightly(moto: &Moto) {
    let tasks: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|id| task_line(id, "median", "[x] anything", "true"))
        .collect();
    upload(
        moto,
        "incoming/nightly/tasks/set.jsonl",
        &(tasks.join("\n") + "\n"),
    )
    .await;
    upload(moto, "incoming/nightly/campaign.toml", CAMPAIGN).await;
}

pub(crate) const CAMPAIGN: &str = "name = \"nightly\"\ntasks = [\"tasks/set.jsonl\"]\nbudget_usd = 2.0\n\n[[models]]\nname = \"replay\"\nprovider = \"replay\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_takes_uploads_and_schedules_once_per_run_and_writes_nothing_on_error() {
    let moto = Moto::start().await;
    upload_nightly(&moto).await;
    let function = enqueuer(&moto);
    let metadata = function.backend.store().metadata.clone();
    let queue = function.backend.queue("nightly");

    // The S3 notification of the upload.
    let uploaded = json!({"Records": [{"s3": {
        "bucket": {"name": moto.names.bucket},
        "object": {"key": "incoming/nightly/campaign.toml"}
    }}]});
    let first = function
        .handle(event(uploaded.clone()))
        .await
        .expect("enqueue");
    assert_eq!(
        (first[0].campaign.as_str(), first[0].enqueued),
        ("nightly", 3)
    );
    let item = metadata
        .campaign("nightly")
        .await
        .expect("read")
        .expect("campaign item");
    assert_eq!(
        (item.ledger.budget, item.total_samples),
        (MicroUsd(2_000_000), 3)
    );
    // Lambda retries an invocation that timed out: nothing is enqueued twice.
    let retried = function.handle(event(uploaded)).await.expect("retry");
    assert_eq!((retried[0].enqueued, retried[0].already_queued), (0, 3));

    // Each firing of a schedule is its own run, with its own budget.
    let firing = json!({
        "campaign_key": "incoming/nightly/campaign.toml",
        "scheduled_time": "2026-11-28T05:00:00Z"
    });
    let fired = function
        .handle(event(firing.clone()))
        .await
        .expect("scheduled");
    assert_eq!(
        (fired[0].campaign.as_str(), fired[0].enqueued),
        ("nightly-202611280500", 3)
    );
    // The scheduler (or Lambda) retries the firing: a repeat, said so, nothing sent.
    let refired = function.handle(event(firing)).await.expect("retried");
    assert_eq!(
        (refired[0].redelivered, refired[0].enqueued),
        (true, 0),
        "{refired:?}"
    );
    assert!(
        metadata
            .campaign("nightly-202611280500")
            .await
            .expect("read")
            .is_some()
    );
    assert_eq!(queue.stats().await.expect("stats").visible, 6);

    // A campaign with a bad task row: a clear error, and nothing written.
    upload(
        &moto,
        "incoming/broken/tasks/set.jsonl",
        "{\"instance_id\": \"x\"}\n",
    )
    .await;
    upload(
        &moto,
        "incoming/broken/campaign.toml",
        &CAMPAIGN.replace("nightly", "broken"),
    )
    .await;
    let err = function
        .handle(event(
            json!({"campaign_key": "incoming/broken/campaign.toml"}),
        ))
        .await
        .expect_err("a bad task");
    // As Lambda reports it: the error with its causes.
    let chain = lambda_runtime::Diagnostic::from(err).error_message;
    assert!(
        chain.contains("set.jsonl") && chain.contains("image"),
        "{chain}"
    );
    assert!(metadata.campaign("broken").await.expect("read").is_none());
    // A source that was never uploaded, and an event of another kind.
    upload(
        &moto,
        "incoming/lonely/campaign.toml",
        &CAMPAIGN.replace("nightly", "lonely"),
    )
    .await;
    let err = function
        .handle(event(
            json!({"campaign_key": "incoming/lonely/campaign.toml"}),
        ))
        .await
        .expect_err("no tasks");
    assert!(
        err.to_string()
            .contains("upload it beside the campaign file"),
        "{err}"
    );
    assert!(
        function
            .handle(event(json!({"detail-type": "something else"})))
            .await
            .is_err()
    );
    assert_eq!(queue.stats().await.expect("stats").visible, 6);
}

/// Uploads `body` at `key` and returns the S3 notification of that upload, as S3 sends
/// it: the object's eTag and the event's `sequencer` (increasing per key).
async fn uploaded(moto: &Moto, key: &str, body: &str, sequencer: &str) -> serde_json::Value {
    let put = moto
        .clients
        .s3
        .put_object()
        .bucket(&moto.names.bucket)
        .key(key)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .expect("upload");
    let etag = put.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    json!({"Records": [{
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": moto.names.bucket},
            "object": {"key": key, "size": body.len(), "eTag": etag, "versionId": null, "sequencer": sequencer}
        }
    }]})
}

/// S3 delivers an event at least once and Lambda retries it for hours: the upload's event
/// again, after the campaign is done, changes nothing (no second `running`, no second
/// finalization); a new upload of the file is the user's intent and runs it again, sending
/// only the samples without a result; an older event that arrives late changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_upload_event_leaves_a_done_campaign_done_and_a_new_upload_runs_it_again() {
    let moto = Moto::start().await;
    let tasks: Vec<String> = ["a", "b"]
        .iter()
        .map(|id| task_line(id, "median", "[x] anything", "true"))
        .collect();
    upload(
        &moto,
        "incoming/again/tasks/set.jsonl",
        &(tasks.join("\n") + "\n"),
    )
    .await;
    let campaign = CAMPAIGN.replace("nightly", "again");
    let key = "incoming/again/campaign.toml";
    let first_upload = uploaded(&moto, key, &campaign, "0062E99A88DC407460").await;
    let function = enqueuer(&moto);
    let store = function.backend.store().clone();
    let metadata = store.metadata.clone();
    let ecs = FakeEcsApi::start();
    let finalizer = Finalizer {
        store: store.clone(),
        jobs: Some(jobs_task(&ecs)),
    };
    let first = function
        .handle(event(first_upload.clone()))
        .await
        .expect("enqueue");
    assert_eq!(first[0].enqueued, 2);
    // Every sample gets its result; finalize marks the campaign done and launches its jobs.
    for (i, instance) in ["a", "b"].into_iter().enumerate() {
        let key = ResultKey {
            campaign: "again".into(),
            instance_id: instance.into(),
            sample_index: 0,
        };
        let meta = conformance::metadata::sample_meta(&key, &format!("01AGAIN{i}"));
        metadata.commit(&meta).await.expect("commit");
    }
    assert_eq!(
        finalizer
            .run(chrono::Utc::now())
            .await
            .expect("finalize")
            .len(),
        1
    );
    let state = async || {
        metadata
            .campaign("again")
            .await
            .expect("read")
            .expect("item")
    };
    assert_eq!(state().await.state, CampaignState::Done);

    // The same event, delivered again.
    let again = function
        .handle(event(first_upload.clone()))
        .await
        .expect("a redelivery");
    assert_eq!(
        state().await.state,
        CampaignState::Done,
        "a redelivery never reopens a campaign"
    );
    assert!(
        finalizer
            .run(chrono::Utc::now())
            .await
            .expect("finalize")
            .is_empty(),
        "nothing to finalize again"
    );
    assert_eq!(ecs.runs().len(), 1, "the jobs were launched once");
    assert_eq!(again[0].enqueued, 0);
    assert!(again[0].redelivered, "{again:?}");

    // A new upload of the file (two samples per task now): the user's intent.
    let second_upload = uploaded(
        &moto,
        key,
        &campaign.replace("budget_usd", "samples_per_task = 2\nbudget_usd"),
        "0062E99A88DC4074A1",
    )
    .await;
    let rerun = function
        .handle(event(second_upload))
        .await
        .expect("a new upload");
    assert_eq!(
        (
            rerun[0].enqueued,
            rerun[0].already_done,
            rerun[0].redelivered
        ),
        (2, 2, false),
        "only the samples without a result"
    );
    assert!(rerun[0].reopened, "{rerun:?}");
    let record = state().await;
    assert_eq!(
        (record.state, record.total_samples),
        (CampaignState::Running, 4)
    );
    // The first upload's event, arriving late: older than what was applied.
    let late = function
        .handle(event(first_upload))
        .await
        .expect("a late event");
    assert!(late[0].redelivered && late[0].enqueued == 0, "{late:?}");
    let record = state().await;
    assert_eq!(
        (record.state, record.total_samples),
        (CampaignState::Running, 4),
        "the late event changed nothing"
    );
    // The new samples get their results: finalized again, the report is built again
    // (a client token of its own: it covers other results).
    for (i, instance) in ["a", "b"].into_iter().enumerate() {
        let key = ResultKey {
            campaign: "again".into(),
            instance_id: instance.into(),
            sample_index: 1,
        };
        let meta = conformance::metadata::sample_meta(&key, &format!("01AGAIN{}", i + 2));
        metadata.commit(&meta).await.expect("commit");
    }
    let totals = finalizer.run(chrono::Utc::now()).await.expect("finalize");
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert_eq!(totals[0].samples, 4);
    assert_eq!(state().await.state, CampaignState::Done);
    let runs = ecs.runs();
    assert_eq!(
        runs.len(),
        2,
        "a second jobs task for the new results: {runs:?}"
    );
    assert_ne!(runs[0]["clientToken"], runs[1]["clientToken"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn budget_reclaims_dead_leases_exhausts_and_alerts_once_per_threshold() {
    let moto = Moto::start().await;
    let backend = Backend::aws(&moto.clients, moto.names.clone());
    let metadata: Arc<dyn MetadataStore> = backend.store().metadata.clone();
    metadata
        .upsert_campaign("capped", MicroUsd(1_000), 1)
        .await
        .expect("create");
    metadata
        .upsert_campaign("other", MicroUsd(1_000), 1)
        .await
        .expect("create");
    // Alerts go to an SNS topic; an SQS subscription lets the test read them.
    let (sns, topic, inbox) = topic_with_inbox(&moto, "alerts", "alert-inbox").await;
    let guard = BudgetGuard {
        metadata: metadata.clone(),
        alerts: Some(AlertTopic {
            sns,
            topic_arn: topic,
        }),
    };

    // 60 % spent, and a call of a worker that died holds 300 more.
    let spend = |amount: u64| {
        let metadata = metadata.clone();
        async move {
            let lease = BudgetLease::new("capped", "w", MicroUsd(amount), chrono::Utc::now());
            conformance::metadata::reserve(metadata.as_ref(), &lease, Spend::Rollout).await;
            assert!(
                metadata
                    .settle(&lease, MicroUsd(amount))
                    .await
                    .expect("settle")
            );
        }
    };
    spend(600).await;
    let mut dead = BudgetLease::new("capped", "gone", MicroUsd(300), chrono::Utc::now());
    dead.expires_at = chrono::Utc::now() - chrono::Duration::minutes(1);
    conformance::metadata::reserve(metadata.as_ref(), &dead, Spend::Rollout).await;

    let run = guard.handle(event(json!({}))).await.expect("budget run");
    assert_eq!(
        run.reclaimed,
        [("capped".to_owned(), "gone".to_owned(), 300)]
    );
    assert_eq!(
        run.alerts,
        [("capped".to_owned(), 50), ("capped".to_owned(), 80)],
        "60 % spent plus the reclaimed 300: a jump past 50 % and 80 %, each alert once"
    );
    assert!(run.exhausted.is_empty());
    let again = guard.handle(event(json!({}))).await.expect("budget run");
    assert!(
        again.alerts.is_empty() && again.reclaimed.is_empty(),
        "{again:?}"
    );

    spend(100).await;
    let capped = guard.handle(event(json!({}))).await.expect("budget run");
    assert_eq!(capped.alerts, [("capped".to_owned(), 100)]);
    let record = metadata
        .campaign("capped")
        .await
        .expect("read")
        .expect("item");
    assert_eq!(record.state, CampaignState::Exhausted);
    assert_eq!(
        metadata
            .campaign("other")
            .await
            .expect("read")
            .expect("item")
            .state,
        CampaignState::Running,
        "other campaigns go on"
    );

    let received = moto
        .clients
        .sqs
        .receive_message()
        .queue_url(&inbox)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive alerts");
    let bodies: Vec<&str> = received
        .messages()
        .iter()
        .filter_map(|m| m.body())
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    for pct in [50, 80, 100] {
        assert_eq!(
            bodies
                .iter()
                .filter(|b| b.contains(&format!("\\\"threshold_pct\\\":{pct}")))
                .count(),
            1,
            "the {pct} % alert once: {bodies:?}"
        );
    }
}

/// What a transaction undone halfway leaves (moto's threaded server can, see docs/AWS.md):
/// a reservation whose lease item is gone. The budget function's audit finds it, logs it
/// and books it as spent at its worst case; a ledger that is right is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_lease_is_found_by_the_audit_and_booked_at_worst_case() {
    let moto = Moto::start().await;
    let backend = Backend::aws(&moto.clients, moto.names.clone());
    let metadata: Arc<dyn MetadataStore> = backend.store().metadata.clone();
    for name in ["lost", "sound"] {
        metadata
            .upsert_campaign(name, MicroUsd(10_000), 1)
            .await
            .expect("create");
    }
    let now = chrono::Utc::now();
    let lost = BudgetLease::new("lost", "w", MicroUsd(2_500), now);
    let kept = BudgetLease::new("lost", "w", MicroUsd(400), now);
    let sound = BudgetLease::new("sound", "w", MicroUsd(300), now);
    for lease in [&lost, &kept, &sound] {
        conformance::metadata::reserve(metadata.as_ref(), lease, Spend::Rollout).await;
    }
    moto.clients
        .dynamodb
        .delete_item()
        .table_name(&moto.names.table)
        .key("pk", AttributeValue::S("CAMPAIGN#lost".into()))
        .key("sk", AttributeValue::S(format!("LEASE#{}", lost.id)))
        .send()
        .await
        .expect("lose the lease item");
    // Each worker's heartbeat is fresh: nothing is reclaimed, only the audit can see it.
    metadata
        .heartbeat(&conformance::metadata::busy_worker("w", now))
        .await
        .expect("heartbeat");

    let guard = BudgetGuard {
        metadata: metadata.clone(),
        alerts: None,
    };
    let run = guard.handle(event(json!({}))).await.expect("budget run");
    assert!(run.reclaimed.is_empty(), "{run:?}");
    assert_eq!(run.repaired, [("lost".to_owned(), 2_900, 400)]);
    let ledger = metadata
        .campaign("lost")
        .await
        .expect("read")
        .expect("item")
        .ledger;
    assert_eq!(
        (ledger.spent, ledger.reserved),
        (MicroUsd(2_500), MicroUsd(400)),
        "the lost reservation booked as spent; the live lease still reserved"
    );
    let again = guard.handle(event(json!({}))).await.expect("budget run");
    assert!(again.repaired.is_empty(), "repaired once: {again:?}");
    assert!(metadata.settle(&kept, MicroUsd(100)).await.expect("settle"));
    let end = metadata
        .campaign("lost")
        .await
        .expect("read")
        .expect("item")
        .ledger;
    assert_eq!((end.spent, end.reserved), (MicroUsd(2_600), MicroUsd::ZERO));
}

#[tokio::test(flavor = "multi_thread")]
async fn finalize_marks_a_campaign_done_once_every_sample_is_accounted_for() {
    let moto = Moto::start().await;
    let backend = Backend::aws(&moto.clients, moto.names.clone());
    let store = backend.store().clone();
    let metadata = store.metadata.clone();
    let ecs = FakeEcsApi::start();
    let finalizer = Finalizer {
        store,
        jobs: Some(jobs_task(&ecs)),
    };
    for name in ["finished", "unfinished"] {
        metadata
            .upsert_campaign(name, MicroUsd(1_000), 2)
            .await
            .expect("create");
    }
    // A campaign item that does not decode is skipped: it holds no other campaign back.
    crate::conformance::corrupt_campaign_item(&moto, "corrupt").await;
    let key = |campaign: &str, sample| ResultKey {
        campaign: campaign.into(),
        instance_id: "t".into(),
        sample_index: sample,
    };
    for campaign in ["finished", "unfinished"] {
        let committed =
            conformance::metadata::sample_meta(&key(campaign, 0), &format!("01{campaign}"));
        metadata.commit(&committed).await.expect("commit");
    }
    metadata
        .record_dead_letter(&DeadLetter {
            key: key("finished", 1),
            attempts: 3,
            error: "broken".into(),
            at: chrono::Utc::now(),
            history: Vec::new(),
        })
        .await
        .expect("dead letter");

    let done = finalizer.handle(event(json!({}))).await.expect("finalize");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(
        (
            done[0].campaign.as_str(),
            done[0].success,
            done[0].dead_lettered
        ),
        ("finished", 1, 1)
    );
    let state = |name: &'static str| {
        let metadata = metadata.clone();
        async move {
            metadata
                .campaign(name)
                .await
                .expect("read")
                .expect("item")
                .state
        }
    };
    assert_eq!(state("finished").await, CampaignState::Done);
    assert_eq!(
        state("unfinished").await,
        CampaignState::Running,
        "a sample without an outcome keeps it running"
    );
    let totals: serde_json::Value = serde_json::from_slice(
        &finalizer
            .store
            .objects
            .get("reports/finished/totals.json")
            .await
            .expect("totals recorded"),
    )
    .expect("JSON");
    assert_eq!(totals["samples"], 2);
    // The quality jobs of the finished campaign, and of it alone, were launched.
    let runs = ecs.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["cluster"], "jobs");
    assert_eq!(runs[0]["taskDefinition"], "synthfleet-jobs");
    assert_eq!(runs[0]["launchType"], "FARGATE");
    assert_eq!(
        runs[0]["networkConfiguration"]["awsvpcConfiguration"]["subnets"],
        json!(["subnet-1", "subnet-2"])
    );
    assert_eq!(
        runs[0]["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"],
        "DISABLED"
    );
    assert_eq!(
        runs[0]["overrides"]["containerOverrides"],
        json!([{"name": "jobs", "command": ["--log-format", "json", "publish", "finished"]}])
    );
    assert!(
        finalizer
            .handle(event(json!({})))
            .await
            .expect("finalize")
            .is_empty(),
        "done once"
    );
    assert_eq!(ecs.runs().len(), 1, "launched once");
    // A launch retried after a crash (before `done`) carries the same client token, so ECS
    // starts no second task.
    let jobs = finalizer.jobs.as_ref().expect("jobs");
    let finished = metadata
        .campaign("finished")
        .await
        .expect("read")
        .expect("item");
    let first = jobs.launch(&finished).await.expect("launch");
    let again = jobs.launch(&finished).await.expect("launch");
    assert_eq!(first, again);
    let runs = ecs.runs();
    assert_eq!(runs[0]["clientToken"], runs[2]["clientToken"]);
    assert!(
        runs[0]["clientToken"]
            .as_str()
            .is_some_and(|t| t.len() <= 64)
    );
}

/// The quality jobs' task, on a fake ECS API.
fn jobs_task(ecs: &FakeEcsApi) -> JobsTask {
    JobsTask {
        client: ecs.client(),
        cluster: "jobs".into(),
        task_definition: "synthfleet-jobs".into(),
        container: "jobs".into(),
        subnets: vec!["subnet-1".into(), "subnet-2".into()],
        security_groups: vec!["sg-1".into()],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scaler_takes_an_ecs_service_and_an_asg_from_zero_to_n_and_back() {
    let moto = Moto::start().await;
    let backend = Backend::aws(&moto.clients, moto.names.clone());
    let queue = backend.queue("");
    let metadata = backend.store().metadata.clone();
    let policy = ScalingPolicy {
        min: 0,
        max: 5,
        tasks_per_worker: 2,
        idle_before_zero: chrono::TimeDelta::minutes(10),
    };
    let ecs = worker_service(&moto).await;
    let asg = worker_group(&moto, 0).await;
    let scalers = [
        Scaler {
            queue: queue.clone(),
            metadata: metadata.clone(),
            capacity: Capacity::Ecs {
                client: ecs,
                cluster: "fleet".into(),
                service: "workers".into(),
            },
            policy,
        },
        Scaler {
            queue: queue.clone(),
            metadata: metadata.clone(),
            capacity: Capacity::Asg {
                client: asg,
                group: "workers".into(),
            },
            policy,
        },
    ];
    let decide = async |at: chrono::DateTime<chrono::Utc>| {
        let mut desired = Vec::new();
        for scaler in &scalers {
            let decision = scaler.run(at).await.expect("scale");
            desired.push(decision.desired);
        }
        desired
    };
    let now = chrono::Utc::now();
    assert_eq!(decide(now).await, [0, 0], "no work, no workers");
    metadata
        .upsert_campaign("scaled", MicroUsd::from_usd_ceil(1.0), 5)
        .await
        .expect("campaign");
    for i in 0..5 {
        queue
            .send(&format!("task {i}"), std::time::Duration::ZERO)
            .await
            .expect("send");
    }
    assert_eq!(
        decide(now).await,
        [3, 3],
        "five tasks, two per worker: 0 -> 3"
    );
    // The budget runs out: the five messages stay in the queue (deferred, for `resume`)
    // but hold no capacity, however long they wait.
    let exhausted = metadata
        .set_state(
            "scaled",
            CampaignState::Exhausted,
            Some("budget spent".into()),
        )
        .await
        .expect("exhaust");
    assert!(exhausted);
    assert_eq!(decide(now).await, [0, 0], "nothing can run: no workers");
    assert_eq!(
        decide(now + chrono::TimeDelta::hours(1)).await,
        [0, 0],
        "and none later"
    );
    assert!(
        metadata
            .set_state("scaled", CampaignState::Running, None)
            .await
            .is_ok_and(|moved| !moved),
        "exhausted is left by a raised budget, not a state change"
    );
    metadata
        .upsert_campaign("scaled", MicroUsd::from_usd_ceil(2.0), 5)
        .await
        .expect("raise the budget");
    assert_eq!(
        decide(now).await,
        [3, 3],
        "resumed: the same messages are work"
    );
    // A worker has taken the last task and is busy: the fleet keeps it.
    let deliveries = queue
        .receive(10, std::time::Duration::from_secs(600))
        .await
        .expect("receive");
    for d in &deliveries[1..] {
        queue.delete(&d.receipt).await.expect("delete");
    }
    let busy = |in_flight, at| WorkerHeartbeat {
        worker_id: "w1".into(),
        at,
        in_flight,
        completed: 4,
        version: "test".into(),
        interval_s: 30,
        last_active: Some(at),
        open_breakers: Vec::new(),
    };
    metadata.heartbeat(&busy(1, now)).await.expect("beat");
    assert_eq!(
        decide(now).await,
        [1, 1],
        "one rollout in flight: one worker stays"
    );
    queue.delete(&deliveries[0].receipt).await.expect("delete");
    metadata.heartbeat(&busy(0, now)).await.expect("beat");
    assert_eq!(decide(now).await, [1, 1], "idle for a moment: kept");
    let later = now + chrono::TimeDelta::minutes(11);
    metadata
        .heartbeat(&WorkerHeartbeat {
            at: later,
            last_active: Some(now),
            open_breakers: Vec::new(),
            ..busy(0, now)
        })
        .await
        .expect("beat");
    assert_eq!(
        decide(later).await,
        [0, 0],
        "idle past the window: back to zero"
    );
}

/// A campaign's whole life on the control plane: a schedule fires → enqueue → the scaler
/// asks for workers (started here as `synthfleet worker` processes, as ECS would start
/// tasks) → rollouts → never fewer workers than are busy → finalize marks it done → the
/// scaler returns to zero once the fleet has idled.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_campaign_lives_from_zero_workers_to_done_and_back_to_zero() {
    let moto = Moto::start().await;
    let (tasks, scripts) = crate::standard_tasks();
    let llm = FakeLlm::start(scripts);
    // Calls take a moment, so the scaler sees busy workers.
    llm.push_faults(vec![
        Fault::Delay(std::time::Duration::from_millis(700));
        12
    ]);
    let body = format!("budget_usd = 5.0\n{}", crate::fake_model(&llm.url, ""));
    let fx = crate::Fixture::new("life", &tasks, &body);
    let campaign = std::fs::read_to_string(&fx.campaign).expect("campaign file");
    let task_file = std::fs::read_to_string(fx.dir.path().join("tasks.jsonl")).expect("tasks");
    upload(&moto, "incoming/life/tasks.jsonl", &task_file).await;
    upload(&moto, "incoming/life/campaign.toml", &campaign).await;

    let backend = Backend::aws(&moto.clients, moto.names.clone());
    let metadata = backend.store().metadata.clone();
    let ecs = worker_service(&moto).await;
    let scaler = Scaler {
        queue: backend.queue(""),
        metadata: metadata.clone(),
        capacity: Capacity::Ecs {
            client: ecs,
            cluster: "fleet".into(),
            service: "workers".into(),
        },
        policy: ScalingPolicy {
            min: 0,
            max: 4,
            tasks_per_worker: 2,
            idle_before_zero: chrono::TimeDelta::minutes(10),
        },
    };
    let jobs_api = FakeEcsApi::start();
    let finalizer = Finalizer {
        store: backend.store().clone(),
        jobs: Some(jobs_task(&jobs_api)),
    };
    assert_eq!(
        scaler.run(chrono::Utc::now()).await.expect("scale").desired,
        0
    );

    let fired = enqueuer(&moto)
        .handle(event(json!({
            "campaign_key": "incoming/life/campaign.toml",
            "scheduled_time": "2026-11-28T06:00:00Z"
        })))
        .await
        .expect("enqueue");
    let run = fired[0].campaign.clone();
    assert_eq!((run.as_str(), fired[0].enqueued), ("life-202611280600", 3));

    let wanted = scaler.run(chrono::Utc::now()).await.expect("scale").desired;
    assert_eq!(wanted, 2, "three tasks, two per worker");
    // The first worker runs on an instance of an Auto Scaling group: it keeps it out of
    // scale-ins while it has rollouts, and lets it go when idle.
    let asg = worker_group(&moto, 1).await;
    let instance = protection(&asg).await[0].0.clone();
    // The second runs as an ECS task: it asks its ECS agent for task protection.
    let agent = FakeEcsAgent::start();
    let workers = vec![
        crate::aws::spawn_worker(
            &moto,
            "life-w0",
            &[
                "--heartbeat-s",
                "1",
                "--asg-name",
                "workers",
                "--instance-id",
                &instance,
            ],
        ),
        crate::aws::spawn_worker_with(
            &moto,
            "life-w1",
            &["--heartbeat-s", "1", "--ecs-task-protection"],
            &[("ECS_AGENT_URI", &agent.uri)],
        ),
    ];
    assert_eq!(workers.len() as u32, wanted);
    crate::aws::wait_for(
        "w0 protecting its instance while busy",
        std::time::Duration::from_secs(90),
        async || protection(&asg).await[0].1,
    )
    .await;
    // Mid-rollout, the scaler never asks for fewer workers than are busy.
    crate::aws::wait_for(
        "a busy worker",
        std::time::Duration::from_secs(90),
        async || {
            metadata
                .heartbeats()
                .await
                .is_ok_and(|beats| beats.iter().any(|b| b.in_flight > 0))
        },
    )
    .await;
    let busy = metadata
        .heartbeats()
        .await
        .expect("beats")
        .iter()
        .filter(|b| b.in_flight > 0)
        .count() as u32;
    let decision = scaler.run(chrono::Utc::now()).await.expect("scale");
    assert!(decision.desired >= busy, "{decision:?} with {busy} busy");

    // Finalize marks the run done once every sample has its outcome.
    crate::aws::wait_for(
        "the run done",
        std::time::Duration::from_secs(240),
        async || {
            finalizer.run(chrono::Utc::now()).await.expect("finalize");
            metadata
                .campaign(&run)
                .await
                .is_ok_and(|c| c.is_some_and(|c| c.state == CampaignState::Done))
        },
    )
    .await;
    let done = metadata.campaign(&run).await.expect("read").expect("item");
    assert_eq!(
        (
            done.counts.success + done.counts.failed,
            done.counts.dead_lettered
        ),
        (3, 0)
    );
    let objects = backend.store().objects.clone();
    assert!(
        objects
            .get(&format!("reports/{run}/totals.json"))
            .await
            .is_ok()
    );
    // Finalize launched the quality jobs; run the command their task runs (this test
    // plays ECS, as it does for the workers): `synthfleet-jobs publish {run}`, which
    // `synthfleet publish` forwards to. They publish the report and the export into the
    // campaign's store.
    let runs = jobs_api.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let command: Vec<&str> = runs[0]["overrides"]["containerOverrides"][0]["command"]
        .as_array()
        .expect("command override")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(command, ["--log-format", "json", "publish", run.as_str()]);
    // The harness gives `--log-format json` itself.
    let published = crate::synthfleet_command(&command[2..], moto.env())
        .output()
        .expect("synthfleet publish");
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    for key in [
        format!("reports/{run}/report.json"),
        format!("reports/{run}/dashboard.html"),
        format!("exports/{run}/README.md"),
    ] {
        assert!(objects.get(&key).await.is_ok(), "{key} was not published");
    }
    assert!(
        !objects
            .list(&format!("exports/{run}/data/"))
            .await
            .expect("list")
            .is_empty(),
        "the export's Parquet shards"
    );
    // Idle, w0 lets its instance go; w1 asked its agent for protection while busy, and
    // lifted it since.
    crate::aws::wait_for(
        "w0 lifting the protection",
        std::time::Duration::from_secs(30),
        async || !protection(&asg).await[0].1,
    )
    .await;
    crate::aws::wait_for(
        "w1 lifting its task protection",
        std::time::Duration::from_secs(30),
        async || agent.states().last() == Some(&false),
    )
    .await;
    assert!(
        agent.states().contains(&true),
        "w1 protected its task while busy: {:?}",
        agent.states()
    );
    // Nothing left to do: within the idle window the workers are kept, past it the fleet
    // goes back to zero (and ECS stops them: here, SIGTERM).
    assert_eq!(
        scaler.run(chrono::Utc::now()).await.expect("scale").desired,
        decision.desired,
        "idle for a moment: kept"
    );
    let later = chrono::Utc::now() + chrono::TimeDelta::minutes(11);
    assert_eq!(scaler.run(later).await.expect("scale").desired, 0);
    for worker in workers {
        let (status, log) = crate::aws::terminate(worker);
        assert!(status.success(), "{log}");
    }
}
