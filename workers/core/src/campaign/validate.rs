//! What serde cannot check in a campaign file: names, limits and prices; that fallbacks,
//! routes and the judge name models of the pool; that a rollout fits a queue lease. Each
//! error names the offending field and says what is allowed.

use super::MAX_LEASE_S;
use super::config::CampaignConfig;
use super::models::{MaxTokensField, ModelConfig, ProviderKind};
use super::routes::DEFAULT_ROUTE;
use std::collections::BTreeSet;

/// The offending field, and why.
type Invalid = (String, String);

/// An error on `field`, with a fixed message.
fn err(field: &str, message: &str) -> Result<(), Invalid> {
    Err((field.to_owned(), message.to_owned()))
}

/// Names used in storage keys: campaign names and instance ids.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl CampaignConfig {
    /// Checks everything serde cannot: returns the offending field and why.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        self.validate_basics()?;
        let names: BTreeSet<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        self.validate_models(&names)?;
        self.validate_routes(&names)?;
        self.validate_variants(&names)?;
        self.validate_sampling()
            .map_err(|message| ("sampling".to_owned(), message))?;
        self.validate_scaffold()?;
        self.validate_sandbox()?;
        self.validate_quality(&names)
    }

    /// The name, the task sources, the samples per task and the budget.
    fn validate_basics(&self) -> Result<(), Invalid> {
        if !is_valid_name(&self.name) {
            return err(
                "name",
                "must be 1-128 ASCII letters, digits, - _ or . (it becomes part of storage keys)",
            );
        }
        if self.tasks.is_empty() {
            return err("tasks", "must list at least one task source");
        }
        if self.samples_per_task == 0 {
            return err("samples_per_task", "must be at least 1");
        }
        if !self.budget_usd.is_finite() || self.budget_usd < 0.0 {
            return err("budget_usd", "must be a non-negative number of US dollars");
        }
        Ok(())
    }

    /// The pool: at least one model, unique names, some weight, and each entry.
    fn validate_models(&self, names: &BTreeSet<&str>) -> Result<(), Invalid> {
        if self.models.is_empty() {
            return err("models", "must list at least one model ([[models]] tables)");
        }
        if names.len() != self.models.len() {
            return err("models", "model names must be unique");
        }
        if self.models.iter().all(|m| m.weight == 0) {
            return err("models.weight", "at least one model needs a weight above 0");
        }
        for (i, m) in self.models.iter().enumerate() {
            check_model(i, m, names)?;
        }
        Ok(())
    }

    /// Routes: unique names, and models (or a tier) of the pool with some weight.
    fn validate_routes(&self, names: &BTreeSet<&str>) -> Result<(), Invalid> {
        let mut route_names = BTreeSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let field = |f: &str| format!("routes[{i}].{f}");
            let name = route.name.clone().unwrap_or_else(|| format!("route-{i}"));
            if name == DEFAULT_ROUTE || !route_names.insert(name.clone()) {
                return Err((
                    field("name"),
                    format!(
                        "`{name}` is taken (route names are unique, and `{DEFAULT_ROUTE}` names tasks no route takes)"
                    ),
                ));
            }
            match (&route.tier, route.models.is_empty()) {
                (Some(_), false) | (None, true) => {
                    return Err((
                        field("models"),
                        "give either `models` (name = weight) or `tier`".into(),
                    ));
                }
                (Some(tier), true) => {
                    if !self
                        .models
                        .iter()
                        .any(|m| m.tier.as_deref() == Some(tier.as_str()) && m.weight > 0)
                    {
                        return Err((
                            field("tier"),
                            format!("no model of tier `{tier}` has a weight above 0"),
                        ));
                    }
                }
                (None, false) => {
                    if let Some(unknown) = route.models.keys().find(|n| !names.contains(n.as_str()))
                    {
                        return Err((
                            field("models"),
                            format!("`{unknown}` is not a model of this campaign"),
                        ));
                    }
                    if route.models.values().all(|w| *w == 0) {
                        return Err((field("models"), "at least one weight above 0".into()));
                    }
                }
            }
        }
        Ok(())
    }

    /// `[scaffold]`: a built-in scaffold, limits of at least 1, a rollout that fits a
    /// queue lease, room for an observation.
    fn validate_scaffold(&self) -> Result<(), Invalid> {
        let s = &self.scaffold;
        if !super::SCAFFOLD_KINDS.contains(&s.kind.as_str()) {
            return err(
                "scaffold.kind",
                "the scaffolds are \"bash\" (a shell), \"edit\" (a shell and a file editor) and \"external\" (an agent program of the image, with scaffold.command)",
            );
        }
        let external = s.kind == "external"
            || self
                .variants
                .iter()
                .any(|v| v.scaffold.as_deref() == Some("external"));
        match (external, s.command.as_deref().map(str::trim)) {
            (true, None | Some("")) => {
                return err(
                    "scaffold.command",
                    "an external scaffold runs scaffold.command, the agent's command line",
                );
            }
            (false, Some(_)) => {
                return err(
                    "scaffold.command",
                    "only an external scaffold runs a command: set scaffold.kind = \"external\"",
                );
            }
            _ => {}
        }
        if s.max_steps == 0
            || s.step_timeout_s == 0
            || s.rollout_timeout_s == 0
            || s.eval_timeout_s == 0
        {
            return err(
                "scaffold.max_steps",
                "max_steps, step_timeout_s, rollout_timeout_s and eval_timeout_s must be at least 1",
            );
        }
        if s.rollout_timeout_s
            .saturating_add(s.eval_timeout_s.saturating_mul(2))
            > MAX_LEASE_S
        {
            return err(
                "scaffold.rollout_timeout_s",
                "rollout_timeout_s plus twice eval_timeout_s (the sandbox setup and the verification) must stay within 43200 s: a queue message can be held for at most 12 hours (SQS's visibility ceiling)",
            );
        }
        if s.max_observation_chars < 100 {
            return err("scaffold.max_observation_chars", "must be at least 100");
        }
        Ok(())
    }

    /// `[sandbox]`: limits large enough to run in, a runtime's name.
    fn validate_sandbox(&self) -> Result<(), Invalid> {
        let b = &self.sandbox;
        if b.memory_mb < 32
            || !b.cpus.is_finite()
            || b.cpus <= 0.0
            || b.pids < 16
            || b.tmp_mb == 0
            || b.max_output_bytes < 1024
        {
            return err(
                "sandbox",
                "limits too small: memory_mb >= 32, cpus > 0, pids >= 16, tmp_mb >= 1, max_output_bytes >= 1024",
            );
        }
        if let Some(runtime) = &b.runtime
            && (runtime.is_empty()
                || !runtime
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return err(
                "sandbox.runtime",
                "must name a runtime registered with the Docker engine (e.g. \"runc\", \"crun\", \"runsc\")",
            );
        }
        Ok(())
    }

    /// `[quality]`: shares between 0 and 1, loops of at least 2 actions, a judge of the
    /// pool.
    fn validate_quality(&self, names: &BTreeSet<&str>) -> Result<(), Invalid> {
        let q = &self.quality;
        let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if ![
            q.max_error_ratio,
            q.max_truncated_ratio,
            q.near_duplicate_threshold,
            q.max_pattern_share,
        ]
        .into_iter()
        .all(share)
        {
            return err(
                "quality",
                "max_error_ratio, max_truncated_ratio, near_duplicate_threshold and max_pattern_share are shares between 0 and 1",
            );
        }
        if q.max_repeated_actions < 2 {
            return err("quality.max_repeated_actions", "must be at least 2");
        }
        if let Some(judge) = &q.judge
            && !names.contains(judge.model.as_str())
        {
            return err(
                "quality.judge.model",
                "must name one of the campaign's [[models]] (give it weight = 0 to keep it out of rollouts)",
            );
        }
        Ok(())
    }
}

/// One `[[models]]` entry, the `i`th; `names` are the pool's.
fn check_model(i: usize, m: &ModelConfig, names: &BTreeSet<&str>) -> Result<(), Invalid> {
    let field = |f: &str| format!("models[{i}].{f}");
    if m.name.trim().is_empty() {
        return Err((field("name"), "must not be empty".into()));
    }
    if m.provider != ProviderKind::Openai && m.max_tokens_field != MaxTokensField::MaxTokens {
        return Err((
            field("max_tokens_field"),
            format!(
                "is an OpenAI setting; provider `{}` takes `max_tokens` only",
                m.provider
            ),
        ));
    }
    if m.provider == ProviderKind::Bedrock && (m.api_key_env.is_some() || !m.extra_body.is_empty())
    {
        return Err((
            field("api_key_env"),
            "\"bedrock\" signs with AWS credentials (the standard chain: AWS_PROFILE, a role, ...); it takes no api_key_env or extra_body".into(),
        ));
    }
    if m.provider == ProviderKind::Replay
        && (m.endpoint.is_some() || m.api_key_env.is_some() || !m.extra_body.is_empty())
    {
        return Err((
            field("provider"),
            "\"replay\" plays the tasks' scripted actions: it takes no endpoint, api_key_env or extra_body".into(),
        ));
    }
    if m.provider == ProviderKind::Openai
        && m.endpoint.as_deref().is_none_or(|e| e.trim().is_empty())
    {
        return Err((
            field("endpoint"),
            "is required for provider \"openai\" (e.g. \"https://api.openai.com/v1\" or \"http://localhost:8000/v1\")".into(),
        ));
    }
    if let Some(env) = &m.api_key_env
        && (env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err((
            field("api_key_env"),
            "must be the NAME of an environment variable (letters, digits, _), never the key itself".into(),
        ));
    }
    if [m.input_price_per_mtok, m.output_price_per_mtok]
        .into_iter()
        .chain(m.cache_read_price_per_mtok)
        .chain(m.cache_write_price_per_mtok)
        .any(|p| !p.is_finite() || p < 0.0)
    {
        return Err((
            field("input_price_per_mtok"),
            "prices must be non-negative".into(),
        ));
    }
    if m.context_window
        .is_some_and(|w| w <= u64::from(m.max_tokens))
    {
        return Err((
            field("context_window"),
            "must be larger than max_tokens (the reply has to fit too)".into(),
        ));
    }
    if m.max_tokens == 0 || m.max_attempts == 0 || m.request_timeout_s == 0 {
        return Err((
            field("max_tokens"),
            "max_tokens, max_attempts and request_timeout_s must be at least 1".into(),
        ));
    }
    if let Some(t) = m.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err((field("temperature"), "must be between 0 and 2".into()));
    }
    if let Some(key) = m
        .extra_body
        .keys()
        .find(|k| ["model", "messages", "tools", "tool_choice", "stream"].contains(&k.as_str()))
    {
        return Err((field("extra_body"), format!("may not set `{key}`")));
    }
    for fallback in &m.fallbacks {
        if !names.contains(fallback.as_str()) || fallback == &m.name {
            return Err((
                field("fallbacks"),
                format!("`{fallback}` is not another model of this campaign"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::campaign::fixtures::{CAMPAIGN, parse};

    #[test]
    fn semantic_errors_name_the_field() {
        let text = CAMPAIGN.replace("fallbacks = [\"a\"]", "fallbacks = [\"zzz\"]");
        let err = parse(&text).expect_err("bad fallback");
        assert!(
            err.to_string().contains("field `models[1].fallbacks`"),
            "{err}"
        );
        let text = CAMPAIGN.replace("endpoint = \"http://127.0.0.1:1/v1\"\n", "");
        let err = parse(&text).expect_err("no endpoint");
        assert!(err.to_string().contains("models[1].endpoint"), "{err}");
    }
}
