//! OpenAI's `/chat/completions` as a wire format of [`HttpChat`]: OpenAI, vLLM, llama.cpp,
//! Ollama and any other server speaking it. The recorded messages are its own format.

use crate::http::{HttpChat, Reply, Wire, snippet};
use serde::Deserialize;
use serde_json::{Value, json};
use synthfleet_core::campaign::ModelConfig;
use synthfleet_core::ports::{ChatRequest, Usage};
use synthfleet_core::trajectory::{ChatMessage, Role, ToolCall};

/// A client of an OpenAI-compatible server.
pub type OpenAiChat = HttpChat<OpenAiWire>;

pub struct OpenAiWire {
    model: String,
    max_tokens_field: &'static str,
    extra_body: serde_json::Map<String, Value>,
}

impl OpenAiWire {
    pub fn new(config: &ModelConfig) -> OpenAiWire {
        OpenAiWire {
            model: config.model_id().to_owned(),
            max_tokens_field: config.max_tokens_field.as_str(),
            extra_body: config.extra_body.clone(),
        }
    }
}

impl Wire for OpenAiWire {
    fn path(&self) -> &'static str {
        "/chat/completions"
    }

    fn authorize(
        &self,
        call: reqwest::RequestBuilder,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match key {
            Some(key) => call.bearer_auth(key),
            None => call,
        }
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let mut body = Value::Object(self.extra_body.clone());
        body["model"] = json!(self.model);
        body["messages"] = json!(request.messages);
        body[self.max_tokens_field] = json!(request.max_tokens);
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if !request.tools.is_empty() {
            body["tools"] = Value::Array(request.tools.clone());
            body["tool_choice"] = json!("auto");
        }
        body
    }

    fn parse(&self, text: &str) -> Result<Reply, String> {
        parse_completion(text)
    }
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default, alias = "reasoning")]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
}

/// Parses a chat-completion body; the error says what is missing.
fn parse_completion(text: &str) -> Result<Reply, String> {
    let wire: WireResponse = serde_json::from_str(text).map_err(|e| {
        format!(
            "not a chat completion ({e}); body starts with {:?}",
            snippet(text)
        )
    })?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| "the completion has no choices".to_owned())?;
    let message = ChatMessage {
        role: Role::Assistant,
        content: choice.message.content,
        reasoning_content: choice.message.reasoning_content.filter(|r| !r.is_empty()),
        tool_calls: choice.message.tool_calls.unwrap_or_default(),
        tool_call_id: None,
    };
    // `prompt_tokens` counts the cached ones too; they are priced apart.
    let usage = wire.usage.map_or_else(Usage::default, |u| {
        let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
        Usage {
            input_tokens: u.prompt_tokens.saturating_sub(cached),
            output_tokens: u.completion_tokens,
            cache_read_tokens: cached,
            cache_write_tokens: 0,
            estimated: false,
        }
    });
    Ok(Reply {
        message,
        usage,
        finish_reason: choice.finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_follows_the_model_config() {
        let config: ModelConfig = serde_json::from_value(serde_json::json!({
            "name": "o", "provider": "openai", "endpoint": "http://127.0.0.1:9/v1",
            "max_tokens_field": "max_completion_tokens", "temperature": 0.2,
            "extra_body": {"reasoning_effort": "low", "model": "ignored"}
        }))
        .expect("config");
        let client =
            OpenAiChat::new(&config, None, OpenAiWire::new(&config), None).expect("client");
        let body = client.wire().body(&ChatRequest {
            messages: vec![ChatMessage::text(Role::User, "hi")],
            tools: vec![json!({"type": "function"})],
            max_tokens: 77,
            temperature: Some(0.2),
        });
        assert_eq!(body["max_completion_tokens"], 77);
        assert!(body.get("max_tokens").is_none());
        assert_eq!(body["reasoning_effort"], "low");
        assert_eq!(body["model"], "o", "extra fields never override the model");
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(body["messages"][0]["content"], "hi");
    }

    #[test]
    fn parses_tool_calls_reasoning_and_usage() {
        let body = r#"{"choices":[{"message":{"role":"assistant","content":null,"reasoning":"think",
            "tool_calls":[{"id":"c1","type":"function","function":{"name":"bash","arguments":"{\"command\":\"ls\"}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":12,"completion_tokens":5,
            "prompt_tokens_details":{"cached_tokens":8}}}"#;
        let c = parse_completion(body).expect("valid");
        assert_eq!(c.message.tool_calls[0].function.name, "bash");
        assert_eq!(c.message.reasoning_content.as_deref(), Some("think"));
        assert_eq!(
            (
                c.usage.input_tokens,
                c.usage.cache_read_tokens,
                c.usage.output_tokens
            ),
            (4, 8, 5),
            "cached prompt tokens are counted apart"
        );
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        assert!(
            parse_completion("{\"choices\":[]}")
                .expect_err("empty")
                .contains("no choices")
        );
        assert!(
            parse_completion("<html>")
                .expect_err("html")
                .contains("not a chat completion")
        );
    }
}
