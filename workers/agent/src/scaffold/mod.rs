//! Scaffolds: the tools an agent has, how its replies are read under either protocol, and
//! how each tool runs in the sandbox. The rollout loop knows only [`Scaffold`]: a new
//! scaffold is a new entry of [`SCAFFOLDS`] with its tools (and its templates in core),
//! never a change to the loop.
//!
//! * [`bash`]: the `bash` tool — one shell command per turn (SPEC's default protocol);
//! * [`editor`]: the `str_replace_editor` tool — view, create, replace an exact string,
//!   insert at a line, undo — which the `edit` scaffold offers beside `bash`.
//!
//! Under the tool-calling protocol a turn calls exactly one tool (or `submit`); under the
//! text protocol it holds exactly one fenced block whose language names the tool
//! (```` ```bash ````, ```` ```edit ````), and a `bash` block holding only `submit` ends
//! the rollout.

mod bash;
mod editor;

use async_trait::async_trait;
use serde_json::{Value, json};
use std::time::Duration;
use synthfleet_core::ports::{ExecOutput, Sandbox, SandboxError};
use synthfleet_core::trajectory::ChatMessage;

/// What the assistant asked for in one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run `tool` on `input` (for `bash` the command; for another tool its arguments in
    /// the canonical form the tool records and replays).
    Invoke {
        tool: String,
        input: String,
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

/// One tool of a scaffold.
#[async_trait]
pub trait Tool: Send + Sync {
    fn name(&self) -> &'static str;
    /// Its schema under the tool-calling protocol (OpenAI's function format).
    fn schema(&self) -> Value;
    /// The fence languages that name it under the text protocol.
    fn fences(&self) -> &'static [&'static str];
    /// Its input from a tool call's JSON arguments, or why they are not valid.
    fn input_from_arguments(&self, arguments: &Value) -> Result<String, String>;
    /// Its input from a fenced block's body, or why it is not valid.
    fn input_from_block(&self, body: &str) -> Result<String, String>;
    /// Runs `input` in `sandbox`; a refused input (a missing file, an ambiguous edit) is an
    /// output with a non-zero exit code that says why, never an error.
    async fn run(
        &self,
        sandbox: &dyn Sandbox,
        input: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError>;
}

/// A scaffold: its kind (as campaigns name it) and its tools.
pub struct Scaffold {
    pub kind: &'static str,
    tools: &'static [&'static dyn Tool],
}

/// Every scaffold, by kind. (`core::campaign::SCAFFOLD_KINDS` lists the same kinds for
/// validation; a test checks they agree.)
pub static SCAFFOLDS: [Scaffold; 3] = [
    Scaffold {
        kind: "bash",
        tools: &[&bash::Bash],
    },
    Scaffold {
        kind: "edit",
        tools: &[&bash::Bash, &editor::Editor],
    },
    // The agent is a program of the image: its tools are its own (`rollout::external`).
    Scaffold {
        kind: "external",
        tools: &[],
    },
];

/// The scaffold of `kind`, if there is one.
pub fn scaffold(kind: &str) -> Option<&'static Scaffold> {
    SCAFFOLDS.iter().find(|s| s.kind == kind)
}

impl Scaffold {
    /// The tool schemas offered under the tool-calling protocol: the scaffold's tools, then
    /// `submit`.
    pub fn tool_schemas(&self) -> Vec<Value> {
        self.tools
            .iter()
            .map(|t| t.schema())
            .chain([json!({
                "type": "function",
                "function": {
                    "name": "submit",
                    "description": "Finish: the current state of the repository is your answer.",
                    "parameters": {"type": "object", "properties": {}}
                }
            })])
            .collect()
    }

    fn tool(&self, name: &str) -> Option<&'static dyn Tool> {
        self.tools.iter().copied().find(|t| t.name() == name)
    }

    /// Runs `input` with the scaffold's tool `tool` (`None`: `bash`, as records from
    /// before other tools name no tool).
    pub async fn run(
        &self,
        sandbox: &dyn Sandbox,
        tool: Option<&str>,
        input: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        let name = tool.unwrap_or("bash");
        match self.tool(name) {
            Some(tool) => tool.run(sandbox, input, timeout).await,
            None => Ok(ExecOutput {
                exit_code: Some(127),
                output: format!("the {} scaffold has no tool named `{name}`", self.kind),
                truncated: false,
                timed_out: false,
                duration: Duration::ZERO,
            }),
        }
    }

    /// Reads the action of an assistant message. Tool calls win; without any, one fenced
    /// block is read (so text-mode models work under either protocol).
    pub fn parse(&self, message: &ChatMessage) -> Action {
        match message.tool_calls.as_slice() {
            [] => self.parse_text(message.content.as_deref().unwrap_or("")),
            [call] => {
                let id = Some(call.id.clone());
                let error = |reason: String| Action::FormatError {
                    reason,
                    tool_call_ids: vec![call.id.clone()],
                };
                let name = call.function.name.as_str();
                if name == "submit" {
                    return Action::Submit { tool_call_id: id };
                }
                let Some(tool) = self.tool(name) else {
                    return error(format!("there is no tool named `{name}`"));
                };
                let input = serde_json::from_str::<Value>(&call.function.arguments)
                    .map_err(|_| format!("the `{name}` tool's arguments are not a JSON object"))
                    .and_then(|arguments| tool.input_from_arguments(&arguments));
                match input {
                    Ok(input) => self.invoke(tool, input, id),
                    Err(reason) => error(reason),
                }
            }
            calls => Action::FormatError {
                reason: format!("{} tool calls in one turn; call exactly one", calls.len()),
                tool_call_ids: calls.iter().map(|c| c.id.clone()).collect(),
            },
        }
    }

    /// `bash` running only `submit` is the submit action.
    fn invoke(&self, tool: &dyn Tool, input: String, tool_call_id: Option<String>) -> Action {
        if tool.name() == "bash" && input.trim() == "submit" {
            return Action::Submit { tool_call_id };
        }
        Action::Invoke {
            tool: tool.name().to_owned(),
            input,
            tool_call_id,
        }
    }

    fn parse_text(&self, content: &str) -> Action {
        let mut blocks: Vec<(&'static dyn Tool, String)> = Vec::new();
        let mut current: Option<(&'static dyn Tool, Vec<&str>)> = None;
        for line in content.lines() {
            let trimmed = line.trim();
            match current.as_mut() {
                None => {
                    current = trimmed.strip_prefix("```").and_then(|fence| {
                        self.tools
                            .iter()
                            .copied()
                            .find(|t| t.fences().contains(&fence))
                            .map(|t| (t, Vec::new()))
                    })
                }
                Some(_) if trimmed == "```" => {
                    blocks.extend(current.take().map(|(t, lines)| (t, lines.join("\n"))))
                }
                Some((_, lines)) => lines.push(line),
            }
        }
        let error = |reason: String| Action::FormatError {
            reason,
            tool_call_ids: Vec::new(),
        };
        let fences = self.fence_names();
        match blocks.as_slice() {
            [(tool, body)] if body.trim().is_empty() => {
                error(format!("the ```{} block is empty", tool.fences()[0]))
            }
            [(tool, body)] => match tool.input_from_block(body) {
                Ok(input) => self.invoke(*tool, input, None),
                Err(reason) => error(reason),
            },
            [] => error(format!("no {fences} block found")),
            many => error(format!(
                "{} {fences} blocks found; reply with exactly one",
                many.len()
            )),
        }
    }

    /// The fences a text-mode reply may use, as a reader sees them: ```` ```bash ```` (or
    /// ```` ```bash or ```edit ````).
    fn fence_names(&self) -> String {
        self.tools
            .iter()
            .map(|t| format!("```{}", t.fences()[0]))
            .collect::<Vec<_>>()
            .join(" or ")
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

    fn bash() -> &'static Scaffold {
        scaffold("bash").expect("the bash scaffold")
    }

    fn run(command: &str, id: Option<&str>) -> Action {
        Action::Invoke {
            tool: "bash".into(),
            input: command.into(),
            tool_call_id: id.map(str::to_owned),
        }
    }

    #[test]
    fn every_kind_campaigns_may_name_has_a_scaffold_and_no_other() {
        let kinds: Vec<&str> = SCAFFOLDS.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, synthfleet_core::campaign::SCAFFOLD_KINDS);
    }

    #[test]
    fn text_mode() {
        let bash = bash();
        assert_eq!(
            bash.parse(&text("Let me look.\n```bash\nls -la\n```")),
            run("ls -la", None)
        );
        assert_eq!(
            bash.parse(&text("```bash\nsubmit\n```")),
            Action::Submit { tool_call_id: None }
        );
        assert!(
            matches!(bash.parse(&text("no block")), Action::FormatError { reason, .. } if reason == "no ```bash block found")
        );
        assert!(matches!(
            bash.parse(&text("```bash\na\n```\n```bash\nb\n```")),
            Action::FormatError { reason, .. } if reason.contains("2 ```bash blocks")
        ));
        assert!(matches!(
            bash.parse(&text("```python\nx\n```")),
            Action::FormatError { .. }
        ));
        // The bash scaffold has no editor: an ```edit block is no action of it.
        assert!(matches!(
            bash.parse(&text(
                "```edit\n{\"command\": \"view\", \"path\": \"a\"}\n```"
            )),
            Action::FormatError { .. }
        ));
    }

    #[test]
    fn tool_mode() {
        let bash = bash();
        assert_eq!(
            bash.parse(&calls(&[("bash", r#"{"command":"pytest"}"#)])),
            run("pytest", Some("c0"))
        );
        assert_eq!(
            bash.parse(&calls(&[("submit", "{}")])),
            Action::Submit {
                tool_call_id: Some("c0".into())
            }
        );
        assert!(matches!(
            bash.parse(&calls(&[("bash", "not json")])),
            Action::FormatError { .. }
        ));
        assert!(matches!(
            bash.parse(&calls(&[("python", "{}")])),
            Action::FormatError { .. }
        ));
        assert!(matches!(
            bash.parse(&calls(&[("str_replace_editor", r#"{"command":"view","path":"a"}"#)])),
            Action::FormatError { reason, .. } if reason.contains("no tool named")
        ));
        match bash.parse(&calls(&[("bash", r#"{"command":"a"}"#), ("submit", "{}")])) {
            Action::FormatError { tool_call_ids, .. } => assert_eq!(tool_call_ids, ["c0", "c1"]),
            other => panic!("expected a format error, got {other:?}"),
        }
        let names: Vec<String> = bash
            .tool_schemas()
            .iter()
            .map(|s| s["function"]["name"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(names, ["bash", "submit"]);
    }

    #[test]
    fn the_edit_scaffold_reads_editor_calls_in_either_protocol() {
        let edit = scaffold("edit").expect("the edit scaffold");
        let expected = Action::Invoke {
            tool: "str_replace_editor".into(),
            input: r#"{"command":"str_replace","path":"a.py","old_str":"x = 1","new_str":"x = 2"}"#
                .into(),
            tool_call_id: None,
        };
        assert_eq!(
            edit.parse(&text(
                "Fixing.\n```edit\n{\"command\": \"str_replace\", \"path\": \"a.py\", \"old_str\": \"x = 1\", \"new_str\": \"x = 2\"}\n```"
            )),
            expected
        );
        let Action::Invoke { tool_call_id, .. } = edit.parse(&calls(&[(
            "str_replace_editor",
            r#"{"path":"a.py","command":"str_replace","new_str":"x = 2","old_str":"x = 1"}"#,
        )])) else {
            panic!("an editor call");
        };
        assert_eq!(tool_call_id.as_deref(), Some("c0"));
        assert_eq!(edit.parse(&text("```bash\nls\n```")), run("ls", None));
        assert!(matches!(
            edit.parse(&text("no block")),
            Action::FormatError { reason, .. } if reason == "no ```bash or ```edit block found"
        ));
        assert!(matches!(
            edit.parse(&calls(&[("str_replace_editor", r#"{"command":"paint","path":"a"}"#)])),
            Action::FormatError { reason, .. } if reason.contains("`paint`")
        ));
        let names: Vec<String> = edit
            .tool_schemas()
            .iter()
            .map(|s| s["function"]["name"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(names, ["bash", "str_replace_editor", "submit"]);
    }
}
