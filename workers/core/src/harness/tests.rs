//! The harness against SWE-bench's own behaviour: its log formats, its grading, its eval
//! script, and the rows of each public set.

use super::*;
use crate::task::{Task, parse_tasks};
use std::collections::BTreeMap;
use std::path::Path;

fn statuses(parser: LogParser, log: &str) -> BTreeMap<String, TestStatus> {
    parser.parse(log)
}

#[test]
fn pytest_summary_and_verbose_lines() {
    let log = "\
tests/test_a.py::test_one PASSED                                   [ 33%]
tests/test_a.py::test_two FAILED                                   [ 66%]
=========================== short test summary info ============================
PASSED tests/test_a.py::test_one
FAILED tests/test_a.py::test_two - AssertionError: assert 1 == 2
ERROR tests/test_b.py::test_setup - fixture 'x' not found
SKIPPED [1] tests/test_c.py:4: no network
XFAIL tests/test_a.py::test_known - reason
";
    let map = statuses(LogParser::Pytest, log);
    assert_eq!(map["tests/test_a.py::test_one"], TestStatus::Passed);
    assert_eq!(map["tests/test_a.py::test_two"], TestStatus::Failed);
    assert_eq!(map["tests/test_b.py::test_setup"], TestStatus::Error);
    assert_eq!(map["tests/test_a.py::test_known"], TestStatus::Xfail);
    assert!(!map.keys().any(|k| k.starts_with('[')), "{map:?}");
}

#[test]
fn pytest_options_shortens_path_parameters() {
    let log =
        "PASSED tests/test_x.py::test_p[/tmp/abc/data.txt]\nPASSED tests/test_x.py::test_q[a-b]\n";
    let map = statuses(LogParser::PytestOptions, log);
    assert!(
        map.contains_key("tests/test_x.py::test_p[/data.txt]"),
        "{map:?}"
    );
    assert!(map.contains_key("tests/test_x.py::test_q[a-b]"), "{map:?}");
}

#[test]
fn pytest_v2_strips_colours() {
    let log = "\u{1b}[32mPASSED\u{1b}[0m sklearn/tests/test_x.py::test_a\n";
    let map = statuses(LogParser::PytestV2, log);
    assert_eq!(
        map["sklearn/tests/test_x.py::test_a"],
        TestStatus::Passed,
        "{map:?}"
    );
}

#[test]
fn django_runner_lines() {
    let log = "\
test_ok (admin_views.tests.AdminViewTests) ... ok
test_fails (admin_views.tests.AdminViewTests) ... FAIL
test_errs (admin_views.tests.AdminViewTests) ... ERROR
test_skip (admin_views.tests.AdminViewTests) ... skipped 'no db'
test_late (admin_views.tests.AdminViewTests) ... System check identified no issues (0 silenced).
ok
";
    let map = statuses(LogParser::Django, log);
    assert_eq!(
        map["test_ok (admin_views.tests.AdminViewTests)"],
        TestStatus::Passed
    );
    assert_eq!(
        map["test_fails (admin_views.tests.AdminViewTests)"],
        TestStatus::Failed
    );
    assert_eq!(
        map["test_errs (admin_views.tests.AdminViewTests)"],
        TestStatus::Error
    );
    assert_eq!(
        map["test_skip (admin_views.tests.AdminViewTests)"],
        TestStatus::Skipped
    );
    assert_eq!(
        map["test_late (admin_views.tests.AdminViewTests)"],
        TestStatus::Passed
    );
}

#[test]
fn sympy_runner_lines() {
    let log = "\
test_basic ok
test_broken F
test_raises E
________________ sympy/core/tests/test_basic.py:test_broken ________________
";
    let map = statuses(LogParser::Sympy, log);
    assert_eq!(map["test_basic"], TestStatus::Passed);
    assert_eq!(map["test_broken"], TestStatus::Failed);
    assert_eq!(map["test_raises"], TestStatus::Error);
    assert_eq!(
        map["sympy/core/tests/test_basic.py:test_broken"],
        TestStatus::Failed
    );
}

#[test]
fn seaborn_and_swesmith_lines() {
    let map = statuses(
        LogParser::Seaborn,
        "tests/test_a.py::test_x PASSED [ 10%]\nFAILED tests/test_a.py::test_y - boom\n",
    );
    assert_eq!(map["tests/test_a.py::test_x"], TestStatus::Passed);
    assert_eq!(map["tests/test_a.py::test_y"], TestStatus::Failed);
    let map = statuses(
        LogParser::Swesmith,
        "tests/test_a.py::test_x PASSED [ 10%]\ntests/test_a.py::test_y FAILED [ 20%]\n",
    );
    assert_eq!(map["tests/test_a.py::test_x"], TestStatus::Passed);
    assert_eq!(map["tests/test_a.py::test_y"], TestStatus::Failed);
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn grading_follows_swe_bench() {
    let f2p = ids(&["t::new"]);
    let p2p = ids(&["t::old", "t::other"]);
    let map = |entries: &[(&str, TestStatus)]| -> BTreeMap<String, TestStatus> {
        entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    use TestStatus::*;
    let all = map(&[("t::new", Passed), ("t::old", Passed), ("t::other", Xfail)]);
    let g = Grade::of(&f2p, &p2p, &all, SkipRule::FailToPassFails);
    assert!(g.resolved());
    assert_eq!(g.pass_to_pass.passed.len(), 2);
    // A PASS_TO_PASS regression: not resolved.
    let regression = map(&[("t::new", Passed), ("t::old", Failed), ("t::other", Passed)]);
    let g = Grade::of(&f2p, &p2p, &regression, SkipRule::FailToPassFails);
    assert_eq!(
        (g.resolution, g.pass_to_pass.failed.clone()),
        (Resolution::No, ids(&["t::old"]))
    );
    // A test the log does not mention failed.
    let missing = map(&[("t::old", Passed), ("t::other", Passed)]);
    let g = Grade::of(&f2p, &p2p, &missing, SkipRule::FailToPassFails);
    assert_eq!(g.fail_to_pass.failed, ids(&["t::new"]));
    assert!(!g.resolved());
    // Skips: SWE-bench fails a skipped FAIL_TO_PASS and keeps a skipped PASS_TO_PASS;
    // SWE-smith and SWE-rebench count neither.
    let skipped = map(&[
        ("t::new", Skipped),
        ("t::old", Skipped),
        ("t::other", Passed),
    ]);
    let g = Grade::of(&f2p, &p2p, &skipped, SkipRule::FailToPassFails);
    assert_eq!(
        (g.resolution, g.pass_to_pass.passed.len()),
        (Resolution::No, 2)
    );
    let g = Grade::of(&f2p, &p2p, &skipped, SkipRule::Uncounted);
    assert_eq!(
        (g.resolution, g.fail_to_pass.failed.len()),
        (Resolution::Full, 0)
    );
    // Partial: some FAIL_TO_PASS pass, every PASS_TO_PASS passes.
    let two = ids(&["t::a", "t::b"]);
    let partial = map(&[("t::a", Passed), ("t::b", Failed)]);
    let g = Grade::of(&two, &[], &partial, SkipRule::FailToPassFails);
    assert_eq!(g.resolution, Resolution::Partial);
    assert!(!g.resolved());
    // Nothing ran: never resolved, even with empty lists.
    assert!(!Grade::nothing_ran(&[], &[]).resolved());
}

const TEST_PATCH: &str = "\
diff --git a/tests/test_calc.py b/tests/test_calc.py
--- a/tests/test_calc.py
+++ b/tests/test_calc.py
@@ -1,2 +1,5 @@
 from calc import add
+
+def test_negative():
+    assert add(-1, -1) == -2
diff --git a/tests/test_new.py b/tests/test_new.py
new file mode 100644
--- /dev/null
+++ b/tests/test_new.py
@@ -0,0 +1,2 @@
+def test_fresh():
+    assert True
diff --git a/tests/data.json b/tests/data.json
--- a/tests/data.json
+++ b/tests/data.json
@@ -1 +1 @@
-{}
+{\"a\": 1}
";

fn swe_bench_row(repo: &str) -> String {
    serde_json::json!({
        "instance_id": "pallets__flask-9001",
        "repo": repo,
        "base_commit": "0123456789abcdef",
        "version": "2.0",
        "problem_statement": "add() is wrong for negatives",
        "patch": "diff --git a/calc.py b/calc.py\n",
        "test_patch": TEST_PATCH,
        "FAIL_TO_PASS": "[\"tests/test_calc.py::test_negative\"]",
        "PASS_TO_PASS": "[\"tests/test_calc.py::test_add\"]",
        "environment_setup_commit": "fedcba",
    })
    .to_string()
}

fn one(line: &str) -> Task {
    parse_tasks(Path::new("t.jsonl"), line)
        .expect("valid row")
        .remove(0)
}

/// The reproduction of the reported bug: the adapter used to run pytest on the
/// FAIL_TO_PASS ids without ever applying `test_patch`.
#[test]
fn swe_bench_row_is_verified_as_swe_bench_does() {
    let task = one(&swe_bench_row("pallets/flask"));
    assert_eq!(
        task.image,
        "swebench/sweb.eval.x86_64.pallets_1776_flask-9001:latest"
    );
    assert!(task.eval.is_none());
    let tests = task.tests.as_ref().expect("per-test verification");
    assert_eq!(tests.harness, Harness::SweBench);
    assert_eq!(
        tests.fail_to_pass,
        ids(&["tests/test_calc.py::test_negative"])
    );
    assert_eq!(
        tests.reset_files,
        ids(&["tests/test_calc.py", "tests/data.json"])
    );
    assert_eq!(tests.remove_files, ids(&["tests/test_new.py"]));
    assert_eq!(tests.log_parser, LogParser::Pytest);
    assert_eq!(
        tests.test_cmd,
        "pytest -rA tests/test_calc.py tests/test_new.py"
    );
    assert_eq!(
        tests.gold_patch.as_deref(),
        Some("diff --git a/calc.py b/calc.py\n")
    );
    let script = tests.eval_script(&task.workdir);
    let order = [
        "source /opt/miniconda3/bin/activate",
        "conda activate testbed",
        "python -m pip install -e .",
        "git checkout '0123456789abcdef' 'tests/test_calc.py' 'tests/data.json'",
        "rm -f 'tests/test_new.py'",
        "git apply -v - <<'EOF_114329324912'",
        START_TEST_OUTPUT,
        "pytest -rA tests/test_calc.py tests/test_new.py",
        END_TEST_OUTPUT,
    ];
    let mut at = 0;
    for step in order {
        let found = script[at..]
            .find(step)
            .unwrap_or_else(|| panic!("`{step}` after byte {at} in:\n{script}"));
        at += found + step.len();
    }
    assert!(
        script.contains("+def test_negative():"),
        "the test patch is in the script"
    );
    assert_eq!(task.tags["repo"], "pallets/flask");
    assert!(
        !task.tags.contains_key("test_patch"),
        "the patches are not provenance tags"
    );
}

#[test]
fn django_directives_are_modules() {
    let patch = "diff --git a/tests/admin_views/test_actions.py b/tests/admin_views/test_actions.py\n--- a/tests/admin_views/test_actions.py\n+++ b/tests/admin_views/test_actions.py\n";
    assert_eq!(
        repos::test_directives("django/django", patch),
        ids(&["admin_views.test_actions"])
    );
    let spec = repos::spec("django/django", Some("3.0")).expect("known");
    assert_eq!(spec.log_parser, LogParser::Django);
    assert!(
        spec.test_cmd
            .starts_with("./tests/runtests.py --verbosity 2")
    );
    assert_eq!(
        repos::spec("django/django", Some("1.9"))
            .expect("known")
            .test_cmd,
        "./tests/runtests.py --verbosity 2"
    );
}

#[test]
fn unknown_repository_without_a_test_command_is_an_error() {
    let err = parse_tasks(Path::new("t.jsonl"), &swe_bench_row("acme/widgets"))
        .expect_err("unknown repo");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "t.jsonl:1: field `test_cmd`: no test command is known for repository `acme/widgets`"
        ),
        "{msg}"
    );
    // ...and fine once the row says how its tests run.
    let mut row: serde_json::Value =
        serde_json::from_str(&swe_bench_row("acme/widgets")).expect("json");
    row["test_cmd"] = "python -m pytest -rA".into();
    row["log_parser"] = "parse_log_pytest".into();
    let task = one(&row.to_string());
    assert_eq!(
        task.tests.expect("tests").test_cmd,
        "python -m pytest -rA tests/test_calc.py tests/test_new.py"
    );
}

#[test]
fn swe_rebench_row_uses_its_install_config() {
    let mut row: serde_json::Value =
        serde_json::from_str(&swe_bench_row("acme/widgets")).expect("json");
    row["install_config"] = serde_json::json!({
        "test_cmd": "pytest --no-header -rA --tb=line --color=no",
        "log_parser": "parse_log_pytest",
        "install": "pip install -e .",
        "pre_install": ["apt-get install -y foo"],
    });
    row["docker_image"] = "swerebench/sweb.eval.x86_64.acme_1776_widgets-1".into();
    let task = one(&row.to_string());
    let tests = task.tests.as_ref().expect("tests");
    assert_eq!(tests.harness, Harness::SweRebench);
    assert_eq!(
        task.image,
        "swerebench/sweb.eval.x86_64.acme_1776_widgets-1"
    );
    assert!(tests.pre_test.contains(&"pip install -e .".to_owned()));
    assert!(
        !tests.pre_test.iter().any(|c| c.contains("apt-get")),
        "pre_install is image-build time"
    );
    row["install_config"]["log_parser"] = "parse_log_nope".into();
    let err = parse_tasks(Path::new("t.jsonl"), &row.to_string()).expect_err("bad parser");
    assert!(
        err.to_string()
            .contains("field `install_config.log_parser`"),
        "{err}"
    );
}

const BUG: &str = "\
diff --git a/calc.py b/calc.py
index 1111111..2222222 100644
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a + b
+    return a - b
";

#[test]
fn swe_smith_row_rebuilds_the_branch_and_evaluates_at_the_bug_commit() {
    let row = serde_json::json!({
        "instance_id": "acme__calc.1a2b3c4d.func_pm_op_swap__x1",
        "repo": "swesmith/acme__calc.1a2b3c4d",
        "patch": BUG,
        "FAIL_TO_PASS": ["tests/test_calc.py::test_add"],
        "PASS_TO_PASS": ["tests/test_other.py::test_mul"],
        "problem_statement": "add() subtracts",
    });
    let task = one(&row.to_string());
    assert_eq!(
        task.image,
        "jyangballin/swesmith.x86_64.acme_1776_calc.1a2b3c4d"
    );
    let tests = task.tests.as_ref().expect("tests");
    let setup = tests
        .checkout
        .as_deref()
        .expect("the checkout rebuilds the branch");
    assert!(
        setup.contains("git apply - <<'EOF_SWESMITH_BUG'\ndiff --git a/calc.py"),
        "{setup}"
    );
    assert!(
        setup.contains("-m 'Bug Patch'") && setup.contains("-m 'Remove F2P Tests'"),
        "{setup}"
    );
    assert!(setup.contains("rm -f -- 'tests/test_calc.py'"), "{setup}");
    assert_eq!(tests.harness, Harness::SweSmith);
    assert_eq!(tests.before_patch, ids(&["git checkout -q HEAD~1"]));
    assert_eq!(
        tests.reset_files,
        ids(&["tests/test_calc.py", "tests/test_other.py"])
    );
    assert_eq!(tests.log_parser, LogParser::Swesmith);
    // The reference solution is the bug, reversed.
    let gold = tests.gold_patch.as_deref().expect("gold");
    assert!(
        gold.contains("-    return a - b\n+    return a + b\n"),
        "{gold}"
    );
    assert!(gold.contains("index 2222222..1111111 100644"), "{gold}");
}

#[test]
fn reverse_diff_round_trips() {
    let created = "diff --git a/new.py b/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/new.py\n@@ -0,0 +1,2 @@\n+a\n+b\n";
    let reversed = reverse_diff(created);
    assert!(
        reversed.contains(
            "deleted file mode 100644\n--- a/new.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n"
        ),
        "{reversed}"
    );
    assert_eq!(reverse_diff(&reverse_diff(BUG)), BUG);
    assert_eq!(reverse_diff(&reverse_diff(created)), created);
}

#[test]
fn grading_reads_only_between_the_markers() {
    let task = one(&swe_bench_row("pallets/flask"));
    let tests = task.tests.expect("tests");
    let log = format!(
        "PASSED tests/test_calc.py::test_negative\n{START_TEST_OUTPUT}\nFAILED tests/test_calc.py::test_negative - no\nPASSED tests/test_calc.py::test_add\n{END_TEST_OUTPUT}\n"
    );
    let grade = tests.grade(&log);
    assert_eq!(
        grade.fail_to_pass.failed,
        ids(&["tests/test_calc.py::test_negative"])
    );
    assert!(!grade.resolved());
    // No markers: the tests never ran.
    assert!(
        !tests
            .grade("PASSED tests/test_calc.py::test_negative\n")
            .resolved()
    );
}
