//! The scaffold's prompt templates (minijinja). Built-in ones live in `templates/bash/`; a
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

fn builtin(name: &str) -> &'static str {
    match name {
        "system.j2" => include_str!("../templates/bash/system.j2"),
        "instance.j2" => include_str!("../templates/bash/instance.j2"),
        "observation.j2" => include_str!("../templates/bash/observation.j2"),
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
    /// The built-in templates, with any override taking precedence.
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let mut hasher = Sha256::new();
        for name in NAMES {
            let source = overrides
                .get(name)
                .cloned()
                .unwrap_or_else(|| builtin(name).to_owned());
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
        let builtin = Templates::new(&BTreeMap::new()).expect("builtin");
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
        let custom = Templates::new(&overrides).expect("custom");
        assert_ne!(custom.hash(), builtin.hash());
        assert_eq!(
            custom
                .render("instance.j2", json!({"problem_statement": "x"}))
                .expect("render"),
            "Do: x"
        );
    }
}
