//! Whether a command calls the network: downloaders and remote shells, installs of named
//! packages (pip, uv, conda, npm, cargo, go, apt, ...), and URLs whose host is not local
//! given to a program that is not a text tool.

use super::python::is_python;
use super::shell::operands;

/// Whether a command (other than git and Python code) calls the network.
pub(super) fn network_command(program: &str, args: &[String]) -> bool {
    let subcommand = |i: usize| operands(args, &[]).get(i).copied();
    let net = match program {
        "curl" | "wget" | "nc" | "ncat" | "netcat" | "telnet" | "ssh" | "sftp" | "ftp" | "ping"
        | "dig" | "nslookup" | "host" | "aria2c" | "http" | "https" | "xh" | "lynx" | "w3m"
        | "links" | "socat" => remote_tool(args),
        "scp" | "rsync" => args
            .iter()
            .any(|a| !a.starts_with('-') && is_remote_spec(a)),
        _ if is_pip(program) => pip(args),
        "uv" => match subcommand(0) {
            Some("pip") => args
                .iter()
                .position(|a| a == "pip")
                .is_some_and(|i| pip(&args[i + 1..])),
            Some("add") => true,
            Some("tool") => matches!(subcommand(1), Some("install" | "run")),
            _ => false,
        },
        "uvx" => !operands(args, &[]).is_empty(),
        "pipx" => matches!(subcommand(0), Some("install" | "run" | "inject")),
        "conda" | "mamba" | "micromamba" => conda(args),
        "npm" | "pnpm" | "yarn" | "bun" => js_install(program, args),
        "cargo" => match subcommand(0) {
            Some("install") => !args.iter().any(|a| a == "--path"),
            Some("add") => true,
            _ => false,
        },
        "go" => {
            matches!(subcommand(0), Some("install" | "get"))
                && operands(args, &[])
                    .iter()
                    .skip(1)
                    .any(|p| !p.starts_with('.') && !p.starts_with('/'))
        }
        "gem" => subcommand(0) == Some("install"),
        "apt" | "apt-get" | "apk" | "yum" | "dnf" | "brew" | "zypper" => matches!(
            subcommand(0),
            Some("install" | "update" | "upgrade" | "add" | "fetch" | "download" | "source")
        ),
        "poetry" => subcommand(0) == Some("add"),
        "easy_install" => operands(args, &[]).iter().any(|p| !is_local_package(p)),
        _ => false,
    };
    if net {
        return true;
    }
    let text_tool = matches!(
        program,
        "echo"
            | "printf"
            | "grep"
            | "egrep"
            | "fgrep"
            | "rg"
            | "ag"
            | "ack"
            | "sed"
            | "awk"
            | "gawk"
            | "mawk"
            | "cat"
            | "head"
            | "tail"
            | "less"
            | "more"
            | "git"
            | "pytest"
            | "py.test"
            | "tox"
            | "nox"
            | "test"
            | "["
            | "[["
            | "jq"
            | "yq"
            | "tr"
            | "cut"
            | "sort"
            | "uniq"
            | "wc"
            | "diff"
            | "export"
            | "declare"
            | "local"
            | "readonly"
            | "set"
            | "unset"
            | "true"
            | "false"
            | ":"
            | "printenv"
            | "alias"
            | "node"
            | "perl"
            | "ruby"
            | "tee"
    ) || is_python(program);
    !text_tool
        && args
            .iter()
            .any(|a| url_host(a).is_some_and(|h| !h.is_empty() && !is_local_host(h)))
}

/// `curl`, `wget`, `nc`, `ssh`...: a call unless every address it names is local (or it
/// names none, as `curl --version`).
fn remote_tool(args: &[String]) -> bool {
    if args.iter().all(|a| a.starts_with('-')) {
        return false;
    }
    let remote = args.iter().any(|a| has_nonlocal_url(a));
    let local = args.iter().any(|a| mentions_local_host(a));
    remote || !local
}

fn is_pip(program: &str) -> bool {
    program
        .strip_prefix("pip")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// `pip <args>`: installs or downloads named packages or URLs.
pub(super) fn pip(args: &[String]) -> bool {
    let Some(i) = args.iter().position(|a| !a.starts_with('-')) else {
        return false;
    };
    let rest = &args[i + 1..];
    match args[i].as_str() {
        "install" | "download" | "wheel" => {
            let with_value = [
                "-r",
                "--requirement",
                "-c",
                "--constraint",
                "-t",
                "--target",
                "--prefix",
                "--root",
                "-i",
                "--index-url",
                "--extra-index-url",
                "-f",
                "--find-links",
                "--trusted-host",
                "--src",
                "--upgrade-strategy",
                "--log",
                "--cache-dir",
                "--proxy",
                "--timeout",
                "--retries",
                "--exists-action",
                "--cert",
                "--client-cert",
                "--no-binary",
                "--only-binary",
                "--python-version",
                "--platform",
                "--implementation",
                "--abi",
                "--progress-bar",
                "-C",
                "--config-settings",
                "--global-option",
                "--install-option",
                "--report",
                "--python",
                "--root-user-action",
                "-d",
                "--dest",
                "-w",
                "--wheel-dir",
                "-e",
                "--editable",
            ];
            let editable = rest.iter().enumerate().filter_map(|(j, a)| {
                if a == "-e" || a == "--editable" {
                    rest.get(j + 1).map(String::as_str)
                } else {
                    a.strip_prefix("--editable=")
                }
            });
            let named = operands(rest, &with_value)
                .into_iter()
                .any(|p| !is_local_package(p));
            named || editable.into_iter().any(|p| !is_local_package(p))
        }
        "index" | "search" => true,
        _ => false,
    }
}

/// A package argument that is a local path rather than a name or a URL.
fn is_local_package(p: &str) -> bool {
    if let Some(host) = url_host(p) {
        return p.starts_with("file:") || is_local_host(host);
    }
    if p.starts_with("git+") || p.contains(" @ ") {
        return false;
    }
    p.starts_with(['.', '/', '~']) || p.starts_with("file:") || p.contains('/')
}

fn conda(args: &[String]) -> bool {
    let with_value = [
        "-n",
        "--name",
        "-p",
        "--prefix",
        "-c",
        "--channel",
        "--file",
        "--solver",
    ];
    let ops = operands(args, &with_value);
    match ops.first().copied() {
        Some("install" | "create" | "update" | "upgrade") => {
            ops[1..].iter().any(|p| !is_local_package(p))
        }
        Some("search") => true,
        _ => false,
    }
}

fn js_install(program: &str, args: &[String]) -> bool {
    let ops = operands(args, &["--prefix", "-w", "--workspace", "--registry"]);
    let named = |from: usize| {
        ops.get(from..)
            .unwrap_or_default()
            .iter()
            .any(|p| !p.starts_with(['.', '/', '~']) && !p.starts_with("file:"))
    };
    match (program, ops.first().copied()) {
        (_, Some("add")) => true,
        ("yarn", Some("global")) => ops.get(1) == Some(&"add"),
        (_, Some("install" | "i" | "in" | "isntall")) => named(1),
        _ => false,
    }
}

/// `[user@]host:path` or a URL with a remote host (scp, rsync).
pub(super) fn is_remote_spec(a: &str) -> bool {
    if let Some(host) = url_host(a) {
        return !is_local_host(host);
    }
    if a.starts_with(['/', '.', '~']) {
        return false;
    }
    match a.split_once(':') {
        Some((prefix, _)) if !prefix.is_empty() && !prefix.contains('/') => {
            let host = prefix.rsplit('@').next().unwrap_or(prefix);
            !host.is_empty() && !is_local_host(host)
        }
        _ => false,
    }
}

/// A repository given to `git clone` that is remote: a URL or `git@host:...`.
pub(super) fn is_remote_url(src: &str) -> bool {
    if src.starts_with("file://") {
        return false;
    }
    url_host(src).is_some_and(|h| !is_local_host(h))
        || src.starts_with("git@")
        || (!src.contains("://") && is_remote_spec(src))
}

pub(super) fn is_local_repo(r: &str) -> bool {
    r == "."
        || r == ".."
        || r.starts_with('/')
        || r.starts_with("./")
        || r.starts_with("../")
        || r.starts_with("file://")
}

/// The host of a word that starts with a URL scheme.
fn url_host(word: &str) -> Option<&str> {
    let (scheme, rest) = word.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = host.strip_prefix('[') {
        return Some(v6.split(']').next().unwrap_or_default());
    }
    Some(host.split(':').next().unwrap_or_default())
}

pub(super) fn is_local_host(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']);
    host == "localhost"
        || host.ends_with(".localhost")
        || host.starts_with("127.")
        || host == "0.0.0.0"
        || host == "::1"
}

pub(super) fn mentions_local_host(text: &str) -> bool {
    ["localhost", "127.0.0.1", "0.0.0.0", "[::1]"]
        .iter()
        .any(|h| text.contains(h))
}

/// Whether a text holds a URL whose host is not local.
pub(super) fn has_nonlocal_url(text: &str) -> bool {
    for scheme in ["http://", "https://", "ftp://", "ws://", "wss://"] {
        for (at, _) in text.match_indices(scheme) {
            let rest = &text[at + scheme.len()..];
            let end = rest
                .find(|c: char| "/?#'\"` \t\n)>,;".contains(c))
                .unwrap_or(rest.len());
            let authority = &rest[..end];
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let host = if host.starts_with('[') {
                host.split(']').next().unwrap_or_default()
            } else {
                host.split(':').next().unwrap_or_default()
            };
            if !host.is_empty() && !is_local_host(host) {
                return true;
            }
        }
    }
    false
}

/// The host of a `/dev/tcp/<host>/<port>` (or udp) path.
pub(super) fn dev_tcp_host(word: &str) -> Option<&str> {
    let at = word.find("/dev/tcp/").or_else(|| word.find("/dev/udp/"))?;
    word[at + "/dev/tcp/".len()..].split('/').next()
}
