//! A small reader of Python code (`python -c`, here-docs fed to Python): string literals,
//! calls and literal assignments, enough to find the connections it opens, the files it
//! writes and the shell commands it runs.

use super::commands::Kind;
use super::network::{has_nonlocal_url, mentions_local_host};

/// Calls that open a connection.
const PY_NETWORK_CALLS: &[&str] = &[
    "urlopen(",
    "urlretrieve(",
    "requests.get(",
    "requests.post(",
    "requests.put(",
    "requests.patch(",
    "requests.delete(",
    "requests.head(",
    "requests.options(",
    "requests.request(",
    "httpx.get(",
    "httpx.post(",
    "httpx.stream(",
    "httpx.Client(",
    "httpx.AsyncClient(",
    "HTTPConnection(",
    "HTTPSConnection(",
    "create_connection(",
    ".connect((",
    ".connect_ex((",
    "socket.getaddrinfo(",
    "gethostbyname(",
    "aiohttp.ClientSession(",
    "ftplib.FTP(",
    "smtplib.SMTP(",
    "PoolManager(",
    "pip.main(",
    "/dev/tcp/",
];

/// Imports that exist to open connections.
const PY_NETWORK_IMPORTS: &[&str] = &[
    "import urllib.request",
    "from urllib.request import",
    "from urllib import request",
    "import http.client",
    "from http.client import",
];

/// Whether Python code calls the network (a local server excepted).
pub(super) fn python_network(code: &str) -> bool {
    let calls = PY_NETWORK_CALLS
        .iter()
        .chain(PY_NETWORK_IMPORTS)
        .any(|p| code.contains(p));
    calls && (has_nonlocal_url(code) || !mentions_local_host(code))
}

pub(super) fn is_python(program: &str) -> bool {
    program.starts_with("python") || program.starts_with("pypy")
}

/// A command Python code runs through a shell or `subprocess`.
pub(super) enum PyShell {
    Line(String),
    Words(Vec<String>),
}

pub(super) fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A Python string literal at `i` (an `r`/`b`/`u` prefix allowed): its value and the
/// index after it.
fn py_literal(chars: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    let mut raw = false;
    while let Some(&c) = chars.get(j) {
        if j - i >= 2 || !"rRbBuU".contains(c) {
            break;
        }
        raw |= c == 'r' || c == 'R';
        j += 1;
    }
    let quote = *chars.get(j)?;
    if quote != '\'' && quote != '"' {
        return None;
    }
    let triple = chars.get(j + 1) == Some(&quote) && chars.get(j + 2) == Some(&quote);
    j += if triple { 3 } else { 1 };
    let mut value = String::new();
    while let Some(&c) = chars.get(j) {
        if c == quote
            && (!triple || (chars.get(j + 1) == Some(&quote) && chars.get(j + 2) == Some(&quote)))
        {
            return Some((value, j + if triple { 3 } else { 1 }));
        }
        if c == '\\' {
            let next = chars.get(j + 1).copied().unwrap_or('\\');
            if raw {
                value.push(c);
                value.push(next);
            } else {
                value.push(match next {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
            }
            j += 2;
            continue;
        }
        value.push(c);
        j += 1;
    }
    None
}

/// The top-level comma-separated pieces of the text between `open` (an opening bracket)
/// and its closing bracket, and the index after the closing one.
fn py_args(chars: &[char], open: usize) -> (Vec<String>, usize) {
    let mut args = Vec::new();
    let mut piece = String::new();
    let mut depth = 0usize;
    let mut j = open + 1;
    while let Some(&c) = chars.get(j) {
        if c == '\'' || c == '"' {
            // Copy the literal through (prefix letters were copied as ordinary chars).
            let end = py_literal(chars, j).map_or(chars.len(), |(_, end)| end);
            piece.extend(&chars[j..end]);
            j = end;
            continue;
        }
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => {
                if !piece.trim().is_empty() {
                    args.push(piece.trim().to_owned());
                }
                return (args, j + 1);
            }
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                args.push(piece.trim().to_owned());
                piece.clear();
                j += 1;
                continue;
            }
            _ => {}
        }
        piece.push(c);
        j += 1;
    }
    if !piece.trim().is_empty() {
        args.push(piece.trim().to_owned());
    }
    (args, chars.len())
}

/// Every call of `name(` in the code: its arguments and the index after it.
fn py_calls(chars: &[char], name: &str) -> Vec<(Vec<String>, usize)> {
    let needle: Vec<char> = format!("{name}(").chars().collect();
    let dotted = name.contains('.');
    let mut out = Vec::new();
    let mut i = 0;
    while i + needle.len() <= chars.len() {
        let boundary = i == 0 || {
            let before = chars[i - 1];
            !is_ident(before) && (dotted || before != '.')
        };
        if boundary && chars[i..i + needle.len()] == needle[..] {
            let (args, end) = py_args(chars, i + needle.len() - 1);
            out.push((args, end));
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

/// `name = 'literal'` assignments, for paths held in variables.
fn py_assignments(chars: &[char]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = is_ident(chars[i])
            && !chars[i].is_ascii_digit()
            && (i == 0 || (!is_ident(chars[i - 1]) && chars[i - 1] != '.'));
        if !starts {
            i += 1;
            continue;
        }
        let name_end = chars[i..]
            .iter()
            .position(|&c| !is_ident(c))
            .map_or(chars.len(), |p| i + p);
        let name: String = chars[i..name_end].iter().collect();
        let mut j = name_end;
        while chars.get(j).is_some_and(|c| *c == ' ' || *c == '\t') {
            j += 1;
        }
        if chars.get(j) == Some(&'=') && chars.get(j + 1) != Some(&'=') {
            j += 1;
            while chars.get(j).is_some_and(|c| *c == ' ' || *c == '\t') {
                j += 1;
            }
            if let Some((value, end)) = py_literal(chars, j) {
                out.push((name, value));
                i = end;
                continue;
            }
        }
        i = name_end;
    }
    out
}

/// The value of an argument: a literal, or a variable assigned a literal.
fn py_value(arg: &str, assigns: &[(String, String)]) -> Option<String> {
    let arg = arg.trim();
    let chars: Vec<char> = arg.chars().collect();
    if let Some((value, end)) = py_literal(&chars, 0)
        && end == chars.len()
    {
        return Some(value);
    }
    if !arg.is_empty() && arg.chars().all(is_ident) {
        return assigns
            .iter()
            .rev()
            .find(|(name, _)| name == arg)
            .map(|(_, v)| v.clone());
    }
    None
}

/// Files Python code writes or removes.
pub(super) fn python_writes(code: &str) -> Vec<(String, Kind)> {
    let chars: Vec<char> = code.chars().collect();
    let assigns = py_assignments(&chars);
    let value = |arg: Option<&String>| arg.and_then(|a| py_value(a, &assigns));
    let mut out = Vec::new();
    for name in ["open", "io.open", "codecs.open"] {
        for (args, _) in py_calls(&chars, name) {
            let mode = args
                .iter()
                .find_map(|a| {
                    let rest = a.strip_prefix("mode")?.trim_start();
                    rest.strip_prefix('=').map(|v| v.trim().to_owned())
                })
                .or_else(|| args.get(1).filter(|a| !a.contains('=')).cloned());
            let Some(mode) = value(mode.as_ref()) else {
                continue;
            };
            let kind = if mode.contains('a') {
                Kind::Append
            } else if mode.contains(['w', 'x', '+']) {
                Kind::Modify
            } else {
                continue;
            };
            if let Some(path) = value(args.first()) {
                out.push((path, kind));
            }
        }
    }
    for name in ["Path", "pathlib.Path"] {
        for (args, end) in py_calls(&chars, name) {
            let after: String = chars[end.min(chars.len())..].iter().take(14).collect();
            let kind = if after.starts_with(".write_text(") || after.starts_with(".write_bytes(") {
                Kind::Modify
            } else if after.starts_with(".touch(") {
                Kind::Create
            } else if after.starts_with(".unlink(") {
                Kind::Delete
            } else {
                continue;
            };
            if let Some(path) = value(args.first()) {
                out.push((path, kind));
            }
        }
    }
    for name in [
        "shutil.copy",
        "shutil.copy2",
        "shutil.copyfile",
        "shutil.copytree",
        "shutil.move",
        "os.rename",
        "os.replace",
    ] {
        for (args, _) in py_calls(&chars, name) {
            if let Some(dest) = value(args.get(1)) {
                out.push((dest, Kind::Overwrite));
            }
            if matches!(name, "shutil.move" | "os.rename" | "os.replace")
                && let Some(src) = value(args.first())
            {
                out.push((src, Kind::Delete));
            }
        }
    }
    for name in ["os.remove", "os.unlink", "shutil.rmtree", "os.rmdir"] {
        for (args, _) in py_calls(&chars, name) {
            if let Some(path) = value(args.first()) {
                out.push((path, Kind::Delete));
            }
        }
    }
    out
}

/// Commands Python code runs: `os.system("...")`, `subprocess.run([...])`.
pub(super) fn python_shell(code: &str) -> Vec<PyShell> {
    let chars: Vec<char> = code.chars().collect();
    let assigns = py_assignments(&chars);
    let mut out = Vec::new();
    for name in [
        "os.system",
        "os.popen",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
    ] {
        for (args, _) in py_calls(&chars, name) {
            if let Some(line) = args.first().and_then(|a| py_value(a, &assigns)) {
                out.push(PyShell::Line(line));
            }
        }
    }
    for name in [
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "subprocess.Popen",
    ] {
        for (args, _) in py_calls(&chars, name) {
            let Some(first) = args.first() else { continue };
            if first.starts_with('[') {
                let list: Vec<char> = first.chars().collect();
                let (items, _) = py_args(&list, 0);
                let words: Option<Vec<String>> = items
                    .iter()
                    .map(|item| {
                        if item == "sys.executable" {
                            Some("python".to_owned())
                        } else {
                            py_value(item, &assigns)
                        }
                    })
                    .collect();
                if let Some(words) = words {
                    out.push(PyShell::Words(words));
                }
            } else if let Some(line) = py_value(first, &assigns) {
                out.push(PyShell::Line(line));
            }
        }
    }
    out
}
