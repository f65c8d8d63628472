//! Experiments (`[[variants]]`): arms that change the scaffold, the model or the sampling
//! temperature, splitting every task's samples among them by weight — sample `i` of each
//! task goes to the same arm — so the arms are compared on the same tasks, paired by task.

use super::Campaign;
use super::config::CampaignConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The route a sample's record names when its variant fixed the model.
pub const VARIANT_ROUTE: &str = "variant";

/// One arm of an experiment: what its samples change from the campaign's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    pub name: String,
    /// The scaffold kind (default: `scaffold.kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaffold: Option<String>,
    /// The `[[models]]` entry every sample of the arm runs on (default: the routes and
    /// weights choose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A `[[routes]]` entry (by name) that chooses the arm's model among its models, for
    /// every task (default: the routes and weights choose). Not with `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// A directory of prompt templates (relative to the campaign file) overriding the arm's
    /// scaffold's built-ins, as `scaffold.templates` does the campaign's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<std::path::PathBuf>,
    /// Sampling temperature of every call (default: the model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Its share of each task's samples.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Campaign {
    /// The arm sample `sample_index` of every task belongs to: the samples cycle through
    /// the arms, each taking `weight` consecutive slots. `None` without `[[variants]]`.
    pub fn variant_for(&self, sample_index: u32) -> Option<&VariantConfig> {
        let variants = &self.config.variants;
        let cycle: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
        let mut slot = u64::from(sample_index).checked_rem(cycle)?;
        variants.iter().find(|v| {
            let here = slot < u64::from(v.weight);
            slot = slot.saturating_sub(u64::from(v.weight));
            here
        })
    }

    /// The scaffold kind a sample runs with: its arm's, else the campaign's.
    pub fn scaffold_kind_for(&self, sample_index: u32) -> &str {
        self.variant_for(sample_index)
            .and_then(|v| v.scaffold.as_deref())
            .unwrap_or(&self.config.scaffold.kind)
    }
}

impl CampaignConfig {
    /// The `[[routes]]` entry of `name` (an unnamed route's name is `route-{index}`).
    pub(super) fn route_named(&self, name: &str) -> Option<&super::RouteConfig> {
        self.routes.iter().enumerate().find_map(|(i, r)| {
            let named = r.name.clone().unwrap_or_else(|| format!("route-{i}"));
            (named == name).then_some(r)
        })
    }

    /// `[[variants]]`: unique valid names, known scaffolds and models, weights of at least
    /// 1, temperatures from 0 to 2, and enough samples per task for every arm.
    pub(super) fn validate_variants(
        &self,
        models: &BTreeSet<&str>,
    ) -> Result<(), (String, String)> {
        let mut names = BTreeSet::new();
        for (i, v) in self.variants.iter().enumerate() {
            let field = |f: &str| format!("variants[{i}].{f}");
            if !super::is_valid_name(&v.name) || !names.insert(v.name.as_str()) {
                return Err((
                    field("name"),
                    format!(
                        "`{}` is not a unique name of letters, digits, `-`, `_` and `.`",
                        v.name
                    ),
                ));
            }
            if let Some(kind) = &v.scaffold
                && !super::SCAFFOLD_KINDS.contains(&kind.as_str())
            {
                return Err((
                    field("scaffold"),
                    format!(
                        "no scaffold `{kind}`: the scaffolds are {:?}",
                        super::SCAFFOLD_KINDS
                    ),
                ));
            }
            if let Some(model) = &v.model
                && !models.contains(model.as_str())
            {
                return Err((
                    field("model"),
                    format!("no `[[models]]` entry is named `{model}`"),
                ));
            }
            if let Some(route) = &v.route {
                if v.model.is_some() {
                    return Err((field("route"), "give `model` or `route`, not both".into()));
                }
                if self.route_named(route).is_none() {
                    return Err((
                        field("route"),
                        format!("no `[[routes]]` entry is named `{route}`"),
                    ));
                }
            }
            if v.weight == 0 {
                return Err((field("weight"), "a weight is at least 1".into()));
            }
            if v.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                return Err((field("temperature"), "a temperature is from 0 to 2".into()));
            }
        }
        let cycle: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
        if cycle > u64::from(self.samples_per_task) {
            return Err((
                "samples_per_task".into(),
                format!(
                    "the variants' weights add up to {cycle}: give each task at least that many samples, so that every variant runs on every task"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::campaign::Campaign;
    use std::path::Path;

    fn campaign(samples: u32, variants: &str) -> Result<Campaign, String> {
        let text = format!(
            "name = \"x\"\ntasks = [\"t.jsonl\"]\nsamples_per_task = {samples}\nbudget_usd = 1.0\n\n[[models]]\nname = \"a\"\nprovider = \"openai\"\nendpoint = \"http://127.0.0.1:9/v1\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 1.0\n\n[[models]]\nname = \"b\"\nprovider = \"openai\"\nendpoint = \"http://127.0.0.1:9/v1\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 1.0\n{variants}"
        );
        let config = Campaign::parse(Path::new("c.toml"), &text).map_err(|e| e.to_string())?;
        Campaign::from_config(config, "c.toml".into()).map_err(|e| e.to_string())
    }

    #[test]
    fn samples_cycle_through_the_arms_by_weight() {
        let c = campaign(
            6,
            "[[variants]]\nname = \"control\"\n\n[[variants]]\nname = \"edit\"\nscaffold = \"edit\"\nmodel = \"b\"\ntemperature = 0.2\nweight = 2\n",
        )
        .expect("valid");
        let arms: Vec<&str> = (0..6)
            .map(|i| c.variant_for(i).map_or("none", |v| v.name.as_str()))
            .collect();
        assert_eq!(arms, ["control", "edit", "edit", "control", "edit", "edit"]);
        assert_eq!(c.scaffold_kind_for(0), "bash");
        assert_eq!(c.scaffold_kind_for(1), "edit");
    }

    #[test]
    fn an_arm_may_choose_by_a_route_or_name_a_model() {
        let c = campaign(
            3,
            "[[routes]]\nname = \"b-only\"\nmatch = { instance_prefix = [\"none-\"] }\nmodels = { b = 1 }\n\n[[variants]]\nname = \"routed\"\nroute = \"b-only\"\n\n[[variants]]\nname = \"fixed\"\nmodel = \"a\"\n\n[[variants]]\nname = \"free\"\n",
        )
        .expect("valid");
        let task = crate::task::parse_tasks(
            Path::new("t.jsonl"),
            r#"{"instance_id": "t1", "image": "i", "problem_statement": "p"}"#,
        )
        .expect("a task")
        .remove(0);
        let (model, route) = c.model_for(&task, 0);
        assert_eq!((model.name.as_str(), route.as_str()), ("b", "b-only"));
        let (model, route) = c.model_for(&task, 1);
        assert_eq!((model.name.as_str(), route.as_str()), ("a", "variant"));
        assert_eq!(
            c.model_for(&task, 2).1,
            "default",
            "no route takes the task"
        );
        let both = campaign(
            2,
            "[[routes]]\nname = \"r\"\nmodels = { b = 1 }\n\n[[variants]]\nname = \"v\"\nmodel = \"a\"\nroute = \"r\"\n",
        )
        .expect_err("model and route");
        assert!(both.contains("not both"), "{both}");
    }

    #[test]
    fn no_variants_no_arm() {
        let c = campaign(2, "").expect("valid");
        assert!(c.variant_for(0).is_none());
        assert_eq!(c.scaffold_kind_for(1), "bash");
    }

    #[test]
    fn bad_variants_name_their_field() {
        for (samples, variants, field) in [
            (
                2,
                "[[variants]]\nname = \"v\"\n\n[[variants]]\nname = \"v\"\n",
                "variants[1].name",
            ),
            (
                2,
                "[[variants]]\nname = \"v\"\nscaffold = \"vim\"\n",
                "variants[0].scaffold",
            ),
            (
                2,
                "[[variants]]\nname = \"v\"\nmodel = \"c\"\n",
                "variants[0].model",
            ),
            (
                2,
                "[[variants]]\nname = \"v\"\nweight = 0\n",
                "variants[0].weight",
            ),
            (
                2,
                "[[variants]]\nname = \"v\"\ntemperature = 3.0\n",
                "variants[0].temperature",
            ),
            (
                1,
                "[[variants]]\nname = \"v\"\n\n[[variants]]\nname = \"w\"\n",
                "samples_per_task",
            ),
        ] {
            let e = campaign(samples, variants).expect_err(field);
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
