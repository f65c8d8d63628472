//! Every port's conformance suite (`synthfleet_tests::conformance`) against every backend:
//! the embedded one, and AWS's through moto's server.

use std::sync::Arc;
use std::time::Duration;
use synthfleet_aws::{DynamoMetadata, S3ObjectStore, SqsQueue};
use synthfleet_core::ports::MetadataStore;
use synthfleet_local::{LocalMetadata, LocalObjectStore, LocalQueue, LocalState};
use synthfleet_tests::conformance;
use synthfleet_tests::moto::Moto;

#[tokio::test(flavor = "multi_thread")]
async fn metadata_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = LocalState::open(dir.path()).expect("open state");
    conformance::metadata::conforms(Arc::new(LocalMetadata::new(&state))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_dynamodb() {
    let moto = Moto::start().await;
    let store = Arc::new(DynamoMetadata::new(
        moto.clients.dynamodb.clone(),
        &moto.names.table,
    ));
    conformance::metadata::conforms(store.clone()).await;
    conformance::metadata::a_corrupt_campaign_item_is_skipped(
        store.as_ref(),
        async |name: &str| corrupt_campaign_item(&moto, name).await,
    )
    .await;
}

/// Makes the campaign item of `name` one that no version of synthfleet reads: its state
/// one it does not know, its budget gone (as a hand edit in the console might leave it).
pub async fn corrupt_campaign_item(moto: &Moto, name: &str) {
    let dynamodb = &moto.clients.dynamodb;
    DynamoMetadata::new(dynamodb.clone(), &moto.names.table)
        .upsert_campaign(name, synthfleet_core::MicroUsd(10), 1)
        .await
        .expect("create the campaign");
    // The key as DynamoDB returns it (this crate does not name the SDK's types).
    let key = dynamodb
        .scan()
        .table_name(&moto.names.table)
        .send()
        .await
        .expect("scan")
        .items()
        .iter()
        .find(|item| {
            item.get("pk").and_then(|v| v.as_s().ok()) == Some(&format!("CAMPAIGN#{name}"))
                && item
                    .get("sk")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some("CAMPAIGN")
        })
        .map(|item| {
            ["pk", "sk"]
                .into_iter()
                .filter_map(|k| Some((k.to_owned(), item.get(k)?.clone())))
                .collect()
        })
        .expect("the campaign item");
    dynamodb
        .update_item()
        .table_name(&moto.names.table)
        .set_key(Some(key))
        .update_expression("SET #state = #name REMOVE #budget")
        .expression_attribute_names("#state", "state")
        .expression_attribute_names("#name", "name")
        .expression_attribute_names("#budget", "budget")
        .send()
        .await
        .expect("corrupt the campaign item");
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = LocalState::open(dir.path()).expect("open state");
    conformance::queue::conforms(&LocalQueue::new(&state, "tasks", 3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_sqs() {
    let moto = Moto::start().await;
    let queue = SqsQueue::new(
        moto.clients.sqs.clone(),
        &moto.names.queue_url,
        &moto.names.dead_letter_queue_url,
    )
    .with_wait(Duration::ZERO);
    conformance::queue::conforms(&queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalObjectStore::new(dir.path());
    conformance::objects::conforms(&store, async |key: &str, bytes: Vec<u8>| {
        std::fs::write(dir.path().join(key), bytes).expect("tamper with the file");
    })
    .await;
    assert!(
        synthfleet_core::ports::ObjectStore::put(&store, "../escape", vec![])
            .await
            .is_err(),
        "keys cannot leave the store's directory"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_s3() {
    let moto = Moto::start().await;
    let s3 = &moto.clients.s3;
    let bucket = &moto.names.bucket;
    let store = S3ObjectStore::new(s3.clone(), bucket);
    conformance::objects::conforms(&store, async |key: &str, bytes: Vec<u8>| {
        // Another writer replaces the body but keeps the checksum we recorded.
        let head = s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("head");
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .set_metadata(head.metadata().cloned())
            .body(bytes.into())
            .send()
            .await
            .expect("tamper with the object");
    })
    .await;
}

/// A new campaign's per-sample items spread over partition keys (layout 2); a campaign
/// created before (its item has no `layout`) keeps them under its own key, and reads them
/// there.
#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_spreads_samples_over_partitions_and_keeps_old_campaigns_whole() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use synthfleet_core::message::ResultKey;
    let moto = Moto::start().await;
    let dynamodb = &moto.clients.dynamodb;
    let table = &moto.names.table;
    for name in ["spread", "whole"] {
        DynamoMetadata::new(dynamodb.clone(), table)
            .upsert_campaign(name, synthfleet_core::MicroUsd(10), 8)
            .await
            .expect("create");
    }
    // As the item of a campaign created before layouts were recorded.
    dynamodb
        .update_item()
        .table_name(table)
        .key("pk", AttributeValue::S("CAMPAIGN#whole".into()))
        .key("sk", AttributeValue::S("CAMPAIGN".into()))
        .update_expression("REMOVE #layout")
        .expression_attribute_names("#layout", "layout")
        .send()
        .await
        .expect("an old campaign item");
    let store = DynamoMetadata::new(dynamodb.clone(), table);
    for name in ["spread", "whole"] {
        for sample in 0..8 {
            let key = ResultKey {
                campaign: name.into(),
                instance_id: "task".into(),
                sample_index: sample,
            };
            let meta = conformance::metadata::sample_meta(&key, &format!("01{name}{sample}"));
            store.commit(&meta).await.expect("commit");
            assert_eq!(
                store.result(&key).await.expect("read").as_ref(),
                Some(&meta),
                "{key}"
            );
        }
        assert_eq!(store.trajectories(name).await.expect("list").len(), 8);
        let counts = store
            .campaign(name)
            .await
            .expect("read")
            .expect("item")
            .counts;
        assert_eq!(counts.success, 8, "{name}");
    }
    let items = dynamodb
        .scan()
        .table_name(table)
        .send()
        .await
        .expect("scan");
    let result_pks = |campaign: &str| -> std::collections::BTreeSet<String> {
        items
            .items()
            .iter()
            .filter(|i| {
                i.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|sk| sk.starts_with("RESULT#"))
            })
            .filter_map(|i| i.get("pk")?.as_s().ok().cloned())
            .filter(|pk| {
                pk == &format!("CAMPAIGN#{campaign}")
                    || pk.starts_with(&format!("CAMPAIGN#{campaign}#"))
            })
            .collect()
    };
    assert_eq!(
        result_pks("whole"),
        ["CAMPAIGN#whole".to_owned()].into(),
        "an old campaign keeps its layout"
    );
    let spread = result_pks("spread");
    assert!(
        spread.len() > 1 && spread.iter().all(|pk| pk.starts_with("CAMPAIGN#spread#S")),
        "{spread:?}"
    );
}
