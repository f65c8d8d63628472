//! The SQS queue: long polling, batch receive, visibility heartbeats, explicit and
//! redrive-policy dead-lettering.

use crate::aws_error;
use async_trait::async_trait;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use std::time::Duration;
use synthfleet_core::ports::{Delivery, Queue, QueueStats, RedriveSelect, StoreError};

const BACKEND: &str = "SQS";
/// SQS's longest message delay.
const MAX_DELAY: Duration = Duration::from_secs(900);
/// SQS's longest visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letter_queue_url: String,
    wait: Duration,
}

/// SQS takes at most 10 messages and 256 KiB of bodies per batch request.
const BATCH_COUNT: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;

/// `bodies` cut into batches SQS accepts (a body over the limit goes alone, and SQS says
/// why it refuses it).
fn batches(bodies: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        if i > start && (i - start == BATCH_COUNT || bytes + body.len() > BATCH_BYTES) {
            out.push(&bodies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

fn secs(d: Duration, max: Duration) -> i32 {
    d.min(max).as_secs() as i32
}

impl SqsQueue {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: &str,
        dead_letter_queue_url: &str,
    ) -> SqsQueue {
        SqsQueue {
            client,
            queue_url: queue_url.to_owned(),
            dead_letter_queue_url: dead_letter_queue_url.to_owned(),
            wait: Duration::from_secs(20),
        }
    }

    /// Long-poll wait of each receive (default 20 s, SQS's maximum).
    pub fn with_wait(mut self, wait: Duration) -> SqsQueue {
        self.wait = wait.min(Duration::from_secs(20));
        self
    }

    async fn set_visibility(
        &self,
        url: &str,
        receipt: &str,
        visibility: Duration,
        operation: &str,
    ) -> Result<(), StoreError> {
        match self
            .client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(visibility, MAX_VISIBILITY))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_receipt_handle_is_invalid() || s.is_message_not_inflight()
                }) =>
            {
                Err(StoreError::StaleReceipt {
                    receipt: receipt.to_owned(),
                })
            }
            Err(e) => Err(aws_error(BACKEND, format!("{operation} on {url}"), e)),
        }
    }

    async fn count(&self, url: &str, names: &[QueueAttributeName]) -> Result<u64, StoreError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| aws_error(BACKEND, format!("reading the attributes of {url}"), e))?;
        let attributes = out.attributes();
        Ok(names
            .iter()
            .filter_map(|n| attributes.and_then(|a| a.get(n)))
            .filter_map(|v| v.parse::<u64>().ok())
            .sum())
    }

    async fn send_to(
        &self,
        url: &str,
        body: &str,
        delay: Duration,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut send = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(secs(delay, MAX_DELAY));
        if let Some(reason) = reason {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason.chars().take(4000).collect::<String>())
                .build()
                .map_err(|e| aws_error(BACKEND, "building a message attribute", e))?;
            send = send.message_attributes("synthfleet_reason", value);
        }
        send.send()
            .await
            .map_err(|e| aws_error(BACKEND, format!("sending to {url}"), e))?;
        Ok(())
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, body: &str, delay: Duration) -> Result<(), StoreError> {
        self.send_to(&self.queue_url, body, delay, None).await
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<(), StoreError> {
        for chunk in batches(bodies) {
            let mut pending: Vec<(String, &String)> = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| (i.to_string(), body))
                .collect();
            // Entries a batch reports as failed (throttled, ...) are sent again.
            for round in 0..5u32 {
                let entries = pending
                    .iter()
                    .map(|(id, body)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(id)
                            .message_body(body.as_str())
                            .build()
                            .map_err(|e| aws_error(BACKEND, "building a batch entry", e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| {
                        aws_error(BACKEND, format!("sending a batch to {}", self.queue_url), e)
                    })?;
                let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
                if failed.is_empty() {
                    break;
                }
                if round == 4 {
                    return Err(StoreError::backend(
                        BACKEND,
                        format!("sending a batch to {}", self.queue_url),
                        format!("{} messages kept failing: {:?}", failed.len(), out.failed()),
                    ));
                }
                pending.retain(|(id, _)| failed.contains(&id.as_str()));
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, StoreError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(self.wait.as_secs() as i32)
            .visibility_timeout(secs(visibility, MAX_VISIBILITY))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| aws_error(BACKEND, format!("receiving from {}", self.queue_url), e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let attribute = |name| m.attributes().and_then(|a| a.get(&name));
                let receive_count = attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                // Epoch milliseconds.
                let sent_at = attribute(MessageSystemAttributeName::SentTimestamp)
                    .and_then(|v| v.parse().ok())
                    .and_then(chrono::DateTime::from_timestamp_millis);
                Some(Delivery {
                    message_id: m.message_id()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count,
                    sent_at,
                })
            })
            .collect())
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), StoreError> {
        self.set_visibility(&self.queue_url, receipt, visibility, "extending visibility")
            .await
    }

    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_receipt_handle_is_invalid()) =>
            {
                Err(StoreError::StaleReceipt {
                    receipt: receipt.to_owned(),
                })
            }
            Err(e) => Err(aws_error(
                BACKEND,
                format!("deleting from {}", self.queue_url),
                e,
            )),
        }
    }

    async fn requeue(
        &self,
        delivery: &Delivery,
        body: &str,
        delay: Duration,
    ) -> Result<(), StoreError> {
        // A fresh copy starts with a receive count of zero; then the old one goes.
        self.send_to(&self.queue_url, body, delay, None).await?;
        self.delete(&delivery.receipt).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), StoreError> {
        self.send_to(
            &self.dead_letter_queue_url,
            &delivery.body,
            Duration::ZERO,
            Some(reason),
        )
        .await?;
        self.delete(&delivery.receipt).await
    }

    async fn redrive(&self, select: &RedriveSelect<'_>) -> Result<u64, StoreError> {
        // Messages left where they are stay invisible during the pass, so it sees each
        // message once; at its end they are made visible again.
        const PASS: Duration = Duration::from_secs(300);
        let dlq = &self.dead_letter_queue_url;
        let mut moved = 0;
        let mut empty = 0;
        let mut left = Vec::new();
        while empty < 2 {
            let out = self
                .client
                .receive_message()
                .queue_url(dlq)
                .max_number_of_messages(10)
                // Long polling (1 s): a short poll samples servers and may answer empty.
                .wait_time_seconds(1)
                .visibility_timeout(secs(PASS, MAX_VISIBILITY))
                .send()
                .await
                .map_err(|e| aws_error(BACKEND, format!("receiving from {dlq}"), e))?;
            if out.messages().is_empty() {
                empty += 1;
                continue;
            }
            empty = 0;
            for message in out.messages() {
                let (Some(dead), Some(receipt)) = (message.body(), message.receipt_handle()) else {
                    continue;
                };
                let Some(body) = select(dead) else {
                    left.push(receipt.to_owned());
                    continue;
                };
                // Sent before it is deleted: a crash in between leaves a duplicate (which
                // the commit's condition absorbs), never a lost sample.
                self.send_to(&self.queue_url, &body, Duration::ZERO, None)
                    .await?;
                self.client
                    .delete_message()
                    .queue_url(dlq)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .map_err(|e| aws_error(BACKEND, format!("deleting from {dlq}"), e))?;
                moved += 1;
            }
        }
        for receipt in left {
            // A message whose pass window ran out is visible again already.
            match self
                .set_visibility(dlq, &receipt, Duration::ZERO, "releasing a dead message")
                .await
            {
                Ok(()) | Err(StoreError::StaleReceipt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        Ok(QueueStats {
            visible: self
                .count(
                    &self.queue_url,
                    &[QueueAttributeName::ApproximateNumberOfMessages],
                )
                .await?,
            in_flight: self
                .count(
                    &self.queue_url,
                    &[
                        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
                    ],
                )
                .await?,
            dead: self
                .count(
                    &self.dead_letter_queue_url,
                    &[QueueAttributeName::ApproximateNumberOfMessages],
                )
                .await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_ten_messages_and_256_kib_at_most() {
        let small: Vec<String> = (0..23).map(|i| i.to_string()).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 3]);
        let big: Vec<String> = (0..5).map(|_| "x".repeat(100 * 1024)).collect();
        let sizes: Vec<usize> = batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(batches(&[]).is_empty());
    }
}
