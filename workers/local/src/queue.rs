//! An embedded queue with SQS semantics.

use crate::db::{BACKEND, DEAD, LocalState, MESSAGES, TxError, from_json, now_ms, to_json};
use async_trait::async_trait;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use synthfleet_core::message::TaskMessage;
use synthfleet_core::ports::{DeadLetter, Delivery, Queue, QueueStats, RedriveSelect, StoreError};

/// A named queue inside a [`LocalState`]: at-least-once delivery, visibility timeouts,
/// receive counts, and a dead-letter queue that takes a message on the delivery after
/// its `max_receives`-th one (SQS's redrive policy), or at once through `dead_letter`.
#[derive(Clone)]
pub struct LocalQueue {
    state: LocalState,
    name: String,
    max_receives: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredMessage {
    body: String,
    receive_count: u32,
    visible_at_ms: u64,
    sent_at_ms: u64,
}

impl StoredMessage {
    /// A message sent at `now`, visible after `delay`, never received.
    fn fresh(body: String, now: u64, delay: Duration) -> StoredMessage {
        StoredMessage {
            body,
            receive_count: 0,
            visible_at_ms: now + delay.as_millis() as u64,
            sent_at_ms: now,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeadMessage {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    pub reason: String,
    pub dead_at_ms: u64,
}

/// Message ids sort in send order (monotonic ULIDs), so delivery is first in, first out.
fn next_message_id() -> String {
    static IDS: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());
    // Only a poisoned lock or 2^80 ids in one millisecond fall back to a plain ULID.
    match IDS.lock().ok().and_then(|mut ids| ids.generate().ok()) {
        Some(id) => id.to_string(),
        None => ulid::Ulid::new().to_string(),
    }
}

impl LocalQueue {
    pub fn new(state: &LocalState, name: &str, max_receives: u32) -> LocalQueue {
        LocalQueue {
            state: state.clone(),
            name: name.to_owned(),
            max_receives: max_receives.max(1),
        }
    }

    fn key(&self, message_id: &str) -> String {
        format!("{}\0{message_id}", self.name)
    }

    fn prefix(&self) -> (String, String) {
        (format!("{}\0", self.name), format!("{}\u{1}", self.name))
    }

    /// Makes every in-flight message visible again, and takes back the delivery the dead
    /// run had made: a crash is not the sample's failure, so it costs no attempt.
    ///
    /// Only the process holding the state directory (redb locks it exclusively) can call
    /// this, so any message in flight at that moment belongs to a run that died: waiting
    /// out its visibility timeout would gain nothing.
    pub async fn recover_in_flight(&self) -> Result<u64, StoreError> {
        let queue = self.clone();
        self.state
            .blocking(move |state| {
                state.write("recovering in-flight messages", |tx| {
                    let now = now_ms();
                    let (start, end) = queue.prefix();
                    let mut table = tx.open_table(MESSAGES)?;
                    let mut stuck = Vec::new();
                    for item in table.range(start.as_str()..end.as_str())? {
                        let (key, value) = item?;
                        let message: StoredMessage = from_json("queue message", value.value())?;
                        if message.visible_at_ms > now && message.receive_count > 0 {
                            stuck.push((key.value().to_owned(), message));
                        }
                    }
                    let count = stuck.len() as u64;
                    for (key, mut message) in stuck {
                        message.visible_at_ms = now;
                        message.receive_count -= 1;
                        table.insert(key.as_str(), to_json(&message)?.as_slice())?;
                    }
                    Ok(count)
                })
            })
            .await
    }

    /// Enqueues `bodies`, visible after `delay`, in one transaction.
    async fn insert(&self, bodies: Vec<String>, delay: Duration) -> Result<(), StoreError> {
        let queue = self.clone();
        self.state
            .blocking(move |state| {
                state.write("sending messages", |tx| {
                    let mut table = tx.open_table(MESSAGES)?;
                    for body in bodies {
                        queue.put_fresh(&mut table, body, delay)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Stores `body` as a new message under a fresh id (no receipt of an earlier message
    /// can name it), never received, visible after `delay`.
    fn put_fresh(
        &self,
        table: &mut redb::Table<'_, &'static str, &'static [u8]>,
        body: String,
        delay: Duration,
    ) -> Result<(), TxError> {
        let message = StoredMessage::fresh(body, now_ms(), delay);
        table.insert(
            self.key(&next_message_id()).as_str(),
            to_json(&message)?.as_slice(),
        )?;
        Ok(())
    }

    /// Messages in the dead-letter queue, oldest first.
    pub async fn dead_messages(&self) -> Result<Vec<DeadMessage>, StoreError> {
        let queue = self.clone();
        self.state
            .blocking(move |state| {
                state.read("listing dead letters", |tx| {
                    let table = tx.open_table(DEAD)?;
                    let (start, end) = queue.prefix();
                    let mut out = Vec::new();
                    for item in table.range(start.as_str()..end.as_str())? {
                        let (_, value) = item?;
                        out.push(from_json("dead letter", value.value())?);
                    }
                    Ok(out)
                })
            })
            .await
    }

    /// Applies `f` to the in-flight message named by `receipt`, in one transaction.
    async fn with_receipt(
        &self,
        operation: &'static str,
        receipt: &str,
        f: impl FnOnce(&redb::WriteTransaction, &str, StoredMessage) -> Result<(), TxError>
        + Send
        + 'static,
    ) -> Result<(), StoreError> {
        let queue = self.clone();
        let receipt = receipt.to_owned();
        self.state
            .blocking(move |state| {
                state.write(operation, |tx| {
                    let stale = || StoreError::StaleReceipt {
                        receipt: receipt.clone(),
                    };
                    let (message_id, count) = receipt.rsplit_once('.').ok_or_else(stale)?;
                    let key = queue.key(message_id);
                    let message: StoredMessage = {
                        let table = tx.open_table(MESSAGES)?;
                        let value = table.get(key.as_str())?.ok_or_else(stale)?;
                        from_json("queue message", value.value())?
                    };
                    if message.receive_count.to_string() != count {
                        return Err(stale().into());
                    }
                    f(tx, &key, message)
                })
            })
            .await
    }

    fn move_to_dead(
        tx: &redb::WriteTransaction,
        key: &str,
        message: StoredMessage,
        reason: String,
    ) -> Result<(), TxError> {
        let message_id = key.rsplit('\0').next().unwrap_or(key).to_owned();
        let dead = DeadMessage {
            message_id,
            body: message.body,
            receive_count: message.receive_count,
            reason,
            dead_at_ms: now_ms(),
        };
        // A task message that dies here has its dead letter recorded with it (a message
        // that is not one is kept in the dead queue with its reason, and nothing else).
        if let Ok(task) = TaskMessage::parse(&dead.body) {
            let letter = DeadLetter::of(&task, dead.receive_count, &dead.reason);
            crate::metadata::record_dead_letter_in(tx, &letter)?;
        }
        tx.open_table(MESSAGES)?.remove(key)?;
        tx.open_table(DEAD)?
            .insert(key, to_json(&dead)?.as_slice())?;
        Ok(())
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<(), StoreError> {
        self.insert(vec![body.to_owned()], delay).await
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<(), StoreError> {
        self.insert(bodies.to_vec(), Duration::ZERO).await
    }

    async fn requeue(
        &self,
        delivery: &Delivery,
        body: &str,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let body = body.to_owned();
        let queue = self.clone();
        self.with_receipt(
            "putting a message back",
            &delivery.receipt,
            move |tx, key, _| {
                // A fresh copy under a new id, as on SQS: its receive count starts over and
                // no receipt of the old one can ever name it.
                let mut table = tx.open_table(MESSAGES)?;
                table.remove(key)?;
                queue.put_fresh(&mut table, body, delay)
            },
        )
        .await
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, StoreError> {
        let queue = self.clone();
        self.state
            .blocking(move |state| {
                state.write("receiving messages", |tx| {
                    let now = now_ms();
                    let (start, end) = queue.prefix();
                    let mut due = Vec::new();
                    {
                        let table = tx.open_table(MESSAGES)?;
                        for item in table.range(start.as_str()..end.as_str())? {
                            let (key, value) = item?;
                            let message: StoredMessage = from_json("queue message", value.value())?;
                            if message.visible_at_ms <= now {
                                due.push((key.value().to_owned(), message));
                                if due.len() >= max {
                                    break;
                                }
                            }
                        }
                    }
                    let mut deliveries = Vec::new();
                    for (key, mut message) in due {
                        if message.receive_count >= queue.max_receives {
                            let reason = format!(
                                "received {} times without being deleted (max {}): the worker handling it crashed or timed out each time",
                                message.receive_count, queue.max_receives
                            );
                            LocalQueue::move_to_dead(tx, &key, message, reason)?;
                            continue;
                        }
                        message.receive_count += 1;
                        message.visible_at_ms = now + visibility.as_millis() as u64;
                        let message_id = key.rsplit('\0').next().unwrap_or(&key).to_owned();
                        deliveries.push(Delivery {
                            receipt: format!("{message_id}.{}", message.receive_count),
                            message_id,
                            body: message.body.clone(),
                            receive_count: message.receive_count,
                            sent_at: i64::try_from(message.sent_at_ms)
                                .ok()
                                .and_then(chrono::DateTime::from_timestamp_millis),
                        });
                        tx.open_table(MESSAGES)?.insert(key.as_str(), to_json(&message)?.as_slice())?;
                    }
                    Ok(deliveries)
                })
            })
            .await
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), StoreError> {
        self.with_receipt(
            "extending visibility",
            receipt,
            move |tx, key, mut message| {
                message.visible_at_ms = now_ms() + visibility.as_millis() as u64;
                tx.open_table(MESSAGES)?
                    .insert(key, to_json(&message)?.as_slice())?;
                Ok(())
            },
        )
        .await
    }

    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        self.with_receipt("deleting a message", receipt, |tx, key, _| {
            tx.open_table(MESSAGES)?.remove(key)?;
            Ok(())
        })
        .await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), StoreError> {
        let reason = reason.to_owned();
        self.with_receipt(
            "dead-lettering a message",
            &delivery.receipt,
            move |tx, key, message| LocalQueue::move_to_dead(tx, key, message, reason),
        )
        .await
    }

    async fn redrive(&self, select: &RedriveSelect<'_>) -> Result<u64, StoreError> {
        let chosen: Vec<(String, String)> = self
            .dead_messages()
            .await?
            .into_iter()
            .filter_map(|dead| select(&dead.body).map(|body| (self.key(&dead.message_id), body)))
            .collect();
        let queue = self.clone();
        self.state
            .blocking(move |state| {
                state.write("redriving dead letters", |tx| {
                    let mut dead = tx.open_table(DEAD)?;
                    let mut messages = tx.open_table(MESSAGES)?;
                    let mut moved = 0;
                    for (key, body) in chosen {
                        if dead.remove(key.as_str())?.is_none() {
                            continue;
                        }
                        queue.put_fresh(&mut messages, body, Duration::ZERO)?;
                        moved += 1;
                    }
                    Ok(moved)
                })
            })
            .await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let queue = self.clone();
        self.state
            .blocking(move |state| {
                state.read("reading queue stats", |tx| {
                    let now = now_ms();
                    let (start, end) = queue.prefix();
                    let mut stats = QueueStats::default();
                    for item in tx
                        .open_table(MESSAGES)?
                        .range(start.as_str()..end.as_str())?
                    {
                        let (_, value) = item?;
                        let message: StoredMessage = from_json("queue message", value.value())?;
                        if message.visible_at_ms <= now {
                            stats.visible += 1;
                        } else {
                            stats.in_flight += 1;
                        }
                    }
                    stats.dead = tx
                        .open_table(DEAD)?
                        .range(start.as_str()..end.as_str())?
                        .count() as u64;
                    Ok(stats)
                })
            })
            .await
    }
}

impl std::fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalQueue({}, {BACKEND})", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqs_semantics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = LocalState::open(dir.path()).expect("open");
        let q = LocalQueue::new(&state, "q", 2);
        q.send("a", Duration::ZERO).await.expect("send");
        q.send("b", Duration::ZERO).await.expect("send");
        q.send("later", Duration::from_secs(600))
            .await
            .expect("send");

        let first = q
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        let bodies: Vec<&str> = first.iter().map(|d| d.body.as_str()).collect();
        assert_eq!(bodies, ["a", "b"], "the delayed message is not visible yet");
        assert!(
            q.receive(10, Duration::from_secs(60))
                .await
                .expect("receive")
                .is_empty()
        );
        assert_eq!(q.stats().await.expect("stats").in_flight, 3);

        q.delete(&first[0].receipt).await.expect("delete");
        // Visibility cut to zero: visible again at once.
        q.extend(&first[1].receipt, Duration::ZERO)
            .await
            .expect("extend");
        let second = q.receive(10, Duration::ZERO).await.expect("receive");
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].receive_count, 2);
        // the old receipt is stale now
        assert!(matches!(
            q.delete(&first[1].receipt).await,
            Err(StoreError::StaleReceipt { .. })
        ));
        // a third delivery would exceed max_receives = 2: dead-lettered instead
        assert!(
            q.receive(10, Duration::ZERO)
                .await
                .expect("receive")
                .is_empty()
        );
        let stats = q.stats().await.expect("stats");
        assert_eq!((stats.visible, stats.in_flight, stats.dead), (0, 1, 1));
        assert!(
            q.dead_messages().await.expect("dead")[0]
                .reason
                .contains("received 2 times")
        );
    }

    #[tokio::test]
    async fn the_receive_count_backstop_records_the_dead_letter() {
        use synthfleet_core::ports::MetadataStore;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = LocalState::open(dir.path()).expect("open");
        let metadata = crate::LocalMetadata::new(&state);
        metadata
            .upsert_campaign("c", synthfleet_core::MicroUsd(10), 1)
            .await
            .expect("upsert");
        let task = synthfleet_core::task::parse_tasks(
            std::path::Path::new("t.jsonl"),
            r#"{"instance_id":"t1","image":"img","problem_statement":"p"}"#,
        )
        .expect("task")
        .remove(0);
        let q = LocalQueue::new(&state, "q", 1);
        q.send(&TaskMessage::new("c", &task, 0).to_body(), Duration::ZERO)
            .await
            .expect("send");
        // Received once, never deleted (the worker crashed each time), then the backstop.
        assert_eq!(
            q.receive(1, Duration::ZERO).await.expect("receive").len(),
            1
        );
        assert!(
            q.receive(1, Duration::ZERO)
                .await
                .expect("receive")
                .is_empty()
        );
        let letters = metadata.dead_letters("c").await.expect("letters");
        assert_eq!(
            letters.len(),
            1,
            "no sample vanishes into the dead queue unrecorded"
        );
        assert_eq!(
            (letters[0].key.instance_id.as_str(), letters[0].attempts),
            ("t1", 1)
        );
        assert!(
            letters[0].error.contains("without being deleted"),
            "{}",
            letters[0].error
        );
        let campaign = metadata
            .campaign("c")
            .await
            .expect("read")
            .expect("campaign");
        assert_eq!(campaign.counts.dead_lettered, 1);
    }

    #[tokio::test]
    async fn recovery_defer_and_explicit_dead_letters() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let state = LocalState::open(dir.path()).expect("open");
            let q = LocalQueue::new(&state, "q", 5);
            q.send("x", Duration::ZERO).await.expect("send");
            // received by a run that then died
            q.receive(1, Duration::from_secs(600))
                .await
                .expect("receive");
        }
        let state = LocalState::open(dir.path()).expect("reopen");
        let q = LocalQueue::new(&state, "q", 5);
        let other = LocalQueue::new(&state, "other", 5);
        assert!(
            other
                .receive(1, Duration::ZERO)
                .await
                .expect("receive")
                .is_empty(),
            "queues are separate"
        );
        assert!(
            q.receive(1, Duration::ZERO)
                .await
                .expect("receive")
                .is_empty(),
            "still in flight"
        );
        assert_eq!(q.recover_in_flight().await.expect("recover"), 1);
        let d = q
            .receive(1, Duration::from_secs(30))
            .await
            .expect("receive");
        assert_eq!(
            (d[0].body.as_str(), d[0].receive_count),
            ("x", 1),
            "the dead run's delivery is not an attempt"
        );
        q.defer(&d[0], Duration::ZERO).await.expect("defer");
        let d = q
            .receive(1, Duration::from_secs(30))
            .await
            .expect("receive");
        assert_eq!(
            d[0].receive_count, 1,
            "a deferred delivery is not an attempt"
        );
        q.dead_letter(&d[0], "not a task")
            .await
            .expect("dead letter");
        assert_eq!(
            q.dead_messages().await.expect("dead")[0].reason,
            "not a task"
        );
    }
}
