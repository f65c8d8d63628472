//! The scaffolds' prompt templates (minijinja). Built-in ones live in `templates/{kind}/`
//! (a scaffold without its own `instance.j2` or `observation.j2` uses `bash`'s); a
//! campaign may override any of them with files of the same names (read from disk by
//! `synthfleet-tasks`, stored with the campaign's spec).

use minijinja::Environment;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The templates a scaffold renders, by file name.
pub const NAMES: [&str; 4] = [
    "system.j2",
    "instance.j2",
    "observation.j2",
    "format_error.j2",
];

/// The built-in template `name` of the scaffold `kind`.
fn builtin(kind: &str, name: &str) -> &'static str {
    match (kind, name) {
        ("edit", "system.j2") => include_str!("../templates/edit/system.j2"),
        ("edit", "format_error.j2") => include_str!("../templates/edit/format_error.j2"),
        (_, "system.j2") => include_str!("../templates/bash/system.j2"),
        (_, "instance.j2") => include_str!("../templates/bash/instance.j2"),
        (_, "observation.j2") => include_str!("../templates/bash/observation.j2"),
        _ => include_str!("../templates/bash/format_error.j2"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name} is invalid")]
    Syntax {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("rendering template {name} failed")]
    Render {
        name: String,
        #[source]
        source: minijinja::Error,
    },
}

/// Template sets, each a scaffold's built-ins with overrides: one per scaffold kind (the
/// campaign's overrides on its own kind), and one per experiment arm that brings its own
/// (`[[variants]] templates`).
pub struct Templates {
    env: Environment<'static>,
    /// SHA-256 over each set's template names and sources, by set (a kind, or
    /// `arm:{name}`).
    hashes: BTreeMap<String, String>,
}

impl Templates {
    /// The built-in templates of every scaffold, the campaign's `overrides` taking
    /// precedence for its own scaffold `kind` (`scaffold.kind`; an experiment's arm of
    /// another scaffold keeps that scaffold's built-ins, whose prompts describe its tools).
    pub fn new(
        kind: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Templates, TemplateError> {
        let none = BTreeMap::new();
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let mut templates = Templates {
            env,
            hashes: BTreeMap::new(),
        };
        for each in crate::campaign::SCAFFOLD_KINDS {
            let overrides = if each == kind { overrides } else { &none };
            templates.add_set(each, each, overrides)?;
        }
        Ok(templates)
    }

    /// Adds each arm's own set (arm name → its overrides), on the built-ins of the arm's
    /// scaffold in `config`.
    pub fn with_arms(
        mut self,
        config: &crate::campaign::CampaignConfig,
        arms: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Templates, TemplateError> {
        for (arm, overrides) in arms {
            let kind = config
                .variants
                .iter()
                .find(|v| &v.name == arm)
                .and_then(|v| v.scaffold.as_deref())
                .unwrap_or(&config.scaffold.kind);
            self.add_set(&format!("arm:{arm}"), kind, overrides)?;
        }
        Ok(self)
    }

    fn add_set(
        &mut self,
        set: &str,
        kind: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), TemplateError> {
        let mut hasher = Sha256::new();
        for name in NAMES {
            let source = overrides
                .get(name)
                .cloned()
                .unwrap_or_else(|| builtin(kind, name).to_owned());
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(source.as_bytes());
            hasher.update([0]);
            self.env
                .add_template_owned(format!("{set}/{name}"), source)
                .map_err(|source| TemplateError::Syntax {
                    name: name.to_owned(),
                    source,
                })?;
        }
        self.hashes
            .insert(set.to_owned(), crate::codec::hex(&hasher.finalize()));
        Ok(())
    }

    /// The set a sample renders with: its arm's own, when it has one, else its scaffold's.
    pub fn set_for(&self, kind: &str, arm: Option<&str>) -> String {
        arm.map(|arm| format!("arm:{arm}"))
            .filter(|set| self.hashes.contains_key(set))
            .unwrap_or_else(|| kind.to_owned())
    }

    /// SHA-256 over the set's template names and sources (empty for a set there is not).
    pub fn hash(&self, set: &str) -> &str {
        self.hashes.get(set).map_or("", String::as_str)
    }

    /// Renders the template `name` of a set (a scaffold kind, or what
    /// [`Templates::set_for`] says).
    pub fn render(
        &self,
        set: &str,
        name: &str,
        context: serde_json::Value,
    ) -> Result<String, TemplateError> {
        let render_error = |source| TemplateError::Render {
            name: name.to_owned(),
            source,
        };
        let template = self
            .env
            .get_template(&format!("{set}/{name}"))
            .map_err(render_error)?;
        template
            .render(context)
            .map(|s| s.trim().to_owned())
            .map_err(render_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_builtins_and_overrides_change_the_hash() {
        let builtin = Templates::new("bash", &BTreeMap::new()).expect("builtin");
        let text = builtin
            .render(
                "bash",
                "observation.j2",
                json!({"timed_out": false, "exit_code": 1, "output": "boom", "truncated": true, "step_timeout_s": 5}),
            )
            .expect("render");
        assert!(
            text.contains("exit code: 1")
                && text.contains("boom")
                && text.contains("cut in the middle")
        );
        assert!(
            builtin.render("bash", "instance.j2", json!({})).is_err(),
            "strict undefined"
        );

        let overrides = BTreeMap::from([(
            "instance.j2".to_owned(),
            "Do: {{ problem_statement }}".to_owned(),
        )]);
        let custom = Templates::new("bash", &overrides).expect("custom");
        assert_ne!(custom.hash("bash"), builtin.hash("bash"));
        // The campaign's overrides are its scaffold's: an arm of another keeps its own.
        assert_eq!(custom.hash("edit"), builtin.hash("edit"));
        assert_eq!(
            custom
                .render("bash", "instance.j2", json!({"problem_statement": "x"}))
                .expect("render"),
            "Do: x"
        );
    }

    #[test]
    fn an_arm_with_its_own_templates_renders_them_on_its_scaffold() {
        let config = crate::campaign::Campaign::parse(
            std::path::Path::new("c.toml"),
            "name = \"x\"\ntasks = [\"t.jsonl\"]\nsamples_per_task = 2\nbudget_usd = 1.0\n\n[[models]]\nname = \"a\"\nprovider = \"openai\"\nendpoint = \"http://127.0.0.1:9/v1\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 1.0\n\n[[variants]]\nname = \"plain\"\n\n[[variants]]\nname = \"own\"\nscaffold = \"edit\"\ntemplates = \"own\"\n",
        )
        .expect("valid");
        let arms = BTreeMap::from([(
            "own".to_owned(),
            BTreeMap::from([(
                "instance.j2".to_owned(),
                "Own: {{ problem_statement }}".to_owned(),
            )]),
        )]);
        let templates = Templates::new("bash", &BTreeMap::new())
            .and_then(|t| t.with_arms(&config, &arms))
            .expect("templates");
        let set = templates.set_for("edit", Some("own"));
        assert_eq!(set, "arm:own");
        assert_eq!(
            templates
                .render(&set, "instance.j2", json!({"problem_statement": "x"}))
                .expect("render"),
            "Own: x"
        );
        // The rest of the arm's set is its scaffold's.
        let system = templates
            .render(
                &set,
                "system.j2",
                json!({"protocol": "text", "workdir": "/w", "step_timeout_s": 5}),
            )
            .expect("render");
        assert!(system.contains("```edit"));
        assert_eq!(templates.set_for("bash", Some("plain")), "bash");
        assert_ne!(templates.hash("arm:own"), templates.hash("edit"));
    }

    #[test]
    fn each_scaffold_has_its_own_system_prompt() {
        let context = json!({"protocol": "text", "workdir": "/w", "step_timeout_s": 5});
        let templates = Templates::new("bash", &BTreeMap::new()).expect("builtin");
        let render = |kind| {
            templates
                .render(kind, "system.j2", context.clone())
                .expect("render")
        };
        assert!(render("edit").contains("```edit"));
        assert!(!render("bash").contains("```edit"));
        assert_ne!(templates.hash("edit"), templates.hash("bash"));
    }
}
