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

/// Every scaffold's templates, each built-in one overridden by the campaign's file of the
/// same name.
pub struct Templates {
    env: Environment<'static>,
    /// SHA-256 over each scaffold's template names and sources, by kind.
    hashes: BTreeMap<&'static str, String>,
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
        let mut hashes = BTreeMap::new();
        for each in crate::campaign::SCAFFOLD_KINDS {
            let overrides = if each == kind { overrides } else { &none };
            let mut hasher = Sha256::new();
            for name in NAMES {
                let source = overrides
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| builtin(each, name).to_owned());
                hasher.update(name.as_bytes());
                hasher.update([0]);
                hasher.update(source.as_bytes());
                hasher.update([0]);
                env.add_template_owned(format!("{each}/{name}"), source)
                    .map_err(|source| TemplateError::Syntax {
                        name: name.to_owned(),
                        source,
                    })?;
            }
            hashes.insert(each, crate::codec::hex(&hasher.finalize()));
        }
        Ok(Templates { env, hashes })
    }

    /// SHA-256 over the scaffold `kind`'s template names and sources (empty for a kind
    /// that has none).
    pub fn hash(&self, kind: &str) -> &str {
        self.hashes.get(kind).map_or("", String::as_str)
    }

    /// Renders the scaffold `kind`'s template `name`.
    pub fn render(
        &self,
        kind: &str,
        name: &str,
        context: serde_json::Value,
    ) -> Result<String, TemplateError> {
        let render_error = |source| TemplateError::Render {
            name: name.to_owned(),
            source,
        };
        let template = self
            .env
            .get_template(&format!("{kind}/{name}"))
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
