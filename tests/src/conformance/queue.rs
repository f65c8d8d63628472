//! The queue port: SQS semantics as the worker relies on them.

use std::time::Duration;
use synthfleet_core::ports::{Queue, StoreError};

/// Runs the suite on an empty queue whose `max_receives` is at least 3.
pub async fn conforms(queue: &dyn Queue) {
    let long = Duration::from_secs(600);
    queue.send("a", Duration::ZERO).await.expect("send");
    queue.send("b", Duration::ZERO).await.expect("send");
    queue
        .send("later", Duration::from_secs(600))
        .await
        .expect("send");

    let first = receive_all(queue, 2, long).await;
    let mut bodies: Vec<&str> = first.iter().map(|d| d.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["a", "b"], "a delayed message is not visible yet");
    assert!(
        first.iter().all(|d| d.receive_count == 1),
        "first deliveries count 1"
    );
    assert!(
        queue.receive(10, long).await.expect("receive").is_empty(),
        "in-flight messages are invisible"
    );

    queue.delete(&first[0].receipt).await.expect("delete");
    // Visibility cut to zero: visible again at once, as a second delivery.
    queue
        .extend(&first[1].receipt, Duration::ZERO)
        .await
        .expect("extend");
    let second = receive_all(queue, 1, long).await;
    assert_eq!(
        (second[0].body.as_str(), second[0].receive_count),
        (first[1].body.as_str(), 2)
    );

    // A requeue replaces the delivery with a fresh copy: the receive count starts over.
    queue
        .requeue(&second[0], "retry-1", Duration::ZERO)
        .await
        .expect("requeue");
    let third = receive_all(queue, 1, long).await;
    assert_eq!(
        (third[0].body.as_str(), third[0].receive_count),
        ("retry-1", 1)
    );
    queue.defer(&third[0], Duration::ZERO).await.expect("defer");
    let fourth = receive_all(queue, 1, long).await;
    assert_eq!(
        (fourth[0].body.as_str(), fourth[0].receive_count),
        ("retry-1", 1),
        "a deferred delivery is not an attempt"
    );

    queue
        .dead_letter(&fourth[0], "not a task")
        .await
        .expect("dead letter");
    let stats = queue.stats().await.expect("stats");
    assert_eq!(
        (stats.visible, stats.in_flight, stats.dead),
        (0, 1, 1),
        "the delayed message waits; the dead-lettered one is in the dead-letter queue"
    );

    // A redrive moves the selected dead messages back as fresh ones, rewritten.
    let select = |body: &str| (body == "retry-1").then(|| "redriven".to_owned());
    assert_eq!(queue.redrive(&|_: &str| None).await.expect("redrive"), 0);
    assert_eq!(queue.redrive(&select).await.expect("redrive"), 1);
    let back = receive_all(queue, 1, long).await;
    assert_eq!(
        (back[0].body.as_str(), back[0].receive_count),
        ("redriven", 1)
    );
    assert_eq!(queue.stats().await.expect("stats").dead, 0);
    assert_eq!(
        queue.redrive(&select).await.expect("redrive"),
        0,
        "moved once"
    );

    // A receipt of an earlier delivery is no backend failure: the embedded queue says it
    // is stale; SQS accepts it and "might not" delete the message (moto does). Workers
    // never rely on either: a result commits once whoever deletes.
    queue
        .delete(&back[0].receipt)
        .await
        .expect("delete the redriven message");
    queue.send("z", Duration::ZERO).await.expect("send");
    let early = receive_all(queue, 1, Duration::ZERO).await;
    let late = receive_all(queue, 1, long).await;
    assert_eq!(late[0].receive_count, 2);
    for receipt in [&early[0].receipt, &late[0].receipt] {
        assert!(
            matches!(
                queue.delete(receipt).await,
                Ok(()) | Err(StoreError::StaleReceipt { .. })
            ),
            "deleting with any receipt of a message is no backend failure"
        );
    }
    assert_eq!(
        queue.stats().await.expect("stats").in_flight,
        1,
        "only the delayed message is left"
    );
}

/// Receives until `n` deliveries arrived (a backend may hand them out over several calls).
async fn receive_all(
    queue: &dyn Queue,
    n: usize,
    visibility: Duration,
) -> Vec<synthfleet_core::ports::Delivery> {
    let mut out = Vec::new();
    for _ in 0..50 {
        out.extend(
            queue
                .receive(n - out.len(), visibility)
                .await
                .expect("receive"),
        );
        if out.len() == n {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} deliveries, got {}", out.len());
}
