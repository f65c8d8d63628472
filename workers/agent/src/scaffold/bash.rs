//! The `bash` tool: one shell command, run with `bash -c` in the workdir.

use super::Tool;
use async_trait::async_trait;
use serde_json::{Value, json};
use std::time::Duration;
use synthfleet_core::ports::{ExecOutput, Sandbox, SandboxError};

pub(super) struct Bash;

#[async_trait]
impl Tool for Bash {
    fn name(&self) -> &'static str {
        "bash"
    }

    fn schema(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": "bash",
                "description": "Run one shell command with `bash -c` in the repository directory and return its exit code and output.",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string", "description": "The command to run."}},
                    "required": ["command"]
                }
            }
        })
    }

    fn fences(&self) -> &'static [&'static str] {
        &["bash", "sh"]
    }

    fn input_from_arguments(&self, arguments: &Value) -> Result<String, String> {
        match arguments.get("command").and_then(Value::as_str) {
            Some(command) if !command.trim().is_empty() => Ok(command.to_owned()),
            _ => Err(
                "the `bash` tool needs a JSON argument object with a non-empty `command` string"
                    .into(),
            ),
        }
    }

    fn input_from_block(&self, body: &str) -> Result<String, String> {
        Ok(body.to_owned())
    }

    async fn run(
        &self,
        sandbox: &dyn Sandbox,
        input: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        sandbox.exec(input, timeout).await
    }
}
