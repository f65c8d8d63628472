//! The `str_replace_editor` tool — the file editor SWE-agent, OpenHands and Anthropic's
//! text-editor tool converge on: `view` a file (or a line range) or a directory, `create`
//! a file, `str_replace` an exact string that occurs once, `insert` text after a line,
//! and `undo_edit` the last edit of a file.
//!
//! Files are read and written through the sandbox (the edit itself is computed here), as
//! the sandbox user, so the agent can do nothing with it that it could not do with
//! `bash`. Each edit first saves the file (or notes its absence) under
//! `/tmp/.synthfleet-edits/`, inside the sandbox, which is what `undo_edit` restores: the
//! undo history is sandbox state, so a resumed rollout's replay rebuilds it too.
//! A refused edit (no match, several matches, a missing file, a line out of range) is an
//! observation with exit code 1 that says why, never an error of the rollout.

use super::Tool;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use synthfleet_core::ports::{ExecOutput, Sandbox, SandboxError};
use synthfleet_core::task::shell_quote;

pub(super) struct Editor;

/// One editor command: the tool's arguments, and (serialized) the input a step records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum Command {
    View {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        view_range: Option<(i64, i64)>,
    },
    Create {
        path: String,
        file_text: String,
    },
    StrReplace {
        path: String,
        old_str: String,
        #[serde(default)]
        new_str: String,
    },
    Insert {
        path: String,
        insert_line: usize,
        new_str: String,
    },
    UndoEdit {
        path: String,
    },
}

/// Lines of context shown around an edit.
const SNIPPET_CONTEXT: usize = 4;

#[async_trait]
impl Tool for Editor {
    fn name(&self) -> &'static str {
        "str_replace_editor"
    }

    fn schema(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": "str_replace_editor",
                "description": "View, create and edit files. `view` shows a file with line numbers (or `view_range` [first, last], last -1 for the end) or lists a directory; `create` writes a new file; `str_replace` replaces `old_str`, which must occur exactly once, with `new_str`; `insert` adds `new_str` after line `insert_line` (0: at the top); `undo_edit` reverts the last edit of the file. Paths are relative to the repository directory or absolute.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
                        "path": {"type": "string"},
                        "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                        "file_text": {"type": "string"},
                        "old_str": {"type": "string"},
                        "new_str": {"type": "string"},
                        "insert_line": {"type": "integer", "minimum": 0}
                    },
                    "required": ["command", "path"]
                }
            }
        })
    }

    fn fences(&self) -> &'static [&'static str] {
        &["edit"]
    }

    fn input_from_arguments(&self, arguments: &Value) -> Result<String, String> {
        let edit: Command = serde_json::from_value(arguments.clone())
            .map_err(|e| format!("the `str_replace_editor` arguments are not valid: {e}"))?;
        serde_json::to_string(&edit).map_err(|e| e.to_string())
    }

    fn input_from_block(&self, body: &str) -> Result<String, String> {
        let arguments: Value = serde_json::from_str(body.trim()).map_err(|e| {
            format!("an ```edit block holds one JSON object of the editor's arguments: {e}")
        })?;
        self.input_from_arguments(&arguments)
    }

    async fn run(
        &self,
        sandbox: &dyn Sandbox,
        input: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        let mut run = Run {
            sandbox,
            timeout,
            took: Duration::ZERO,
        };
        let outcome = match serde_json::from_str::<Command>(input) {
            Ok(edit) => run.edit(&edit).await?,
            Err(e) => Step::Refused(format!("not an editor command: {e}")),
        };
        Ok(match outcome {
            Step::Done(output) => run.output(Some(0), output, false),
            Step::Refused(reason) => run.output(Some(1), reason, false),
            Step::TimedOut => run.output(None, String::new(), true),
        })
    }
}

/// What one editor command came to.
enum Step {
    Done(String),
    Refused(String),
    /// A sandbox command outlasted the step's timeout.
    TimedOut,
}

/// One editor command's commands in the sandbox, and the time they took.
struct Run<'a> {
    sandbox: &'a dyn Sandbox,
    timeout: Duration,
    took: Duration,
}

impl Run<'_> {
    fn output(&self, exit_code: Option<i64>, output: String, timed_out: bool) -> ExecOutput {
        ExecOutput {
            exit_code,
            output,
            truncated: false,
            timed_out,
            duration: self.took,
        }
    }

    async fn exec(&mut self, command: &str) -> Result<ExecOutput, SandboxError> {
        let left = self
            .timeout
            .saturating_sub(self.took)
            .max(Duration::from_secs(1));
        let out = self.sandbox.exec(command, left).await?;
        self.took += out.duration;
        Ok(out)
    }

    async fn edit(&mut self, edit: &Command) -> Result<Step, SandboxError> {
        Ok(match edit {
            Command::View { path, view_range } => self.view(path, *view_range).await?,
            Command::Create { path, file_text } => {
                let q = shell_quote(path);
                let check = format!(
                    "if [ -e {q} ]; then echo 'exists'; exit 1; fi; mkdir -p -- \"$(dirname -- {q})\" && [ -w \"$(dirname -- {q})\" ] || {{ echo 'its directory cannot be written'; exit 1; }}"
                );
                let out = self.exec(&check).await?;
                if out.timed_out {
                    return Ok(Step::TimedOut);
                }
                if out.exit_code != Some(0) {
                    let why = out.output.trim();
                    return Ok(Step::Refused(if why == "exists" {
                        format!("{path} already exists: edit it with `str_replace` or `insert`")
                    } else {
                        format!("cannot create {path}: {why}")
                    }));
                }
                if let Err(refused) = self.write(path, file_text).await? {
                    return Ok(refused);
                }
                Step::Done(format!(
                    "Created {path} ({} lines).",
                    file_text.lines().count()
                ))
            }
            Command::StrReplace {
                path,
                old_str,
                new_str,
            } => match self.read(path).await? {
                Err(step) => step,
                Ok(text) => match replace(&text, old_str, new_str) {
                    Err(reason) => {
                        Step::Refused(format!("No replacement was made in {path}: {reason}"))
                    }
                    Ok((new_text, first_line)) => {
                        if let Err(refused) = self.write(path, &new_text).await? {
                            return Ok(refused);
                        }
                        let shown = snippet(&new_text, first_line, new_str.lines().count().max(1));
                        Step::Done(format!("Edited {path}; lines around the change:\n{shown}"))
                    }
                },
            },
            Command::Insert {
                path,
                insert_line,
                new_str,
            } => match self.read(path).await? {
                Err(step) => step,
                Ok(text) => match insert(&text, *insert_line, new_str) {
                    Err(reason) => {
                        Step::Refused(format!("Nothing was inserted in {path}: {reason}"))
                    }
                    Ok(new_text) => {
                        if let Err(refused) = self.write(path, &new_text).await? {
                            return Ok(refused);
                        }
                        let shown =
                            snippet(&new_text, insert_line + 1, new_str.lines().count().max(1));
                        Step::Done(format!("Inserted into {path}; lines around it:\n{shown}"))
                    }
                },
            },
            Command::UndoEdit { path } => {
                let q = shell_quote(path);
                let command = format!(
                    "d={}; last=$(ls \"$d\" 2>/dev/null | sort -n | tail -n 1); [ -n \"$last\" ] || {{ echo 'no edit of {p} to undo'; exit 1; }}; case $last in *.absent) rm -f -- {q} ;; *) cp -p -- \"$d/$last\" {q} ;; esac && rm -f -- \"$d/$last\" && echo 'Undid the last edit of {p}.'",
                    backup_dir(path),
                    p = path.replace('\'', ""),
                );
                let out = self.exec(&command).await?;
                match out.exit_code {
                    _ if out.timed_out => Step::TimedOut,
                    Some(0) => Step::Done(out.output.trim().to_owned()),
                    _ => Step::Refused(out.output.trim().to_owned()),
                }
            }
        })
    }

    async fn view(&mut self, path: &str, range: Option<(i64, i64)>) -> Result<Step, SandboxError> {
        let q = shell_quote(path);
        let lines = match range {
            None => "1,$".to_owned(),
            Some((first, -1)) if first >= 1 => format!("{first},$"),
            Some((first, last)) if first >= 1 && last >= first => format!("{first},{last}"),
            Some((first, last)) => {
                return Ok(Step::Refused(format!(
                    "view_range [{first}, {last}] is not a range of lines: the first is at least 1, the last -1 (the end) or at least the first"
                )));
            }
        };
        let command = format!(
            "if [ -d {q} ]; then find {q} -mindepth 1 -maxdepth 2 -name '.*' -prune -o -print | sort | head -n 500; elif [ -f {q} ]; then cat -n -- {q} | sed -n '{lines}p'; else echo 'no such file or directory: {p}'; exit 1; fi",
            p = path.replace('\'', ""),
        );
        let out = self.exec(&command).await?;
        Ok(match out.exit_code {
            _ if out.timed_out => Step::TimedOut,
            Some(0) => Step::Done(out.output),
            _ => Step::Refused(out.output.trim().to_owned()),
        })
    }

    /// The text of the file at `path`, or the step that refuses to edit it.
    async fn read(&mut self, path: &str) -> Result<Result<String, Step>, SandboxError> {
        let q = shell_quote(path);
        let command = format!(
            "if [ -d {q} ]; then echo 'is a directory'; exit 1; elif [ ! -f {q} ]; then echo 'no such file'; exit 1; elif [ ! -w {q} ]; then echo 'cannot be written'; exit 1; fi; base64 -w0 -- {q}"
        );
        let out = self.exec(&command).await?;
        if out.timed_out {
            return Ok(Err(Step::TimedOut));
        }
        if out.exit_code != Some(0) {
            return Ok(Err(Step::Refused(format!(
                "cannot edit {path}: {}",
                out.output.trim()
            ))));
        }
        if out.truncated {
            return Ok(Err(Step::Refused(format!(
                "{path} is too large for the editor; edit it with `bash`"
            ))));
        }
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(out.output.trim());
        Ok(match decoded.map(String::from_utf8) {
            Ok(Ok(text)) => Ok(text),
            _ => Err(Step::Refused(format!(
                "{path} is not a UTF-8 text file; edit it with `bash`"
            ))),
        })
    }

    /// Saves the file's current state for `undo_edit`, then writes `text` to it; refuses
    /// (writing nothing) when the state cannot be saved.
    async fn write(&mut self, path: &str, text: &str) -> Result<Result<(), Step>, SandboxError> {
        let q = shell_quote(path);
        let backup = format!(
            "d={}; mkdir -p \"$d\" && n=$(ls \"$d\" | wc -l) && if [ -e {q} ]; then cp -p -- {q} \"$d/$n\"; else : > \"$d/$n.absent\"; fi",
            backup_dir(path)
        );
        let out = self.exec(&backup).await?;
        if out.timed_out {
            return Ok(Err(Step::TimedOut));
        }
        if out.exit_code != Some(0) {
            return Ok(Err(Step::Refused(format!(
                "{path} was not changed: saving it for undo_edit failed: {}",
                out.output.trim()
            ))));
        }
        let started = std::time::Instant::now();
        self.sandbox.write_file(path, text.as_bytes()).await?;
        self.took += started.elapsed();
        Ok(Ok(()))
    }
}

/// The directory (in the sandbox, quoted) holding the backups of the file `path` names,
/// keyed by the path as written, `./` and doubled slashes aside.
fn backup_dir(path: &str) -> String {
    let mut normal = path.replace("//", "/");
    while let Some(rest) = normal.strip_prefix("./") {
        normal = rest.to_owned();
    }
    let key = synthfleet_core::codec::sha256_hex(normal.as_bytes());
    format!("/tmp/.synthfleet-edits/{}", &key[..16])
}

/// `text` with its one occurrence of `old` replaced by `new`, and the line (from 1) the
/// replacement starts on. Occurrences may overlap (`aa` occurs twice in `aaa`).
fn replace(text: &str, old: &str, new: &str) -> Result<(String, usize), String> {
    if old.is_empty() {
        return Err("`old_str` is empty".into());
    }
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(old).map(|at| from + at) {
        starts.push(at);
        from = at + text[at..].chars().next().map_or(1, char::len_utf8);
    }
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    match starts.as_slice() {
        [] => Err(
            "`old_str` does not occur in the file (it must match exactly, whitespace included)"
                .into(),
        ),
        [at] => Ok((
            format!("{}{new}{}", &text[..*at], &text[at + old.len()..]),
            line_of(*at),
        )),
        many => {
            let lines: Vec<String> = many.iter().map(|at| line_of(*at).to_string()).collect();
            Err(format!(
                "`old_str` occurs {} times (lines {}); include more lines around it so that it occurs once",
                many.len(),
                lines.join(", ")
            ))
        }
    }
}

/// `text` with `new` inserted as whole lines after line `after` (0: at the top), in the
/// file's line ending; a file that ended without a newline still does when `new` goes at
/// its end.
fn insert(text: &str, after: usize, new: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    if after > lines.len() {
        return Err(format!(
            "`insert_line` {after} is past the end of the file ({} lines)",
            lines.len()
        ));
    }
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let new = new.replace("\r\n", "\n");
    let new = new.strip_suffix('\n').unwrap_or(&new).replace('\n', eol);
    let mut out: String = lines[..after].concat();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(eol);
    }
    out.push_str(&new);
    let rest = lines[after..].concat();
    if !rest.is_empty() || text.ends_with('\n') || text.is_empty() {
        out.push_str(eol);
    }
    out.push_str(&rest);
    Ok(out)
}

/// Lines `first..first + count` of `text` (from 1) with some around them, numbered as
/// `cat -n` numbers them.
fn snippet(text: &str, first: usize, count: usize) -> String {
    let from = first.saturating_sub(SNIPPET_CONTEXT).max(1);
    let to = first + count - 1 + SNIPPET_CONTEXT;
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(|(n, _)| (from..=to).contains(n))
        .map(|(n, line)| format!("{n:6}\t{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_needs_exactly_one_match() {
        let text = "a = 1\nb = 2\na = 1\n";
        assert_eq!(
            replace(text, "b = 2", "b = 3"),
            Ok(("a = 1\nb = 3\na = 1\n".to_owned(), 2))
        );
        let many = replace(text, "a = 1", "a = 0").expect_err("two matches");
        assert!(many.contains("occurs 2 times (lines 1, 3)"), "{many}");
        assert!(
            replace(text, "c", "d")
                .expect_err("none")
                .contains("does not occur")
        );
        assert!(replace(text, "", "d").expect_err("empty").contains("empty"));
        let overlapping = replace("aaa", "aa", "b").expect_err("two overlapping matches");
        assert!(overlapping.contains("occurs 2 times"), "{overlapping}");
    }

    #[test]
    fn insert_goes_after_the_line_and_keeps_lines_whole() {
        assert_eq!(insert("a\nb\n", 0, "top"), Ok("top\na\nb\n".to_owned()));
        assert_eq!(insert("a\nb\n", 1, "mid\n"), Ok("a\nmid\nb\n".to_owned()));
        assert_eq!(insert("a\nb", 2, "end"), Ok("a\nb\nend".to_owned()));
        assert_eq!(
            insert("a\r\nb\r\n", 1, "x\ny"),
            Ok("a\r\nx\r\ny\r\nb\r\n".to_owned())
        );
        assert_eq!(insert("", 0, "x"), Ok("x\n".to_owned()));
        assert!(
            insert("a\n", 3, "x")
                .expect_err("past the end")
                .contains("past the end")
        );
    }

    #[test]
    fn backups_are_keyed_by_the_path_as_written() {
        assert_eq!(backup_dir("./a.py"), backup_dir("a.py"));
        assert_eq!(backup_dir("src//a.py"), backup_dir("src/a.py"));
        assert_ne!(backup_dir("a.py"), backup_dir("b.py"));
        assert!(backup_dir("it's here.py").starts_with("/tmp/.synthfleet-edits/"));
    }

    #[test]
    fn a_snippet_numbers_the_lines_around_a_change() {
        let text: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let shown = snippet(&text, 10, 2);
        assert!(shown.starts_with("     6\tl6"), "{shown}");
        assert!(shown.ends_with("    15\tl15"), "{shown}");
    }

    #[test]
    fn arguments_are_checked_and_recorded_in_one_form() {
        let editor = Editor;
        let input = editor
            .input_from_arguments(
                &json!({"path": "a.py", "new_str": "y", "command": "insert", "insert_line": 3}),
            )
            .expect("valid");
        assert_eq!(
            input,
            r#"{"command":"insert","path":"a.py","insert_line":3,"new_str":"y"}"#
        );
        assert_eq!(editor.input_from_block(&input), Ok(input.clone()));
        let missing = editor
            .input_from_arguments(&json!({"command": "create", "path": "a.py"}))
            .expect_err("no file_text");
        assert!(missing.contains("file_text"), "{missing}");
        assert!(editor.input_from_block("view a.py").is_err());
    }
}
