//! Amazon Bedrock's Converse API through the AWS SDK (`aws-sdk-bedrockruntime`, the
//! `bedrock` feature): credentials, region and signing from the standard chain, the
//! recorded OpenAI-format conversation translated to Converse messages and back.
//!
//! The SDK's own retries are off: calls are retried by the same policy as every other
//! provider ([`Retries`]), paced by the same rate limit, so that backoff is never counted as
//! the model's time. Throttling, unavailability, model timeouts and internal errors are
//! transient; a validation error that says the input is too long is `context_exceeded`.

use crate::guards::RateLimit;
use crate::http::{Attempt, Reply, Retries, assistant, finish_reason, push_turn, tool_input};
use async_trait::async_trait;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::types::{
    AutoToolChoice, CachePointBlock, CachePointType, ContentBlock, ConversationRole,
    ConverseOutput as Output, InferenceConfiguration, Message, ReasoningContentBlock,
    SystemContentBlock, Tool, ToolChoice, ToolConfiguration, ToolInputSchema, ToolResultBlock,
    ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::{Document, Number};
use serde_json::Value;
use synthfleet_core::campaign::ModelConfig;
use synthfleet_core::ports::{ChatCompletion, ChatModel, ChatRequest, LlmError, Usage};
use synthfleet_core::trajectory::{FunctionCall, Role, ToolCall};

pub struct BedrockChat {
    /// Built at the first call (loading the AWS configuration is asynchronous).
    client: tokio::sync::OnceCell<Client>,
    name: String,
    endpoint: Option<String>,
    request_timeout: std::time::Duration,
    model: String,
    prompt_caching: bool,
    retries: Retries,
}

impl BedrockChat {
    /// A client of the pool entry's model in the configured region (`endpoint`, when set,
    /// overrides Bedrock's, e.g. a VPC endpoint).
    pub fn new(config: &ModelConfig, limit: Option<RateLimit>) -> BedrockChat {
        BedrockChat {
            client: tokio::sync::OnceCell::new(),
            name: config.name.clone(),
            endpoint: config.endpoint.clone(),
            request_timeout: std::time::Duration::from_secs(config.request_timeout_s),
            model: config.model_id().to_owned(),
            prompt_caching: config.caches(),
            retries: Retries::new(format!("bedrock:{}", config.model_id()), config, limit),
        }
    }

    async fn client(&self) -> Result<&Client, LlmError> {
        self.client
            .get_or_try_init(|| async {
                let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                if shared.region().is_none() {
                    return Err(LlmError::Config(format!(
                        "model `{}` runs on Bedrock, but no AWS region is set: export AWS_REGION",
                        self.name
                    )));
                }
                let mut builder = aws_sdk_bedrockruntime::config::Builder::from(&shared)
                    .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
                    .timeout_config(
                        aws_sdk_bedrockruntime::config::timeout::TimeoutConfig::builder()
                            .operation_attempt_timeout(self.request_timeout)
                            .build(),
                    );
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.endpoint_url(endpoint);
                }
                Ok(Client::from_conf(builder.build()))
            })
            .await
    }

    async fn attempt(
        &self,
        messages: &[Message],
        system: &[SystemContentBlock],
        request: &ChatRequest,
    ) -> Result<Reply, Attempt> {
        let mut inference = InferenceConfiguration::builder()
            .max_tokens(i32::try_from(request.max_tokens).unwrap_or(i32::MAX));
        if let Some(t) = request.temperature {
            inference = inference.temperature(t as f32);
        }
        let client = self.client().await.map_err(Attempt::Fail)?;
        let mut call = client
            .converse()
            .model_id(&self.model)
            .set_messages(Some(messages.to_vec()))
            .set_system((!system.is_empty()).then(|| system.to_vec()))
            .inference_config(inference.build());
        if !request.tools.is_empty() {
            call = call.tool_config(tool_config(&request.tools).map_err(Attempt::Fail)?);
        }
        match call.send().await {
            Ok(output) => reply(&output).map_err(|detail| Attempt::Retry {
                reason: detail,
                after: None,
                malformed: true,
            }),
            Err(e) => Err(classify(&self.model, e)),
        }
    }
}

fn fail(model: &str, status: u16, detail: String) -> Attempt {
    Attempt::Fail(LlmError::Rejected {
        endpoint: format!("bedrock:{model}"),
        status,
        detail,
        billed: synthfleet_core::MicroUsd::ZERO,
    })
}

/// Transient faults are retried; a too-long input is its own outcome; the rest is refused.
fn classify(model: &str, error: SdkError<ConverseError>) -> Attempt {
    let detail = DisplayErrorContext(&error).to_string();
    let retry = |reason: String| Attempt::Retry {
        reason,
        after: None,
        malformed: false,
    };
    match &error {
        SdkError::ServiceError(service) => match service.err() {
            ConverseError::ThrottlingException(_)
            | ConverseError::ServiceUnavailableException(_)
            | ConverseError::ModelNotReadyException(_)
            | ConverseError::ModelTimeoutException(_)
            | ConverseError::InternalServerException(_) => retry(detail),
            ConverseError::ValidationException(v)
                if v.message().is_some_and(|m| {
                    let m = m.to_ascii_lowercase();
                    m.contains("too long") || m.contains("context") || m.contains("too many tokens")
                }) =>
            {
                Attempt::Fail(LlmError::ContextExceeded {
                    endpoint: format!("bedrock:{model}"),
                    detail,
                    billed: synthfleet_core::MicroUsd::ZERO,
                })
            }
            _ => fail(model, service.raw().status().as_u16(), detail),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            retry(detail)
        }
        _ => fail(model, 0, detail),
    }
}

#[async_trait]
impl ChatModel for BedrockChat {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatCompletion, LlmError> {
        let (messages, system) = converse_messages(request, self.prompt_caching)?;
        self.retries
            .run(request, || self.attempt(&messages, &system, request))
            .await
    }
}

/// A JSON value as a Smithy document (what Converse carries tool inputs and schemas in).
fn to_document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or(0.0))
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(to_document).collect()),
        Value::Object(map) => Document::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_document(v)))
                .collect(),
        ),
    }
}

fn from_document(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => Value::from(*f),
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(from_document).collect()),
        Document::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), from_document(v)))
                .collect(),
        ),
    }
}

fn build_error(e: impl std::fmt::Display) -> LlmError {
    LlmError::Config(format!("building a Bedrock request: {e}"))
}

fn tool_config(tools: &[Value]) -> Result<ToolConfiguration, LlmError> {
    let mut config = ToolConfiguration::builder();
    for tool in tools {
        let function = &tool["function"];
        let mut spec = ToolSpecification::builder()
            .name(function["name"].as_str().unwrap_or_default())
            .input_schema(ToolInputSchema::Json(to_document(
                function.get("parameters").unwrap_or(&Value::Null),
            )));
        if let Some(description) = function["description"].as_str() {
            spec = spec.description(description);
        }
        config = config.tools(Tool::ToolSpec(spec.build().map_err(build_error)?));
    }
    config
        .tool_choice(ToolChoice::Auto(AutoToolChoice::builder().build()))
        .build()
        .map_err(build_error)
}

/// The conversation as Converse messages (turns of one role merged, tool results in user
/// turns) and the system blocks; with caching, cache points after the system prompt and
/// the newest turn.
fn converse_messages(
    request: &ChatRequest,
    caching: bool,
) -> Result<(Vec<Message>, Vec<SystemContentBlock>), LlmError> {
    let mut system = Vec::new();
    let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
    for message in &request.messages {
        let text = message
            .content
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(|t| ContentBlock::Text(t.to_owned()));
        match message.role {
            Role::System => system.extend(
                message
                    .content
                    .as_deref()
                    .map(|t| SystemContentBlock::Text(t.to_owned())),
            ),
            Role::User => push_turn(
                &mut turns,
                ConversationRole::User,
                text.into_iter().collect(),
            ),
            Role::Assistant => {
                let mut blocks: Vec<ContentBlock> = text.into_iter().collect();
                for call in &message.tool_calls {
                    blocks.push(ContentBlock::ToolUse(
                        ToolUseBlock::builder()
                            .tool_use_id(&call.id)
                            .name(&call.function.name)
                            .input(to_document(&tool_input(call)))
                            .build()
                            .map_err(build_error)?,
                    ));
                }
                push_turn(&mut turns, ConversationRole::Assistant, blocks);
            }
            Role::Tool => push_turn(
                &mut turns,
                ConversationRole::User,
                vec![ContentBlock::ToolResult(
                    ToolResultBlock::builder()
                        .tool_use_id(message.tool_call_id.clone().unwrap_or_default())
                        .content(ToolResultContentBlock::Text(
                            message.content.clone().unwrap_or_default(),
                        ))
                        .build()
                        .map_err(build_error)?,
                )],
            ),
        }
    }
    if caching {
        let point = || {
            CachePointBlock::builder()
                .r#type(CachePointType::Default)
                .build()
                .map_err(build_error)
        };
        if !system.is_empty() {
            system.push(SystemContentBlock::CachePoint(point()?));
        }
        if let Some((_, blocks)) = turns.last_mut() {
            blocks.push(ContentBlock::CachePoint(point()?));
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| {
            Message::builder()
                .role(role)
                .set_content(Some(content))
                .build()
                .map_err(build_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((messages, system))
}

/// The reply of a Converse call, in the recorded format.
fn reply(output: &ConverseOutput) -> Result<Reply, String> {
    let Some(Output::Message(message)) = output.output() else {
        return Err("the Converse reply has no message".into());
    };
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in message.content() {
        match block {
            ContentBlock::Text(text) => content.push_str(text),
            ContentBlock::ToolUse(tool) => tool_calls.push(ToolCall {
                id: tool.tool_use_id().to_owned(),
                kind: "function".into(),
                function: FunctionCall {
                    name: tool.name().to_owned(),
                    arguments: from_document(tool.input()).to_string(),
                },
            }),
            ContentBlock::ReasoningContent(ReasoningContentBlock::ReasoningText(text)) => {
                reasoning.push_str(text.text());
            }
            _ => {}
        }
    }
    let usage = output
        .usage()
        .map(|u| {
            let count = |n: i32| u64::try_from(n).unwrap_or(0);
            Usage {
                input_tokens: count(u.input_tokens()),
                output_tokens: count(u.output_tokens()),
                cache_read_tokens: u.cache_read_input_tokens().map_or(0, count),
                cache_write_tokens: u.cache_write_input_tokens().map_or(0, count),
                estimated: false,
            }
        })
        .unwrap_or_default();
    Ok(Reply {
        message: assistant(content, reasoning, tool_calls),
        usage,
        finish_reason: Some(finish_reason(output.stop_reason().as_str())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_json() {
        let value = serde_json::json!({"command": "ls -la", "n": 3, "neg": -2, "f": 1.5, "list": [true, null]});
        assert_eq!(from_document(&to_document(&value)), value);
    }
}
