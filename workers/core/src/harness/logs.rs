//! Test-log parsers: a test log in, a status per test id out.
//!
//! Each parser is a transcription of the parser of the same name in SWE-bench's
//! `harness/log_parsers/python.py` (the same lines are read the same way, quirks included;
//! the pytest family shares SWE-bench's current `_parse_pytest_result_line`), plus
//! SWE-smith's Python-profile parser, so that a task from a public set is graded exactly as
//! its own harness grades it.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The status a log gives one test (SWE-bench's `TestStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TestStatus {
    Failed,
    Passed,
    Skipped,
    Error,
    Xfail,
}

impl TestStatus {
    const ALL: [TestStatus; 5] = [
        TestStatus::Failed,
        TestStatus::Passed,
        TestStatus::Skipped,
        TestStatus::Error,
        TestStatus::Xfail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TestStatus::Failed => "FAILED",
            TestStatus::Passed => "PASSED",
            TestStatus::Skipped => "SKIPPED",
            TestStatus::Error => "ERROR",
            TestStatus::Xfail => "XFAIL",
        }
    }

    /// The status a log's word names. A line can start with a status and go on
    /// (`PASSEDX path`): SWE-bench then stores the word as it is, which counts neither as
    /// passed nor as failed when grading — as a skip does, so that is what it becomes.
    fn of_word(word: &str) -> TestStatus {
        TestStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == word)
            .unwrap_or(TestStatus::Skipped)
    }

    /// The status a line starts with, as Python's `line.startswith(status)` sees it.
    fn prefix_of(line: &str) -> Option<TestStatus> {
        TestStatus::ALL
            .into_iter()
            .find(|s| line.starts_with(s.as_str()))
    }
}

/// Which parser reads a task's test log. The names are SWE-bench's (`parse_log_<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogParser {
    /// pytest with `-rA`: `PASSED path::test`, `FAILED path::test - reason`.
    Pytest,
    /// pytest, with parametrised ids whose option is a path shortened to its last part.
    PytestOptions,
    /// pytest with colour codes stripped, and older pytest's `path::test PASSED` lines.
    PytestV2,
    /// Django's `runtests.py --verbosity 2` (`test (module.Class) ... ok`).
    Django,
    /// SymPy's `bin/test` (`test_name ok`, `test_name F`, `___ path.py:test ___`).
    Sympy,
    /// seaborn's pytest output (`path::test PASSED`).
    Seaborn,
    /// matplotlib's pytest output (mouse-button names normalised).
    Matplotlib,
    /// SWE-smith's Python profile: pytest `--verbose` lines (`path::test PASSED`).
    Swesmith,
}

impl LogParser {
    pub const ALL: [LogParser; 8] = [
        LogParser::Pytest,
        LogParser::PytestOptions,
        LogParser::PytestV2,
        LogParser::Django,
        LogParser::Sympy,
        LogParser::Seaborn,
        LogParser::Matplotlib,
        LogParser::Swesmith,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogParser::Pytest => "pytest",
            LogParser::PytestOptions => "pytest_options",
            LogParser::PytestV2 => "pytest_v2",
            LogParser::Django => "django",
            LogParser::Sympy => "sympy",
            LogParser::Seaborn => "seaborn",
            LogParser::Matplotlib => "matplotlib",
            LogParser::Swesmith => "swesmith",
        }
    }

    /// Accepts SWE-bench's names with or without the `parse_log_` prefix.
    pub fn from_name(name: &str) -> Option<LogParser> {
        let name = name.strip_prefix("parse_log_").unwrap_or(name);
        LogParser::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The status of every test the log mentions; a later line wins, as in SWE-bench.
    pub fn parse(self, log: &str) -> BTreeMap<String, TestStatus> {
        match self {
            LogParser::Pytest => pytest(log, |line| line.to_owned(), |id| id.to_owned()),
            LogParser::Matplotlib => matplotlib(log),
            LogParser::PytestOptions => pytest(log, |line| line.to_owned(), shorten_option),
            LogParser::PytestV2 => pytest(log, strip_colours, |id| id.to_owned()),
            LogParser::Swesmith => swesmith(log),
            LogParser::Django => django(log),
            LogParser::Sympy => sympy(log),
            LogParser::Seaborn => seaborn(log),
        }
    }
}

/// SWE-bench's `_parse_pytest_result_line`: `STATUS test [- reason]` (the `-rA` summary)
/// or `test STATUS ...` (verbose and older pytest); `SKIPPED [n] file:line` summary lines
/// name no test.
fn pytest_line(line: &str) -> Option<(String, TestStatus)> {
    if let Some(caps) = STATUS_FIRST.captures(line) {
        let status = TestStatus::of_word(&caps[1]);
        let mut test = caps[2].to_owned();
        if status == TestStatus::Failed {
            test = line
                .replace(" - ", " ")
                .split_whitespace()
                .nth(1)?
                .to_owned();
        }
        if status == TestStatus::Skipped && SKIP_COUNT.is_match(&test) {
            return None;
        }
        return Some((test, status));
    }
    let caps = TEST_FIRST.captures(line)?;
    Some((caps[1].to_owned(), TestStatus::of_word(&caps[2])))
}

static STATUS_FIRST: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^(FAILED|PASSED|SKIPPED|ERROR|XFAIL)\s+(\S+)"));
static TEST_FIRST: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^(\S+)\s+(FAILED|PASSED|SKIPPED|ERROR|XFAIL)(?:\s|$)"));
static SKIP_COUNT: LazyLock<Regex> = LazyLock::new(|| regex(r"^\[\d+\]"));

/// `parse_log_pytest` (and, with an id rewrite and a line normaliser, its variants).
fn pytest(
    log: &str,
    normalise: impl Fn(&str) -> String,
    rewrite_id: impl Fn(&str) -> String,
) -> BTreeMap<String, TestStatus> {
    let mut map = BTreeMap::new();
    for raw in log.split('\n') {
        if let Some((test, status)) = pytest_line(&normalise(raw)) {
            map.insert(rewrite_id(&test), status);
        }
    }
    map
}

/// `parse_log_matplotlib`: SWE-bench's classic pytest parser, with mouse-button names
/// normalised.
fn matplotlib(log: &str) -> BTreeMap<String, TestStatus> {
    let mut map = BTreeMap::new();
    for raw in log.split('\n') {
        let mut line = raw
            .replace("MouseButton.LEFT", "1")
            .replace("MouseButton.RIGHT", "3");
        let Some(status) = TestStatus::prefix_of(&line) else {
            continue;
        };
        if status == TestStatus::Failed {
            line = line.replace(" - ", " ");
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() > 1 {
            map.insert(words[1].to_owned(), TestStatus::of_word(words[0]));
        }
    }
    map
}

/// SWE-smith's Python profile parser: pytest `--verbose` lines, `test STATUS`.
fn swesmith(log: &str) -> BTreeMap<String, TestStatus> {
    let mut map = BTreeMap::new();
    for line in log.split('\n') {
        // `re.match(rf"^(\S+)(\s+){status}", line)` for each status in turn.
        let Some((test, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if test.is_empty() {
            continue;
        }
        let rest = rest.trim_start();
        for status in TestStatus::ALL {
            if rest.starts_with(status.as_str()) {
                map.insert(test.to_owned(), status);
            }
        }
    }
    map
}

static OPTION: LazyLock<Regex> = LazyLock::new(|| regex(r"(.*?)\[(.*)\]"));

/// `parse_log_pytest_options`: a parametrised id whose option is an absolute path keeps
/// only the path's last component (`test_x[/tmp/abc/file]` → `test_x[/file]`).
fn shorten_option(id: &str) -> String {
    let Some(caps) = OPTION.captures(id) else {
        return id.to_owned();
    };
    let main = &caps[1];
    let mut option = caps[2].to_owned();
    if option.starts_with('/') && !option.starts_with("//") && !option.contains('*') {
        option = format!("/{}", option.rsplit('/').next().unwrap_or_default());
    }
    format!("{main}[{option}]")
}

static COLOUR: LazyLock<Regex> = LazyLock::new(|| regex(r"\[(\d+)m"));

/// `parse_log_pytest_v2`: colour codes and control characters stripped first.
fn strip_colours(raw: &str) -> String {
    COLOUR
        .replace_all(raw, "")
        .chars()
        .filter(|c| !('\u{1}'..='\u{1f}').contains(c))
        .collect()
}

static DJANGO_INTERRUPTED: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    [
        regex(
            r"(?m)^(.*?)\s\.\.\.\sTesting against Django installed in ((?s:.*?)) silenced\)\.\nok$",
        ),
        regex(r"(?m)^(.*?)\s\.\.\.\sInternal Server Error: /(.*)/\nok$"),
        regex(r"(?m)^(.*?)\s\.\.\.\sSystem check identified no issues \(0 silenced\)\nok$"),
    ]
});

/// `parse_log_django`.
fn django(log: &str) -> BTreeMap<String, TestStatus> {
    let mut map = BTreeMap::new();
    let mut prev_test: Option<String> = None;
    for raw in log.split('\n') {
        let mut line = raw.trim();
        if line.contains("--version is equivalent to version") {
            map.insert(
                "--version is equivalent to version".to_owned(),
                TestStatus::Passed,
            );
        }
        if let Some((test, _)) = line.split_once(" ... ") {
            prev_test = Some(test.to_owned());
        }
        for suffix in [" ... ok", " ... OK", " ...  OK"] {
            if line.ends_with(suffix) {
                // SWE-bench's special case for django__django-7188.
                if line.starts_with("Applying sites.0002_alter_domain_unique...test_no_migrations")
                {
                    line = line.split_once("...").map_or(line, |(_, rest)| rest.trim());
                }
                let test = line.rsplit_once(suffix).map_or(line, |(test, _)| test);
                map.insert(test.to_owned(), TestStatus::Passed);
                break;
            }
        }
        if let Some((test, _)) = line.split_once(" ... skipped") {
            map.insert(test.to_owned(), TestStatus::Skipped);
        }
        if line.ends_with(" ... FAIL") {
            let test = line.split(" ... FAIL").next().unwrap_or_default();
            map.insert(test.to_owned(), TestStatus::Failed);
        }
        if line.starts_with("FAIL:")
            && let Some(test) = line.split_whitespace().nth(1)
        {
            map.insert(test.to_owned(), TestStatus::Failed);
        }
        if line.ends_with(" ... ERROR") {
            let test = line.split(" ... ERROR").next().unwrap_or_default();
            map.insert(test.to_owned(), TestStatus::Error);
        }
        if line.starts_with("ERROR:")
            && let Some(test) = line.split_whitespace().nth(1)
        {
            map.insert(test.to_owned(), TestStatus::Error);
        }
        if line.trim_start().starts_with("ok")
            && let Some(test) = &prev_test
        {
            map.insert(test.clone(), TestStatus::Passed);
        }
    }
    for pattern in DJANGO_INTERRUPTED.iter() {
        for caps in pattern.captures_iter(log) {
            map.insert(caps[1].to_owned(), TestStatus::Passed);
        }
    }
    map
}

static SYMPY_FAILURE: LazyLock<Regex> = LazyLock::new(|| regex(r"(_*) (.*)\.py:(.*) (_*)"));

/// `parse_log_sympy`.
fn sympy(log: &str) -> BTreeMap<String, TestStatus> {
    let mut map = BTreeMap::new();
    for caps in SYMPY_FAILURE.captures_iter(log) {
        map.insert(format!("{}.py:{}", &caps[2], &caps[3]), TestStatus::Failed);
    }
    for raw in log.split('\n') {
        let line = raw.trim();
        if !line.starts_with("test_") {
            continue;
        }
        let Some(test) = line.split_whitespace().next() else {
            continue;
        };
        if line.ends_with(" E") {
            map.insert(test.to_owned(), TestStatus::Error);
        }
        if line.ends_with(" F") {
            map.insert(test.to_owned(), TestStatus::Failed);
        }
        if line.ends_with(" ok") {
            map.insert(test.to_owned(), TestStatus::Passed);
        }
    }
    map
}

/// `parse_log_seaborn`.
fn seaborn(log: &str) -> BTreeMap<String, TestStatus> {
    let mut map = BTreeMap::new();
    for line in log.split('\n') {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("FAILED") {
            if let Some(test) = words.get(1) {
                map.insert((*test).to_owned(), TestStatus::Failed);
            }
        } else if line.contains(" PASSED ") {
            if words.get(1) == Some(&"PASSED") {
                map.insert(words[0].to_owned(), TestStatus::Passed);
            }
        } else if line.starts_with("PASSED")
            && let Some(test) = words.get(1)
        {
            map.insert((*test).to_owned(), TestStatus::Passed);
        }
    }
    map
}

/// Compiles one of this module's fixed patterns (a bad one fails every unit test).
fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a fixed pattern compiles")
}
