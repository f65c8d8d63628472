//! The `bash` scaffold's action protocol (SPEC: "The default scaffold's action protocol").

use serde_json::{Value, json};
use synthfleet_core::trajectory::ChatMessage;

/// What the assistant asked for in one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run {
        command: String,
        /// The tool call to answer, in tool-calling mode.
        tool_call_id: Option<String>,
    },
    Submit {
        tool_call_id: Option<String>,
    },
    /// Not a valid action; every tool call of the turn must still be answered.
    FormatError {
        reason: String,
        tool_call_ids: Vec<String>,
    },
}

/// The `bash` and `submit` tools, in OpenAI's schema.
pub fn tool_schemas() -> Vec<Value> {
    vec![
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
        }),
        json!({
            "type": "function",
            "function": {
                "name": "submit",
                "description": "Finish: the current state of the repository is your answer.",
                "parameters": {"type": "object", "properties": {}}
            }
        }),
    ]
}

/// Reads the action of an assistant message. Tool calls win; without any, one fenced
/// ```` ```bash ```` block is read (so text-mode models work under either protocol).
pub fn parse_action(message: &ChatMessage) -> Action {
    match message.tool_calls.as_slice() {
        [] => parse_text(message.content.as_deref().unwrap_or("")),
        [call] => {
            let id = Some(call.id.clone());
            match call.function.name.as_str() {
                "submit" => Action::Submit { tool_call_id: id },
                "bash" => match serde_json::from_str::<Value>(&call.function.arguments)
                    .ok()
                    .and_then(|v| v.get("command").and_then(Value::as_str).map(str::to_owned))
                {
                    Some(command) if command.trim() == "submit" => Action::Submit { tool_call_id: id },
                    Some(command) if !command.trim().is_empty() => Action::Run {
                        command,
                        tool_call_id: id,
                    },
                    _ => Action::FormatError {
                        reason: "the `bash` tool needs a JSON argument object with a non-empty `command` string".into(),
                        tool_call_ids: vec![call.id.clone()],
                    },
                },
                other => Action::FormatError {
                    reason: format!("there is no tool named `{other}`"),
                    tool_call_ids: vec![call.id.clone()],
                },
            }
        }
        calls => Action::FormatError {
            reason: format!("{} tool calls in one turn; call exactly one", calls.len()),
            tool_call_ids: calls.iter().map(|c| c.id.clone()).collect(),
        },
    }
}

fn parse_text(content: &str) -> Action {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in content.lines() {
        let trimmed = line.trim();
        match current.as_mut() {
            None if trimmed == "```bash" || trimmed == "```sh" => current = Some(Vec::new()),
            Some(_) if trimmed == "```" => {
                blocks.extend(current.take().map(|lines| lines.join("\n")))
            }
            Some(lines) => lines.push(line),
            None => {}
        }
    }
    let error = |reason: String| Action::FormatError {
        reason,
        tool_call_ids: Vec::new(),
    };
    match blocks.as_slice() {
        [command] if command.trim() == "submit" => Action::Submit { tool_call_id: None },
        [command] if !command.trim().is_empty() => Action::Run {
            command: command.clone(),
            tool_call_id: None,
        },
        [_] => error("the ```bash block is empty".into()),
        [] => error("no ```bash block found".into()),
        many => error(format!(
            "{} ```bash blocks found; reply with exactly one",
            many.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synthfleet_core::trajectory::{FunctionCall, Role, ToolCall};

    fn text(s: &str) -> ChatMessage {
        ChatMessage::text(Role::Assistant, s)
    }

    fn calls(calls: &[(&str, &str)]) -> ChatMessage {
        ChatMessage {
            tool_calls: calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| ToolCall {
                    id: format!("c{i}"),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: (*name).into(),
                        arguments: (*args).into(),
                    },
                })
                .collect(),
            ..text("")
        }
    }

    #[test]
    fn text_mode() {
        assert_eq!(
            parse_action(&text("Let me look.\n```bash\nls -la\n```")),
            Action::Run {
                command: "ls -la".into(),
                tool_call_id: None
            }
        );
        assert_eq!(
            parse_action(&text("```bash\nsubmit\n```")),
            Action::Submit { tool_call_id: None }
        );
        assert!(
            matches!(parse_action(&text("no block")), Action::FormatError { reason, .. } if reason.contains("no ```bash"))
        );
        assert!(matches!(
            parse_action(&text("```bash\na\n```\n```bash\nb\n```")),
            Action::FormatError { reason, .. } if reason.contains("2 ```bash blocks")
        ));
        assert!(matches!(
            parse_action(&text("```python\nx\n```")),
            Action::FormatError { .. }
        ));
    }

    #[test]
    fn tool_mode() {
        assert_eq!(
            parse_action(&calls(&[("bash", r#"{"command":"pytest"}"#)])),
            Action::Run {
                command: "pytest".into(),
                tool_call_id: Some("c0".into())
            }
        );
        assert_eq!(
            parse_action(&calls(&[("submit", "{}")])),
            Action::Submit {
                tool_call_id: Some("c0".into())
            }
        );
        assert!(matches!(
            parse_action(&calls(&[("bash", "not json")])),
            Action::FormatError { .. }
        ));
        assert!(matches!(
            parse_action(&calls(&[("python", "{}")])),
            Action::FormatError { .. }
        ));
        match parse_action(&calls(&[("bash", r#"{"command":"a"}"#), ("submit", "{}")])) {
            Action::FormatError { tool_call_ids, .. } => assert_eq!(tool_call_ids, ["c0", "c1"]),
            other => panic!("expected a format error, got {other:?}"),
        }
    }
}
