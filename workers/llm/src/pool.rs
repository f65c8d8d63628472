//! The campaign's model pool: one client per model, fallbacks, worst-case cost.

use crate::{
    AnthropicChat, AnthropicWire, ModelGuards, OpenAiChat, OpenAiWire, ReplayChat,
    estimate_request_tokens,
};
use std::collections::HashMap;
use std::sync::Arc;
use synthfleet_core::campaign::{ModelConfig, ProviderKind};
use synthfleet_core::ports::{ChatCompletion, ChatModel, ChatRequest, LlmError};
use synthfleet_core::{MicroUsd, error_chain};
use tracing::warn;

pub struct ModelPool {
    models: Vec<ModelConfig>,
    /// Shared HTTP clients (and their rate limiters) of the networked models.
    clients: HashMap<String, Arc<dyn ChatModel>>,
    /// Rate limits and circuit breakers, shared with the process's other pools.
    guards: ModelGuards,
}

/// A completion and the pool entry that served it.
pub struct PoolCompletion {
    pub completion: ChatCompletion,
    pub served_by: ModelConfig,
    /// Why earlier entries of the chain were skipped.
    pub fallback_errors: Vec<String>,
    /// What those earlier entries billed anyway (answered but broken attempts).
    pub fallback_billed: MicroUsd,
}

impl ModelPool {
    /// Builds clients for every model, paced by the process's `guards`; fails if a model's
    /// key variable is unset.
    pub fn new(models: &[ModelConfig], guards: &ModelGuards) -> Result<ModelPool, LlmError> {
        let mut clients: HashMap<String, Arc<dyn ChatModel>> = HashMap::new();
        for model in models {
            let limit = guards.rate_limit(model);
            let client: Arc<dyn ChatModel> = match model.provider {
                ProviderKind::Openai => {
                    Arc::new(OpenAiChat::new(model, None, OpenAiWire::new(model), limit)?)
                }
                ProviderKind::Anthropic => Arc::new(AnthropicChat::new(
                    model,
                    Some(crate::anthropic::DEFAULT_ENDPOINT),
                    AnthropicWire::new(model),
                    limit,
                )?),
                #[cfg(feature = "bedrock")]
                ProviderKind::Bedrock => Arc::new(crate::bedrock::BedrockChat::new(model, limit)),
                #[cfg(not(feature = "bedrock"))]
                ProviderKind::Bedrock => {
                    return Err(LlmError::Config(format!(
                        "model `{}` runs on Bedrock, but this binary was built without the `bedrock` feature",
                        model.name
                    )));
                }
                ProviderKind::Replay => continue,
            };
            clients.insert(model.name.clone(), client);
        }
        Ok(ModelPool {
            models: models.to_vec(),
            clients,
            guards: guards.clone(),
        })
    }

    /// Replaces the client of a model (tests put a scripted model in its place).
    pub fn set_client(&mut self, name: &str, client: Arc<dyn ChatModel>) {
        self.clients.insert(name.to_owned(), client);
    }

    fn config(&self, name: &str) -> Result<&ModelConfig, LlmError> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| LlmError::Config(format!("no model named `{name}` in the pool")))
    }

    /// The primary model followed by its fallbacks.
    pub fn chain(&self, primary: &str) -> Result<Vec<&ModelConfig>, LlmError> {
        let first = self.config(primary)?;
        let mut chain = vec![first];
        for name in &first.fallbacks {
            chain.push(self.config(name)?);
        }
        Ok(chain)
    }

    /// The most a call could cost anywhere in the chain: prompt estimate plus `max_tokens`.
    pub fn worst_case_cost(
        &self,
        primary: &str,
        request: &ChatRequest,
    ) -> Result<MicroUsd, LlmError> {
        let input = estimate_request_tokens(request);
        Ok(self
            .chain(primary)?
            .into_iter()
            .map(|m| m.worst_case_cost(input))
            .max()
            .unwrap_or(MicroUsd::ZERO))
    }

    /// Runs the request on the primary model, falling back in order while a model is
    /// unavailable. `replay` holds the task's scripted actions for replay models.
    pub async fn complete(
        &self,
        primary: &str,
        replay: &[String],
        request: &ChatRequest,
    ) -> Result<PoolCompletion, LlmError> {
        let chain = self.chain(primary)?;
        let mut fallback_errors = Vec::new();
        let mut fallback_billed = MicroUsd::ZERO;
        let mut last_error = None;
        for model in chain {
            if self.guards.open_until(&model.name).is_some() {
                let e = LlmError::Unavailable {
                    billed: MicroUsd::ZERO,
                    endpoint: model.name.clone(),
                    attempts: 0,
                    last: "its circuit breaker is open (unavailable on several calls in a row); skipped for now".into(),
                };
                fallback_errors.push(format!("{}: {e}", model.name));
                last_error = Some(e);
                continue;
            }
            let mut request = request.clone();
            request.max_tokens = model.max_tokens;
            // A request's own temperature (an experiment's arm) wins over the model's.
            request.temperature = request.temperature.or(model.temperature);
            let result = match model.provider {
                ProviderKind::Replay => ReplayChat::new(replay.to_vec()).complete(&request).await,
                ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Bedrock => {
                    match self.clients.get(&model.name) {
                        Some(client) => client.complete(&request).await,
                        None => Err(LlmError::Config(format!(
                            "no client for model `{}`",
                            model.name
                        ))),
                    }
                }
            };
            match result {
                Ok(completion) => {
                    self.guards.record_success(&model.name);
                    return Ok(PoolCompletion {
                        completion,
                        served_by: model.clone(),
                        fallback_errors,
                        fallback_billed,
                    });
                }
                Err(e @ LlmError::Unavailable { .. }) => {
                    if self.guards.record_unavailable(&model.name) {
                        warn!(model = %model.name, "circuit breaker opened: the model is skipped for a while, its calls go to its fallbacks");
                    }
                    warn!(model = %model.name, error = %error_chain(&e), "model unavailable; trying the next in its fallback chain");
                    fallback_errors.push(format!("{}: {e}", model.name));
                    fallback_billed = fallback_billed.saturating_add(e.billed());
                    last_error = Some(e);
                }
                // What earlier models of the chain billed goes with the error.
                Err(e) => return Err(e.with_billed(fallback_billed)),
            }
        }
        // The whole chain's billing goes with the last error (whose own is counted in it).
        Err(match last_error {
            Some(e) => {
                let own = e.billed();
                e.with_billed(fallback_billed.saturating_sub(own))
            }
            None => LlmError::Config(format!("model `{primary}` has an empty chain")),
        })
    }
}
