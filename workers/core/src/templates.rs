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

pub struct Templates {
    env: Environment<'static>,
    hash: String,
}

impl Templates {
    /// The built-in templates of the scaffold `kind`, with any override taking precedence.
    pub fn new(
        kind: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
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
            env.add_template_owned(name, source)
                .map_err(|source| TemplateError::Syntax {
                    name: name.to_owned(),
                    source,
                })?;
        }
        let hash = crate::codec::hex(&hasher.finalize());
        Ok(Templates { env, hash })
    }

    /// SHA-256 over all template names and sources.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn render(&self, name: &str, context: serde_json::Value) -> Result<String, TemplateError> {
        let render_error = |source| TemplateError::Render {
            name: name.to_owned(),
            source,
        };
        let template = self.env.get_template(name).map_err(render_error)?;
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
            builtin.render("instance.j2", json!({})).is_err(),
            "strict undefined"
        );

        let overrides = BTreeMap::from([(
            "instance.j2".to_owned(),
            "Do: {{ problem_statement }}".to_owned(),
        )]);
        let custom = Templates::new("bash", &overrides).expect("custom");
        assert_ne!(custom.hash(), builtin.hash());
        assert_eq!(
            custom
                .render("instance.j2", json!({"problem_statement": "x"}))
                .expect("render"),
            "Do: x"
        );
    }

    #[test]
    fn each_scaffold_has_its_own_system_prompt() {
        let context = json!({"protocol": "text", "workdir": "/w", "step_timeout_s": 5});
        let render = |kind| {
            Templates::new(kind, &BTreeMap::new())
                .expect("builtin")
                .render("system.j2", context.clone())
                .expect("render")
        };
        assert!(render("edit").contains("```edit"));
        assert!(!render("bash").contains("```edit"));
        assert_ne!(
            Templates::new("edit", &BTreeMap::new())
                .expect("edit")
                .hash(),
            Templates::new("bash", &BTreeMap::new())
                .expect("bash")
                .hash()
        );
    }
}
