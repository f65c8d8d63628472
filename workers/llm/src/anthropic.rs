//! Anthropic's Messages API as a wire format of [`HttpChat`](crate::http::HttpChat): the
//! recorded OpenAI-format conversation translated on the way out, the reply translated
//! back. The record format does not change.
//!
//! * System messages become the top-level `system`; tool results become `tool_result`
//!   blocks of a user turn; consecutive turns of one role are merged (the API wants them
//!   alternating).
//! * Tool calls are `tool_use` blocks (their arguments parsed back into JSON); tools are
//!   `{name, description, input_schema}`.
//! * Thinking blocks come back as `reasoning_content`. The API wants the thinking that led
//!   to a tool call sent back with its signature, which the record does not keep: the client
//!   remembers it by tool-call id for the conversations it serves.
//! * Prompt caching: the system prompt and the newest turn are marked
//!   `cache_control: ephemeral`, so each call of a rollout reads the conversation so far
//!   from the cache (cache reads and writes are priced apart, see `ModelConfig::cost`).

use crate::http::{Reply, Wire, assistant, finish_reason, push_turn, tool_input};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use synthfleet_core::campaign::ModelConfig;
use synthfleet_core::ports::{ChatRequest, Usage};
use synthfleet_core::trajectory::{ChatMessage, FunctionCall, Role, ToolCall};

/// The API version synthfleet speaks (the `anthropic-version` header).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
pub const DEFAULT_ENDPOINT: &str = "https://api.anthropic.com/v1";
/// Thinking blocks remembered for tool calls; beyond this the oldest are forgotten (a
/// conversation's last tool call is its newest, so a running rollout keeps its own).
const REMEMBERED_THINKING: usize = 4096;

/// Thinking blocks by the first tool-call id of their reply, oldest first.
#[derive(Default)]
struct Remembered {
    blocks: HashMap<String, Vec<Value>>,
    order: VecDeque<String>,
}

pub struct AnthropicWire {
    model: String,
    prompt_caching: bool,
    extra_body: serde_json::Map<String, Value>,
    /// First tool-call id of a reply → the thinking blocks (with signatures) before it.
    thinking: Mutex<Remembered>,
}

impl AnthropicWire {
    pub fn new(config: &ModelConfig) -> AnthropicWire {
        AnthropicWire {
            model: config.model_id().to_owned(),
            prompt_caching: config.caches(),
            extra_body: config.extra_body.clone(),
            thinking: Mutex::new(Remembered::default()),
        }
    }

    fn remembered(&self, message: &ChatMessage) -> Vec<Value> {
        let Some(first) = message.tool_calls.first() else {
            return Vec::new();
        };
        self.thinking
            .lock()
            .map(|t| t.blocks.get(&first.id).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn remember(&self, tool_call_id: &str, blocks: Vec<Value>) {
        if let Ok(mut thinking) = self.thinking.lock() {
            while thinking.order.len() >= REMEMBERED_THINKING {
                if let Some(oldest) = thinking.order.pop_front() {
                    thinking.blocks.remove(&oldest);
                }
            }
            thinking.order.push_back(tool_call_id.to_owned());
            thinking.blocks.insert(tool_call_id.to_owned(), blocks);
        }
    }
}

fn text_block(text: Option<&str>) -> Option<Value> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| json!({ "type": "text", "text": t }))
}

/// OpenAI's `{"type": "function", "function": {name, description, parameters}}` as an
/// Anthropic tool.
fn tool(openai: &Value) -> Value {
    let function = &openai["function"];
    let mut tool = json!({
        "name": function["name"],
        "input_schema": function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
    });
    if let Some(description) = function.get("description") {
        tool["description"] = description.clone();
    }
    tool
}

fn mark_cached(block: Option<&mut Value>) {
    if let Some(block) = block {
        block["cache_control"] = json!({ "type": "ephemeral" });
    }
}

impl Wire for AnthropicWire {
    fn path(&self) -> &'static str {
        "/messages"
    }

    fn authorize(
        &self,
        call: reqwest::RequestBuilder,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let call = call.header("anthropic-version", ANTHROPIC_VERSION);
        match key {
            Some(key) => call.header("x-api-key", key),
            None => call,
        }
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let mut system = Vec::new();
        let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
        for message in &request.messages {
            let text = text_block(message.content.as_deref());
            match message.role {
                Role::System => system.extend(text),
                Role::User => push_turn(&mut turns, "user", text.into_iter().collect()),
                Role::Assistant => {
                    let mut blocks = self.remembered(message);
                    blocks.extend(text);
                    blocks.extend(message.tool_calls.iter().map(|call| {
                        json!({ "type": "tool_use", "id": call.id, "name": call.function.name, "input": tool_input(call) })
                    }));
                    push_turn(&mut turns, "assistant", blocks);
                }
                Role::Tool => push_turn(
                    &mut turns,
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                        "content": message.content.clone().unwrap_or_default(),
                    })],
                ),
            }
        }
        if self.prompt_caching {
            mark_cached(system.last_mut());
            mark_cached(turns.last_mut().and_then(|(_, blocks)| blocks.last_mut()));
        }
        let messages: Vec<Value> = turns
            .into_iter()
            .map(|(role, content)| json!({ "role": role, "content": content }))
            .collect();
        let mut body = Value::Object(self.extra_body.clone());
        body["model"] = json!(self.model);
        body["max_tokens"] = json!(request.max_tokens);
        body["messages"] = Value::Array(messages);
        if !system.is_empty() {
            body["system"] = Value::Array(system);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if !request.tools.is_empty() {
            body["tools"] = Value::Array(request.tools.iter().map(tool).collect());
            body["tool_choice"] = json!({ "type": "auto" });
        }
        body
    }

    fn parse(&self, text: &str) -> Result<Reply, String> {
        let wire: WireResponse = serde_json::from_str(text).map_err(|e| {
            format!(
                "not an Anthropic message ({e}); body starts with {:?}",
                crate::http::snippet(text)
            )
        })?;
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut thinking = Vec::new();
        let mut tool_calls = Vec::new();
        for block in wire.content {
            match block["type"].as_str() {
                Some("text") => content.push_str(block["text"].as_str().unwrap_or_default()),
                Some("thinking") => {
                    reasoning.push_str(block["thinking"].as_str().unwrap_or_default());
                    thinking.push(block);
                }
                Some("redacted_thinking") => thinking.push(block),
                Some("tool_use") => tool_calls.push(ToolCall {
                    id: block["id"].as_str().unwrap_or_default().to_owned(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: block["name"].as_str().unwrap_or_default().to_owned(),
                        arguments: block["input"].to_string(),
                    },
                }),
                _ => {}
            }
        }
        if let Some(first) = tool_calls.first()
            && !thinking.is_empty()
        {
            self.remember(&first.id, thinking);
        }
        let usage = wire.usage.ok_or("the message has no usage")?;
        Ok(Reply {
            message: assistant(content, reasoning, tool_calls),
            usage: Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cache_read_tokens: usage.cache_read_input_tokens.unwrap_or(0),
                cache_write_tokens: usage.cache_creation_input_tokens.unwrap_or(0),
                estimated: false,
            },
            finish_reason: wire.stop_reason.as_deref().map(finish_reason),
        })
    }
}

#[derive(Deserialize)]
struct WireResponse {
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> AnthropicWire {
        let config: ModelConfig = serde_json::from_value(json!({
            "name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5",
        }))
        .expect("config");
        AnthropicWire::new(&config)
    }

    fn call(id: &str, command: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "bash".into(),
                arguments: json!({ "command": command }).to_string(),
            },
        }
    }

    #[test]
    fn the_conversation_is_translated_turn_by_turn() {
        let wire = wire();
        let mut assistant = ChatMessage::text(Role::Assistant, "let me look");
        assistant.tool_calls = vec![call("t1", "ls"), call("t2", "pwd")];
        let tool = |id: &str, out: &str| ChatMessage {
            role: Role::Tool,
            content: Some(out.into()),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: Some(id.into()),
        };
        let body = wire.body(&ChatRequest {
            messages: vec![
                ChatMessage::text(Role::System, "you fix bugs"),
                ChatMessage::text(Role::User, "fix it"),
                assistant,
                tool("t1", "a.py"),
                tool("t2", "/testbed"),
                ChatMessage::text(Role::User, "go on"),
            ],
            tools: vec![json!({"type": "function", "function": {"name": "bash", "description": "run", "parameters": {"type": "object"}}})],
            max_tokens: 100,
            temperature: None,
        });
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["system"][0]["text"], "you fix bugs");
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        let messages = body["messages"].as_array().expect("messages");
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().expect("role"))
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"], "alternating turns");
        assert_eq!(messages[1]["content"][1]["type"], "tool_use");
        assert_eq!(messages[1]["content"][1]["input"]["command"], "ls");
        let results = messages[2]["content"].as_array().expect("blocks");
        assert_eq!(results[0]["type"], "tool_result");
        assert_eq!(results[1]["tool_use_id"], "t2");
        assert_eq!(results[2]["text"], "go on");
        assert_eq!(
            results[2]["cache_control"]["type"], "ephemeral",
            "the newest turn is cached"
        );
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(body["tools"][0]["name"], "bash");
    }

    #[test]
    fn replies_keep_thinking_and_usage_and_send_the_thinking_back() {
        let wire = wire();
        let reply = wire
            .parse(
                r#"{"id":"m","type":"message","role":"assistant","stop_reason":"tool_use",
                "content":[{"type":"thinking","thinking":"the file","signature":"sig"},
                           {"type":"text","text":"looking"},
                           {"type":"tool_use","id":"tu1","name":"bash","input":{"command":"cat a.py"}}],
                "usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":900}}"#,
            )
            .expect("valid");
        assert_eq!(reply.message.reasoning_content.as_deref(), Some("the file"));
        assert_eq!(
            reply.message.tool_calls[0].function.arguments,
            r#"{"command":"cat a.py"}"#
        );
        assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            (
                reply.usage.input_tokens,
                reply.usage.cache_write_tokens,
                reply.usage.cache_read_tokens
            ),
            (10, 100, 900)
        );
        let body = wire.body(&ChatRequest {
            messages: vec![ChatMessage::text(Role::User, "fix"), reply.message],
            tools: Vec::new(),
            max_tokens: 10,
            temperature: None,
        });
        let blocks = body["messages"][1]["content"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "thinking");
        assert_eq!(blocks[0]["signature"], "sig");
        assert!(wire.parse(r#"{"content":[]}"#).is_err(), "no usage");
        assert!(
            wire.parse("<html>")
                .expect_err("html")
                .contains("not an Anthropic message")
        );
    }
}
