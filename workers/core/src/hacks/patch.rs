//! The final patch, a unified diff read file by file, and its findings: existing test files
//! changed or deleted, edits of the test harness or pytest's configuration, and added lines
//! that skip a test.

use super::paths::{PYTEST_CONFIGS, basename, is_harness_name, is_test_path};
use super::python::is_ident;
use super::{Context, Finding, Signal};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Added,
    Modified,
    Deleted,
    Renamed,
    ModeOnly,
}

/// One file of a patch.
#[derive(Debug)]
pub(super) struct FileDiff {
    /// The path before (the same as `new` unless renamed).
    pub(super) old: String,
    pub(super) new: String,
    pub(super) status: Status,
    hunks: Vec<Hunk>,
}

#[derive(Debug, Default)]
struct Hunk {
    /// What follows the second `@@` of the header.
    tail: String,
    /// (' ' | '+' | '-', text).
    lines: Vec<(char, String)>,
}

impl FileDiff {
    fn added(&self) -> impl Iterator<Item = &str> {
        self.hunks
            .iter()
            .flat_map(|h| &h.lines)
            .filter(|(k, _)| *k == '+')
            .map(|(_, t)| t.as_str())
    }
}

#[derive(Debug, Default)]
pub(super) struct Patch {
    pub(super) files: Vec<FileDiff>,
}

/// A file's header as it is read.
#[derive(Default)]
struct Header {
    old: String,
    new: String,
    added: bool,
    deleted: bool,
    renamed: bool,
    mode: bool,
    content: bool,
    hunks: Vec<Hunk>,
}

impl Header {
    fn finish(self) -> FileDiff {
        let status = if self.added {
            Status::Added
        } else if self.deleted {
            Status::Deleted
        } else if self.renamed {
            Status::Renamed
        } else if self.mode && !self.content {
            Status::ModeOnly
        } else {
            Status::Modified
        };
        let (old, new) = match (self.old.is_empty(), self.new.is_empty()) {
            (true, _) => (self.new.clone(), self.new),
            (_, true) => (self.old.clone(), self.old),
            _ => (self.old, self.new),
        };
        FileDiff {
            old,
            new,
            status,
            hunks: self.hunks,
        }
    }
}

/// A path from a diff header: quotes, the `a/` or `b/` prefix and a trailing tab removed.
fn diff_path(raw: &str) -> String {
    let raw = raw.split('\t').next().unwrap_or(raw).trim_end();
    let raw = raw.trim_matches('"');
    raw.strip_prefix("a/")
        .or_else(|| raw.strip_prefix("b/"))
        .unwrap_or(raw)
        .to_owned()
}

/// `-a,b +c,d`: the old and new line counts.
fn hunk_counts(header: &str) -> (usize, usize) {
    let count = |range: Option<&str>| {
        range.map_or(1, |r| {
            r.split_once(',')
                .map_or(Some(1), |(_, n)| n.parse().ok())
                .unwrap_or(0)
        })
    };
    let mut parts = header.split_whitespace();
    let old = parts.next().and_then(|p| p.strip_prefix('-'));
    let new = parts.next().and_then(|p| p.strip_prefix('+'));
    (count(old), count(new))
}

impl Patch {
    pub(super) fn parse(text: &str) -> Patch {
        let lines: Vec<&str> = text.lines().collect();
        let mut files = Vec::new();
        let mut cur: Option<Header> = None;
        let mut i = 0;
        while let Some(&line) = lines.get(i) {
            i += 1;
            if let Some(rest) = line.strip_prefix("diff --git ") {
                files.extend(cur.take().map(Header::finish));
                let (old, new) = rest
                    .strip_prefix("a/")
                    .and_then(|r| r.rsplit_once(" b/"))
                    .map_or((String::new(), String::new()), |(o, n)| {
                        (diff_path(o), diff_path(n))
                    });
                cur = Some(Header {
                    old,
                    new,
                    ..Header::default()
                });
                continue;
            }
            let plain_start = line.starts_with("--- ")
                && lines.get(i).is_some_and(|n| n.starts_with("+++ "))
                && cur.as_ref().is_none_or(|h| !h.hunks.is_empty());
            if plain_start {
                files.extend(cur.take().map(Header::finish));
                cur = Some(Header::default());
            }
            let Some(h) = cur.as_mut() else { continue };
            if let Some(rest) = line.strip_prefix("@@ ") {
                let (range, tail) = rest.split_once(" @@").unwrap_or((rest, ""));
                let (mut old_left, mut new_left) = hunk_counts(range);
                let mut hunk = Hunk {
                    tail: tail.trim().to_owned(),
                    lines: Vec::new(),
                };
                while (old_left > 0 || new_left > 0)
                    && let Some(&l) = lines.get(i)
                {
                    let kind = l.chars().next().unwrap_or(' ');
                    match kind {
                        '+' => new_left = new_left.saturating_sub(1),
                        '-' => old_left = old_left.saturating_sub(1),
                        ' ' => {
                            old_left = old_left.saturating_sub(1);
                            new_left = new_left.saturating_sub(1);
                        }
                        '\\' => {
                            i += 1;
                            continue;
                        }
                        _ => break,
                    }
                    hunk.lines
                        .push((kind, l.get(1..).unwrap_or_default().to_owned()));
                    i += 1;
                }
                h.content = true;
                h.hunks.push(hunk);
                continue;
            }
            if line.starts_with("new file mode") || line.starts_with("copy to ") {
                h.added = true;
                if let Some(p) = line.strip_prefix("copy to ") {
                    h.new = p.to_owned();
                }
            } else if line.starts_with("deleted file mode") {
                h.deleted = true;
            } else if let Some(p) = line.strip_prefix("rename from ") {
                h.renamed = true;
                h.old = p.to_owned();
            } else if let Some(p) = line.strip_prefix("rename to ") {
                h.renamed = true;
                h.new = p.to_owned();
            } else if line.starts_with("old mode") || line.starts_with("new mode") {
                h.mode = true;
            } else if line.starts_with("GIT binary patch") || line.starts_with("Binary files ") {
                h.content = true;
            } else if let Some(p) = line.strip_prefix("--- ") {
                if p.trim_end() == "/dev/null" {
                    h.added = true;
                } else if h.old.is_empty() {
                    h.old = diff_path(p);
                }
            } else if let Some(p) = line.strip_prefix("+++ ") {
                if p.trim_end() == "/dev/null" {
                    h.deleted = true;
                } else if h.new.is_empty() {
                    h.new = diff_path(p);
                }
            }
        }
        files.extend(cur.map(Header::finish));
        Patch { files }
    }

    /// Whether the patch creates this file.
    pub(super) fn is_new(&self, rel: &str) -> bool {
        self.files
            .iter()
            .any(|f| f.new == rel && matches!(f.status, Status::Added | Status::Renamed))
    }
}

/// Whether a config file's hunks change a pytest section or option.
fn changes_pytest_config(f: &FileDiff) -> bool {
    if !PYTEST_CONFIGS.contains(&basename(&f.new)) {
        return false;
    }
    let is_section = |t: &str| {
        let t = t.trim();
        t.starts_with('[') && t.ends_with(']')
    };
    let pytest_key = |t: &str| {
        let t = t.trim_start().trim_start_matches('"');
        [
            "addopts",
            "testpaths",
            "python_files",
            "python_classes",
            "python_functions",
            "norecursedirs",
            "xfail_strict",
            "required_plugins",
        ]
        .iter()
        .any(|k| t.starts_with(k))
    };
    f.hunks.iter().any(|h| {
        let mut section = if is_section(&h.tail) {
            h.tail.clone()
        } else {
            String::new()
        };
        h.lines.iter().any(|(kind, text)| {
            if is_section(text) {
                section = text.trim().to_owned();
            }
            *kind != ' ' && (is_pytest_section(&section) || pytest_key(text))
        })
    })
}

/// `[pytest]`, `[tool:pytest]`, `[tool.pytest.ini_options]` (and its sub-tables).
fn is_pytest_section(header: &str) -> bool {
    let name = header
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim();
    matches!(name, "pytest" | "tool:pytest" | "tool.pytest") || name.starts_with("tool.pytest.")
}

/// A line that skips a test or expects it to fail.
pub(super) fn skip_marker(line: &str) -> bool {
    let l = line.trim_start();
    if l.starts_with("#[ignore") {
        return true;
    }
    if l.starts_with('#') || l.starts_with("//") {
        return false;
    }
    const NEEDLES: &[&str] = &[
        "pytest.mark.skip",
        "pytest.mark.xfail",
        "pytest.skip(",
        "pytest.xfail(",
        "pytest.importorskip(",
        "@mark.skip",
        "@mark.xfail",
        "unittest.skip",
        "unittest.expectedFailure",
        "@expectedFailure",
        ".skipTest(",
        "raise SkipTest",
        "raise unittest.SkipTest",
        "raise unittest.case.SkipTest",
        "raise pytest.skip.Exception",
        "it.skip(",
        "describe.skip(",
        "test.skip(",
    ];
    if NEEDLES.iter().any(|n| l.contains(n)) {
        return true;
    }
    let found = |needle: &str, before_ok: bool, after_ok: &dyn Fn(Option<char>) -> bool| {
        l.match_indices(needle).any(|(at, _)| {
            let before = l[..at].chars().next_back();
            let after = l[at + needle.len()..].chars().next();
            (before_ok || before.is_none_or(|c| !is_ident(c) && c != '.')) && after_ok(after)
        })
    };
    let any = |_: Option<char>| true;
    let word_end = |c: Option<char>| c.is_none_or(|c| !is_ident(c));
    let skip_end = |c: Option<char>| c.is_none_or(|c| c == '(' || c.is_whitespace());
    found("@skip", true, &skip_end)
        || found("@skipIf(", true, &any)
        || found("@skipUnless(", true, &any)
        || [
            "xit(",
            "xdescribe(",
            "xtest(",
            "t.Skip(",
            "t.Skipf(",
            "t.SkipNow(",
            "b.Skip(",
        ]
        .iter()
        .any(|n| found(n, false, &any))
        || found("@Disabled", true, &word_end)
        || found("@Ignore", true, &word_end)
}

/// Files whose added lines are not read for skip markers: prose, and pytest's own
/// implementation of skipping (pytest's repository).
fn skip_markers_unread(path: &str) -> bool {
    [".rst", ".md", ".txt", ".adoc"]
        .iter()
        .any(|e| path.ends_with(e))
        || path.starts_with("_pytest/")
        || path.contains("/_pytest/")
}

/// The patch's findings, file by file.
pub(super) fn patch_findings(ctx: &Context<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &ctx.patch.files {
        let mut found: Vec<(Signal, &str)> = Vec::new();
        if matches!(
            f.status,
            Status::Modified | Status::Deleted | Status::Renamed
        ) && ctx.is_test(&f.old)
        {
            found.push((Signal::TestEdit, &f.old));
        }
        let harness = f.status != Status::ModeOnly
            && (is_harness_name(&f.new)
                || is_harness_name(&f.old)
                || changes_pytest_config(f)
                || f.added().any(|l| l.starts_with("pytest_plugins")));
        if harness {
            found.push((Signal::HarnessEdit, &f.new));
        }
        let new_test =
            f.status == Status::Added && is_test_path(&f.new) && basename(&f.new) != "conftest.py";
        if !new_test && !skip_markers_unread(&f.new) && f.added().any(skip_marker) {
            found.push((Signal::SkipMarker, &f.new));
        }
        for (signal, path) in found {
            if seen.insert((signal, path.to_owned())) {
                out.push(Finding {
                    signal,
                    step: None,
                    evidence: format!("patch: {path}"),
                });
            }
        }
    }
    out
}
