//! Bash, tokenised well enough to find each simple command of a line — with its
//! redirections, here-docs and here-strings, and the commands inside `$(...)`, backticks
//! and `<(...)` — and a command's words read as wrappers, options and operands.

use super::MAX_DEPTH;
use super::python::is_ident;

/// One simple command of a bash line: its words (quotes removed), its redirections and
/// the here-doc bodies and here-strings fed to it.
#[derive(Debug, Default)]
pub(super) struct Simple {
    pub(super) words: Vec<String>,
    pub(super) redirects: Vec<Redirect>,
    pub(super) input: Vec<String>,
    pub(super) serial: usize,
}

impl Simple {
    /// The words and input, for what a command mentions.
    pub(super) fn text(&self) -> String {
        let mut text = self.words.join(" ");
        for body in &self.input {
            text.push('\n');
            text.push_str(body);
        }
        text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Write,
    Append,
    Read,
    Dup,
    HereDoc { strip_tabs: bool },
    HereString,
}

#[derive(Debug)]
pub(super) struct Redirect {
    pub(super) op: Op,
    pub(super) target: String,
}

/// The simple commands of `src`, those inside `$(...)`, backticks and `<(...)` included
/// (before the command that holds them).
pub(super) fn parse_shell(src: &str, depth: usize, serials: &mut usize) -> Vec<Simple> {
    if depth > MAX_DEPTH {
        return Vec::new();
    }
    *serials += 1;
    let first = *serials;
    let mut lexer = Lexer {
        chars: src.chars().collect(),
        i: 0,
        depth,
        serials,
        done: Vec::new(),
        cur: Simple {
            serial: first,
            ..Simple::default()
        },
        word: None,
        pending: None,
        heredocs: Vec::new(),
        bodies: Vec::new(),
    };
    lexer.run();
    lexer.end_command();
    let Lexer {
        mut done, bodies, ..
    } = lexer;
    for (serial, body) in bodies {
        if let Some(s) = done.iter_mut().find(|s| s.serial == serial) {
            s.input.push(body);
        }
    }
    done
}

struct Lexer<'n> {
    chars: Vec<char>,
    i: usize,
    depth: usize,
    serials: &'n mut usize,
    done: Vec<Simple>,
    cur: Simple,
    word: Option<String>,
    pending: Option<Op>,
    /// Here-docs whose bodies start after the current line: (command, delimiter, `<<-`).
    heredocs: Vec<(usize, String, bool)>,
    bodies: Vec<(usize, String)>,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn push(&mut self, c: char) {
        self.word.get_or_insert_with(String::new).push(c);
    }

    fn push_str(&mut self, s: &str) {
        self.word.get_or_insert_with(String::new).push_str(s);
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            let next = self.peek(1);
            match c {
                ' ' | '\t' | '\r' => {
                    self.end_word();
                    self.i += 1;
                }
                '\n' => {
                    self.end_command();
                    self.i += 1;
                    self.read_heredocs();
                }
                '\\' => {
                    match next {
                        Some('\n') => {}
                        Some(n) => self.push(n),
                        None => self.push('\\'),
                    }
                    self.i += 2;
                }
                '\'' => self.single_quoted(),
                '"' => self.double_quoted(),
                '`' => self.backtick(),
                '$' => self.dollar(),
                '#' if self.word.is_none() => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.i += 1;
                    }
                }
                '&' if next == Some('>') => {
                    self.end_word();
                    self.i += 2;
                    let op = if self.peek(0) == Some('>') {
                        self.i += 1;
                        Op::Append
                    } else {
                        Op::Write
                    };
                    self.pending = Some(op);
                }
                ';' | '&' | '|' | '(' | ')' => {
                    self.end_command();
                    self.i += 1;
                    if next == Some(c) || (c == '|' && next == Some('&')) {
                        self.i += 1;
                    }
                }
                '<' | '>' => self.redirect(c, next),
                c => {
                    self.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn end_word(&mut self) {
        let Some(word) = self.word.take() else {
            return;
        };
        match self.pending.take() {
            Some(Op::HereDoc { strip_tabs }) => {
                self.heredocs.push((self.cur.serial, word, strip_tabs));
            }
            Some(Op::HereString) => self.cur.input.push(word),
            Some(Op::Dup) => {
                if word != "-" && !word.chars().all(|c| c.is_ascii_digit()) {
                    self.cur.redirects.push(Redirect {
                        op: Op::Write,
                        target: word,
                    });
                }
            }
            Some(op) => self.cur.redirects.push(Redirect { op, target: word }),
            None => self.cur.words.push(word),
        }
    }

    fn end_command(&mut self) {
        self.end_word();
        self.pending = None;
        *self.serials += 1;
        let next = Simple {
            serial: *self.serials,
            ..Simple::default()
        };
        let cur = std::mem::replace(&mut self.cur, next);
        if !cur.words.is_empty() || !cur.redirects.is_empty() || !cur.input.is_empty() {
            self.done.push(cur);
        }
    }

    fn redirect(&mut self, c: char, next: Option<char>) {
        if next == Some('(') {
            // Process substitution: `<(cmd)`, `>(cmd)`.
            self.i += 1;
            self.substitution();
            return;
        }
        let fd = self
            .word
            .as_deref()
            .is_some_and(|w| !w.is_empty() && w.chars().all(|d| d.is_ascii_digit()));
        if fd {
            self.word = None;
        } else {
            self.end_word();
        }
        let ahead: String = self.chars[self.i..].iter().take(3).collect();
        let (op, len) = if c == '>' {
            if ahead.starts_with(">>") {
                (Op::Append, 2)
            } else if ahead.starts_with(">|") {
                (Op::Write, 2)
            } else if ahead.starts_with(">&") {
                (Op::Dup, 2)
            } else {
                (Op::Write, 1)
            }
        } else if ahead.starts_with("<<<") {
            (Op::HereString, 3)
        } else if ahead.starts_with("<<-") {
            (Op::HereDoc { strip_tabs: true }, 3)
        } else if ahead.starts_with("<<") {
            (Op::HereDoc { strip_tabs: false }, 2)
        } else if ahead.starts_with("<&") {
            (Op::Dup, 2)
        } else if ahead.starts_with("<>") {
            (Op::Write, 2)
        } else {
            (Op::Read, 1)
        };
        self.i += len;
        self.pending = Some(op);
    }

    /// The index of the bracket closing the one at `open`, quotes respected (the end of
    /// input when it is not closed).
    fn closing(&self, open: usize, left: char, right: char) -> usize {
        let mut depth = 0usize;
        let mut j = open;
        while let Some(&c) = self.chars.get(j) {
            match c {
                '\\' => j += 1,
                '\'' => {
                    j += 1;
                    while self.chars.get(j).is_some_and(|&c| c != '\'') {
                        j += 1;
                    }
                }
                '"' => {
                    j += 1;
                    while let Some(&c) = self.chars.get(j) {
                        if c == '\\' {
                            j += 1;
                        } else if c == '"' {
                            break;
                        }
                        j += 1;
                    }
                }
                c if c == left => depth += 1,
                c if c == right => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return j;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        self.chars.len()
    }

    /// `(...)` at `self.i`: its commands are parsed; the word gets a `$(...)` placeholder.
    fn substitution(&mut self) {
        let close = self.closing(self.i, '(', ')');
        let inner: String = self.chars[self.i + 1..close.min(self.chars.len())]
            .iter()
            .collect();
        let commands = parse_shell(&inner, self.depth + 1, self.serials);
        self.done.extend(commands);
        self.push_str(&format!("$({inner})"));
        self.i = close + 1;
    }

    /// `$` and the bracketed text after it (`$((...))`, `${...}`), kept as they are.
    fn verbatim(&mut self, left: char, right: char) {
        let close = self.closing(self.i + 1, left, right);
        let raw: String = self.chars[self.i..(close + 1).min(self.chars.len())]
            .iter()
            .collect();
        self.push_str(&raw);
        self.i = close + 1;
    }

    fn dollar(&mut self) {
        match (self.peek(1), self.peek(2)) {
            // Arithmetic: kept as text.
            (Some('('), Some('(')) => self.verbatim('(', ')'),
            (Some('('), _) => {
                self.i += 1;
                self.substitution();
            }
            (Some('{'), _) => self.verbatim('{', '}'),
            (Some('\''), _) => {
                // ANSI-C quoting: `$'a\nb'`.
                self.i += 2;
                self.push_str("");
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    match c {
                        '\'' => break,
                        '\\' => {
                            let escaped = match self.peek(0) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some(other) => other,
                                None => '\\',
                            };
                            self.push(escaped);
                            self.i += 1;
                        }
                        c => self.push(c),
                    }
                }
            }
            _ => {
                self.push('$');
                self.i += 1;
            }
        }
    }

    fn single_quoted(&mut self) {
        self.i += 1;
        self.push_str("");
        while let Some(c) = self.peek(0) {
            self.i += 1;
            if c == '\'' {
                return;
            }
            self.push(c);
        }
    }

    fn double_quoted(&mut self) {
        self.i += 1;
        self.push_str("");
        while let Some(c) = self.peek(0) {
            match c {
                '"' => {
                    self.i += 1;
                    return;
                }
                '\\' => {
                    match self.peek(1) {
                        Some(n @ ('"' | '\\' | '$' | '`')) => self.push(n),
                        Some('\n') => {}
                        _ => {
                            self.push('\\');
                            self.i += 1;
                            continue;
                        }
                    }
                    self.i += 2;
                }
                '$' if self.peek(1) == Some('\'') => {
                    self.push('$');
                    self.i += 1;
                }
                '$' => self.dollar(),
                '`' => self.backtick(),
                c => {
                    self.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn backtick(&mut self) {
        let start = self.i + 1;
        let mut j = start;
        while let Some(&c) = self.chars.get(j) {
            if c == '\\' {
                j += 2;
                continue;
            }
            if c == '`' {
                break;
            }
            j += 1;
        }
        let end = j.min(self.chars.len());
        let inner: String = self.chars[start.min(end)..end].iter().collect();
        let commands = parse_shell(&inner, self.depth + 1, self.serials);
        self.done.extend(commands);
        self.push_str(&format!("$({inner})"));
        self.i = end + 1;
    }

    fn read_heredocs(&mut self) {
        for (serial, delimiter, strip_tabs) in std::mem::take(&mut self.heredocs) {
            let mut body = String::new();
            while self.i < self.chars.len() {
                let end = self.chars[self.i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(self.chars.len(), |p| self.i + p);
                let line: String = self.chars[self.i..end].iter().collect();
                self.i = (end + 1).min(self.chars.len());
                let check = if strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if check.trim_end() == delimiter {
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            self.bodies.push((serial, body));
        }
    }
}

/// `NAME=value`.
fn is_assignment(word: &str) -> bool {
    let Some((name, _)) = word.split_once('=') else {
        return false;
    };
    name.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(is_ident)
}

/// How many words from `start` are options (the values of those in `with_value`
/// included), up to the first operand; a `--` is counted and ends them.
fn leading_options(words: &[String], start: usize, with_value: &[&str]) -> usize {
    let mut i = start;
    while let Some(w) = words.get(i) {
        if w == "--" {
            return i + 1 - start;
        }
        if !w.starts_with('-') || w == "-" {
            break;
        }
        i += if with_value.contains(&w.as_str()) {
            2
        } else {
            1
        };
    }
    i.min(words.len()) - start
}

/// The words of the command a simple command runs: env assignments, keywords and
/// wrappers (`sudo`, `env`, `timeout 60`, `xargs`, `nohup`, `conda run -n env`) skipped.
pub(super) fn command_words(words: &[String]) -> &[String] {
    let mut i = 0;
    while let Some(w) = words.get(i) {
        let w = w.as_str();
        let next = words.get(i + 1).map(String::as_str);
        let skip = match w {
            _ if is_assignment(w) => 1,
            "if" | "then" | "else" | "elif" | "do" | "while" | "until" | "!" | "{" | "}" | "fi"
            | "done" | "esac" | "nohup" | "builtin" | "exec" | "noglob" | "unbuffer" => 1,
            "for" | "case" | "select" | "function" | "in" => return &[],
            "command" | "time" => 1 + leading_options(words, i + 1, &[]),
            "sudo" => {
                let with_value = [
                    "-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U", "-T", "--user", "--group",
                ];
                1 + leading_options(words, i + 1, &with_value)
            }
            "env" => {
                let with_value = ["-u", "--unset", "-C", "--chdir", "-S", "--split-string"];
                1 + leading_options(words, i + 1, &with_value)
            }
            "nice" => 1 + leading_options(words, i + 1, &["-n", "--adjustment"]),
            "stdbuf" => 1 + leading_options(words, i + 1, &["-i", "-o", "-e"]),
            "xargs" => {
                let with_value = [
                    "-I",
                    "-n",
                    "-P",
                    "-d",
                    "-L",
                    "-E",
                    "-s",
                    "-a",
                    "--max-args",
                    "--max-procs",
                    "--delimiter",
                    "--arg-file",
                    "--max-lines",
                ];
                1 + leading_options(words, i + 1, &with_value)
            }
            "timeout" => {
                let with_value = ["-s", "--signal", "-k", "--kill-after"];
                2 + leading_options(words, i + 1, &with_value)
            }
            "conda" | "mamba" | "micromamba" if next == Some("run") => {
                let with_value = ["-n", "--name", "-p", "--prefix", "--cwd"];
                2 + leading_options(words, i + 2, &with_value)
            }
            "uv" | "poetry" | "pipenv" | "pdm" if next == Some("run") => {
                let with_value = ["--with", "--python", "-p", "--directory", "--project"];
                2 + leading_options(words, i + 2, &with_value)
            }
            _ => return &words[i..],
        };
        i += skip;
    }
    &[]
}

/// The words before a `--`.
pub(super) fn before_dashdash(args: &[String]) -> Vec<&str> {
    args.iter()
        .map(String::as_str)
        .take_while(|a| *a != "--")
        .collect()
}

/// Operands (not options) before a `--`, skipping the values of the options in
/// `with_value`.
pub(super) fn operands_before_dashdash<'a>(
    args: &'a [String],
    with_value: &[&str],
) -> Vec<&'a str> {
    scan_operands(args, with_value, false)
}

/// Operands (not options), skipping the values of the options in `with_value`; every
/// word after `--` is an operand.
pub(super) fn operands<'a>(args: &'a [String], with_value: &[&str]) -> Vec<&'a str> {
    scan_operands(args, with_value, true)
}

/// The operands of `args`; the words after a `--` too when `after_dashdash`.
fn scan_operands<'a>(
    args: &'a [String],
    with_value: &[&str],
    after_dashdash: bool,
) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let a = a.as_str();
        if a == "--" {
            if after_dashdash {
                out.extend(args[i + 1..].iter().map(String::as_str));
            }
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            if with_value.contains(&a) {
                i += 1;
            }
        } else {
            out.push(a);
        }
        i += 1;
    }
    out
}

/// The value of the first of `names` (`-t dir`, `--target-directory=dir`).
pub(super) fn option_value<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    for (i, a) in args.iter().enumerate() {
        if names.contains(&a.as_str()) {
            return args.get(i + 1).map(String::as_str);
        }
        for name in names.iter().filter(|n| n.starts_with("--")) {
            if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(src: &str) -> Vec<Vec<String>> {
        let mut serials = 0;
        parse_shell(src, 0, &mut serials)
            .into_iter()
            .map(|s| s.words)
            .collect()
    }

    #[test]
    fn hacks_shell_lines_split_into_simple_commands() {
        assert_eq!(
            words_of("cd /testbed && git log --all | head -5; echo 'a && b' || true"),
            vec![
                vec!["cd", "/testbed"],
                vec!["git", "log", "--all"],
                vec!["head", "-5"],
                vec!["echo", "a && b"],
                vec!["true"],
            ]
        );
        assert_eq!(
            words_of("echo \"$(git tag)\" `ls`"),
            vec![
                vec!["git", "tag"],
                vec!["ls"],
                vec!["echo", "$(git tag)", "$(ls)"]
            ]
        );
        let mut serials = 0;
        let simples = parse_shell(
            "python3 - <<'EOF' > /tmp/out 2>&1 && echo ok\nimport os\nprint(1)\nEOF\ncat <<-X\n\tbody\n\tX\n",
            0,
            &mut serials,
        );
        assert_eq!(simples.len(), 3);
        assert_eq!(simples[0].words, vec!["python3", "-"]);
        assert_eq!(simples[0].input, vec!["import os\nprint(1)\n"]);
        assert_eq!(simples[0].redirects.len(), 1, "2>&1 is a dup, not a file");
        assert_eq!(simples[0].redirects[0].target, "/tmp/out");
        assert_eq!(simples[1].words, vec!["echo", "ok"]);
        assert_eq!(simples[2].input, vec!["\tbody\n"]);
        assert_eq!(
            command_words(
                &words_of("FOO=1 sudo -u root env -i timeout -s KILL 60 nice -n 5 git status")[0]
            ),
            ["git", "status"]
        );
        assert_eq!(
            words_of("echo a\\ b 'c d' $'e\\tf' # comment"),
            vec![vec!["echo", "a b", "c d", "e\tf"]]
        );
    }
}
