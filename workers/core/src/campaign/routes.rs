//! Model choice by task (`[[routes]]`): the first route whose `match` holds for a task
//! picks among its models (or a tier), else the `[[models]]` weights do; the draw is
//! deterministic per sample, so a retried sample keeps its model.

use super::Campaign;
use super::models::ModelConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

impl Campaign {
    /// The pool entry a sample runs on, and the route that chose it: its variant's model
    /// ([`super::VARIANT_ROUTE`]) when its `[[variants]]` arm names one, or its variant's
    /// route (for every task) when it names one; else the first route whose
    /// match holds for the task, else the `[[models]]` weights ([`DEFAULT_ROUTE`]). Within
    /// a route the choice is weighted and deterministic, so that a retried sample keeps its
    /// model and the split follows the weights.
    pub fn model_for(&self, task: &crate::task::Task, sample_index: u32) -> (&ModelConfig, String) {
        if let Some(model) = self
            .variant_for(sample_index)
            .and_then(|v| v.model.as_deref())
            .and_then(|name| self.model(name))
        {
            return (model, super::VARIANT_ROUTE.to_owned());
        }
        let digest = Sha256::digest(
            format!("{}\0{}\0{sample_index}", self.config.name, task.instance_id).as_bytes(),
        );
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        let draw = u64::from_le_bytes(bytes);
        let arm = self.variant_for(sample_index);
        if let Some(name) = arm.and_then(|v| v.route.as_deref())
            && let Some(route) = self.config.route_named(name)
            && let Some(model) = pick(&self.route_models(route), draw)
        {
            return (model, name.to_owned());
        }
        for (i, route) in self.config.routes.iter().enumerate() {
            if !route.matches.holds_for(task) {
                continue;
            }
            let weighted = self.route_models(route);
            if let Some(model) = pick(&weighted, draw) {
                let name = route.name.clone().unwrap_or_else(|| format!("route-{i}"));
                return (model, name);
            }
        }
        let weighted: Vec<(&ModelConfig, u32)> =
            self.config.models.iter().map(|m| (m, m.weight)).collect();
        (
            pick(&weighted, draw).unwrap_or(&self.config.models[0]),
            DEFAULT_ROUTE.to_owned(),
        )
    }

    /// A route's models with their weights.
    fn route_models(&self, route: &RouteConfig) -> Vec<(&ModelConfig, u32)> {
        match &route.tier {
            Some(tier) => self
                .config
                .models
                .iter()
                .filter(|m| m.tier.as_deref() == Some(tier.as_str()))
                .map(|m| (m, m.weight))
                .collect(),
            None => route
                .models
                .iter()
                .filter_map(|(name, weight)| self.model(name).map(|m| (m, *weight)))
                .collect(),
        }
    }
}

/// The weighted choice `draw` lands on (`None` when every weight is 0).
fn pick<'a>(weighted: &[(&'a ModelConfig, u32)], draw: u64) -> Option<&'a ModelConfig> {
    let total: u64 = weighted.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut point = draw % total;
    for (model, weight) in weighted {
        if point < u64::from(*weight) {
            return Some(model);
        }
        point -= u64::from(*weight);
    }
    None
}

/// A route: which tasks (`match`), and the models they run on — named with weights, or a
/// whole tier by the models' own weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Recorded as the record's `route` (default `route-{index}`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Model name → weight.
    #[serde(default)]
    pub models: BTreeMap<String, u32>,
    /// Every model of this tier, by its own weight (instead of `models`).
    #[serde(default)]
    pub tier: Option<String>,
}

/// What a task must have for a route to take it; every field given must hold (an empty
/// match takes every task).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// The task's `difficulty` is one of these (compared as text: `"hard"`, `3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub difficulty: Vec<serde_json::Value>,
    /// Each tag has one of the values given (a value or a list).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, serde_json::Value>,
    /// The instance id starts with one of these (e.g. a repository's prefix `django__`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_prefix: Vec<String>,
}

/// A JSON value as text: strings unquoted, anything else as JSON.
fn as_text(value: &serde_json::Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Whether `value` is `wanted`, or one of them when `wanted` is a list.
fn one_of(value: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    let value = as_text(value);
    match wanted.as_array() {
        Some(list) => list.iter().any(|w| as_text(w) == value),
        None => as_text(wanted) == value,
    }
}

impl RouteMatch {
    pub fn holds_for(&self, task: &crate::task::Task) -> bool {
        let difficulty = self.difficulty.is_empty()
            || task
                .difficulty
                .as_ref()
                .is_some_and(|d| self.difficulty.iter().any(|w| as_text(w) == as_text(d)));
        let tags = self.tags.iter().all(|(tag, wanted)| {
            task.tags
                .get(tag)
                .is_some_and(|value| one_of(value, wanted))
        });
        let prefix = self.instance_prefix.is_empty()
            || self
                .instance_prefix
                .iter()
                .any(|p| task.instance_id.starts_with(p.as_str()));
        difficulty && tags && prefix
    }
}

/// The route name of tasks no `[[routes]]` entry takes.
pub const DEFAULT_ROUTE: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::fixtures::{CAMPAIGN, parse};
    use crate::task::parse_tasks;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    #[test]
    fn routes_send_tasks_to_models_by_difficulty_tags_and_tier() {
        let text = CAMPAIGN.replace(
            "fallbacks = [\"a\"]\n",
            "fallbacks = [\"a\"]\ntier = \"large\"\n\n[[routes]]\nname = \"hard\"\nmatch = { difficulty = [\"hard\", 4] }\ntier = \"large\"\n\n[[routes]]\nmatch = { tags = { repo = [\"django/django\", \"astropy/astropy\"] }, instance_prefix = [\"django__\"] }\nmodels = { a = 1, b = 1 }\n",
        );
        let config = parse(&text).expect("valid routes");
        let task = |line: &str| {
            parse_tasks(Path::new("t.jsonl"), line)
                .expect("task")
                .remove(0)
        };
        let tasks = vec![
            task(
                r#"{"instance_id":"t-hard","image":"i","problem_statement":"p","difficulty":"hard"}"#,
            ),
            task(r#"{"instance_id":"t-four","image":"i","problem_statement":"p","difficulty":4}"#),
            task(
                r#"{"instance_id":"django__1","image":"i","problem_statement":"p","tags":{"repo":"django/django"}}"#,
            ),
            task(
                r#"{"instance_id":"flask__1","image":"i","problem_statement":"p","tags":{"repo":"django/django"}}"#,
            ),
            task(
                r#"{"instance_id":"easy","image":"i","problem_statement":"p","difficulty":"easy"}"#,
            ),
        ];
        let c = Campaign::with_tasks(config, PathBuf::from("c.toml"), tasks).expect("campaign");
        let route = |i: usize, sample: u32| {
            let (model, route) = c.model_for(&c.tasks[i], sample);
            (model.name.clone(), route)
        };
        for sample in 0..20 {
            assert_eq!(
                route(0, sample),
                ("b".to_owned(), "hard".to_owned()),
                "the large tier"
            );
            assert_eq!(route(1, sample).1, "hard", "4 matches as text");
            assert_eq!(
                route(3, sample).1,
                DEFAULT_ROUTE,
                "the prefix must hold too"
            );
            assert_eq!(route(4, sample).1, DEFAULT_ROUTE);
        }
        let models: BTreeSet<String> = (0..40).map(|s| route(2, s).0).collect();
        assert_eq!(models.len(), 2, "both models of the route");
        assert!((0..40).all(|s| route(2, s).1 == "route-1"));

        for (bad, field) in [
            ("[[routes]]\nmodels = { nope = 1 }\n", "routes[0].models"),
            ("[[routes]]\nmodels = { a = 0 }\n", "routes[0].models"),
            ("[[routes]]\ntier = \"huge\"\n", "routes[0].tier"),
            (
                "[[routes]]\nname = \"default\"\nmodels = { a = 1 }\n",
                "routes[0].name",
            ),
            ("[[routes]]\nmatch = {}\n", "routes[0].models"),
        ] {
            let e = parse(&format!("{CAMPAIGN}\n{bad}")).expect_err(bad);
            assert!(e.to_string().contains(field), "{bad}: {e}");
        }
    }
}
