//! Every port's conformance suite (`synthfleet_tests::conformance`) against every backend:
//! the embedded one, and AWS's through moto's server.

use std::sync::Arc;
use std::time::Duration;
use synthfleet_aws::{DynamoMetadata, S3ObjectStore, SqsQueue};
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
    conformance::metadata::conforms(Arc::new(DynamoMetadata::new(
        moto.clients.dynamodb.clone(),
        &moto.names.table,
    )))
    .await;
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
