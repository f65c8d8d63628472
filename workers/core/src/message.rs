//! The queue message: one (campaign, instance, sample) to roll out.

use crate::task::Task;
use serde::{Deserialize, Serialize};

pub const MESSAGE_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskMessage {
    pub schema_version: u32,
    pub campaign: String,
    pub sample_index: u32,
    pub task: Task,
    /// Attempts of this sample that failed on an infrastructure fault so far. Carried in
    /// the message (each retry is a fresh copy), so a delivery to a worker that crashed,
    /// was killed or was stopped is never counted as an attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// Why the sample was dead-lettered before, once per `synthfleet redrive` that gave it
    /// fresh attempts (oldest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is not a valid task message: {0}")]
    Invalid(String),
    #[error(
        "message has schema_version {0}; this worker reads version {MESSAGE_SCHEMA_VERSION}: upgrade the worker or re-submit the campaign"
    )]
    UnknownVersion(u64),
}

impl TaskMessage {
    pub fn new(campaign: &str, task: &Task, sample_index: u32) -> TaskMessage {
        TaskMessage {
            schema_version: MESSAGE_SCHEMA_VERSION,
            campaign: campaign.to_owned(),
            sample_index,
            task: task.clone(),
            failures: 0,
            history: Vec::new(),
        }
    }

    /// The attempt this delivery is: one more than the failures so far.
    pub fn attempt(&self) -> u32 {
        self.failures + 1
    }

    /// The message of the next attempt, after one more failure.
    pub fn after_failure(&self) -> TaskMessage {
        TaskMessage {
            failures: self.failures + 1,
            ..self.clone()
        }
    }

    /// The message moved back from the dead-letter queue: fresh attempts, and why it died
    /// kept in its history.
    pub fn redriven(&self, error: &str) -> TaskMessage {
        let mut history = self.history.clone();
        history.push(error.to_owned());
        TaskMessage {
            failures: 0,
            history,
            ..self.clone()
        }
    }

    pub fn parse(body: &str) -> Result<TaskMessage, MessageError> {
        let value: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| MessageError::Invalid(format!("not JSON ({e})")))?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(MESSAGE_SCHEMA_VERSION) => {}
            Some(v) => return Err(MessageError::UnknownVersion(v)),
            None => {
                return Err(MessageError::Invalid(
                    "missing field `schema_version`".into(),
                ));
            }
        }
        serde_path_to_error::deserialize(value)
            .map_err(|e| MessageError::Invalid(format!("at `{}`: {}", e.path(), e.inner())))
    }

    pub fn to_body(&self) -> String {
        // A struct of strings, numbers and JSON values always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Identity of the result this message produces: at most one is ever committed.
    pub fn result_key(&self) -> ResultKey {
        ResultKey {
            campaign: self.campaign.clone(),
            instance_id: self.task.instance_id.clone(),
            sample_index: self.sample_index,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResultKey {
    pub campaign: String,
    pub instance_id: String,
    pub sample_index: u32,
}

impl std::fmt::Display for ResultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}#{}",
            self.campaign, self.instance_id, self.sample_index
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_travel_in_the_message_and_old_messages_read() {
        let task = crate::task::parse_tasks(
            std::path::Path::new("t.jsonl"),
            r#"{"instance_id":"t1","image":"img","problem_statement":"p"}"#,
        )
        .expect("task")
        .remove(0);
        let first = TaskMessage::new("c", &task, 0);
        assert!(
            !first.to_body().contains("failures"),
            "a first message is a version-1 message"
        );
        assert_eq!(first.attempt(), 1);
        let retry = TaskMessage::parse(&first.after_failure().to_body()).expect("parse");
        assert_eq!((retry.failures, retry.attempt()), (1, 2));
        assert_eq!(retry.result_key(), first.result_key());
    }

    #[test]
    fn rejects_bad_messages_clearly() {
        assert!(
            matches!(TaskMessage::parse("nope"), Err(MessageError::Invalid(m)) if m.contains("not JSON"))
        );
        assert!(matches!(
            TaskMessage::parse(r#"{"schema_version":9}"#),
            Err(MessageError::UnknownVersion(9))
        ));
        let err = TaskMessage::parse(r#"{"schema_version":1,"campaign":"c","sample_index":0}"#)
            .expect_err("missing task");
        assert!(err.to_string().contains("task"), "{err}");
    }
}
