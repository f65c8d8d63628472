//! The keyless `replay` provider: plays a task's scripted actions, one per call.

use async_trait::async_trait;
use serde_json::json;
use synthfleet_core::ports::{ChatCompletion, ChatModel, ChatRequest, LlmError};
use synthfleet_core::trajectory::{ChatMessage, FunctionCall, Role, ToolCall};

/// Plays `actions` in order: the n-th call (counted from the assistant turns already in
/// the conversation) answers with the n-th action, then `submit` once they run out. It
/// answers in the protocol of the request: a tool call when tools are offered, else one
/// fenced bash block.
#[derive(Debug, Clone)]
pub struct ReplayChat {
    actions: Vec<String>,
}

impl ReplayChat {
    pub fn new(actions: Vec<String>) -> ReplayChat {
        ReplayChat { actions }
    }
}

#[async_trait]
impl ChatModel for ReplayChat {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatCompletion, LlmError> {
        let turn = request.turn();
        let action = self
            .actions
            .get(turn)
            .map(String::as_str)
            .unwrap_or("submit");
        let thought = format!("Replaying scripted step {}.", turn + 1);
        let message = if request.tools.is_empty() {
            ChatMessage::text(
                Role::Assistant,
                format!("{thought}\n\n```bash\n{action}\n```"),
            )
        } else {
            let (name, arguments) = if action.trim() == "submit" {
                ("submit", json!({}))
            } else {
                ("bash", json!({ "command": action }))
            };
            ChatMessage {
                tool_calls: vec![ToolCall {
                    id: format!("call_{turn}"),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: name.into(),
                        arguments: arguments.to_string(),
                    },
                }],
                ..ChatMessage::text(Role::Assistant, thought)
            }
        };
        Ok(ChatCompletion {
            usage: crate::estimate_usage(request, &message),
            message,
            retries: 0,
            finish_reason: Some("stop".into()),
            generation: std::time::Duration::ZERO,
        })
    }
}
