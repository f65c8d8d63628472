//! Public task sets verified as their own harnesses verify them, on an image built like
//! theirs (`synthfleet/swe-fixture:1`: a repository at /testbed, pytest, a conda stand-in):
//! SWE-bench rows graded per test after the test files are reset and `test_patch` applied,
//! a SWE-smith row rebuilt from its bug patch, gold validation (flaky tasks too), Parquet
//! task files.

use crate::{Fixture, SECRET, fake_model, synthfleet};
use std::collections::BTreeMap;
use synthfleet_core::gold::{self, Problem};
use synthfleet_core::harness::{Harness, Resolution};
use synthfleet_core::trajectory::{ExitStatus, TrajectoryRecord, Verification};
use synthfleet_local::LocalObjectStore;
use synthfleet_tests::fake_llm::{FakeLlm, Script};
use synthfleet_tests::{SWE_IMAGE, in_image, require_swe_image};

/// The fix of the fixture's bug (`clamp` never caps at `high`).
const FIX: &str = "sed -i 's/^    return value$/    return min(value, high)/' calc.py";
/// A plausible fix that is wrong at the boundary.
const WRONG_FIX: &str = "sed -i 's/^    return value$/    return min(value, high - 1)/' calc.py";
/// Breaks `mul`, which a PASS_TO_PASS test covers.
const BREAK_MUL: &str = "sed -i 's/return a \\* b/return a + b/' calc.py";
/// Adds a trivially passing test under the FAIL_TO_PASS name instead of fixing the code.
const FAKE_TEST: &str =
    "printf '\\n\\ndef test_clamp_high():\\n    assert True\\n' >> tests/test_calc.py";

/// A diff made in the image by `change` (so it applies to the image's repository).
fn diff_of(change: &str) -> String {
    in_image(
        SWE_IMAGE,
        &format!("cd /testbed && {change} && git -c safe.directory='*' diff"),
    )
}

struct Rows {
    base_commit: String,
    test_patch: String,
    gold: String,
}

impl Rows {
    fn new() -> Rows {
        require_swe_image();
        Rows {
            base_commit: in_image(
                SWE_IMAGE,
                "git -c safe.directory='*' -C /testbed rev-parse HEAD",
            )
            .trim()
            .to_owned(),
            test_patch: diff_of(
                "printf '\\n\\ndef test_clamp_high():\\n    assert clamp(15, 0, 10) == 10\\n' >> tests/test_calc.py",
            ),
            gold: diff_of(FIX),
        }
    }

    /// A SWE-bench row as the dataset ships it (test lists as JSON strings), for the
    /// fixture's repository under a SWE-bench repository name (pytest, `pytest -rA`).
    fn swe_bench(
        &self,
        number: u32,
        needle: &str,
        fail_to_pass: &str,
        gold: &str,
    ) -> serde_json::Value {
        serde_json::json!({
            "repo": "pallets/flask",
            "instance_id": format!("pallets__flask-{number}"),
            "base_commit": self.base_commit,
            "patch": gold,
            "test_patch": self.test_patch,
            "problem_statement": format!("{needle} clamp(value, low, high) never caps the value at `high`: clamp(15, 0, 10) should be 10."),
            "hints_text": "",
            "created_at": "2024-01-01T00:00:00Z",
            "version": "2.0",
            "FAIL_TO_PASS": serde_json::to_string(&[fail_to_pass]).expect("json"),
            "PASS_TO_PASS": serde_json::to_string(&[
                "tests/test_calc.py::test_add",
                "tests/test_calc.py::test_mul",
                "tests/test_calc.py::test_clamp_low",
            ]).expect("json"),
            "environment_setup_commit": self.base_commit,
            "image_name": SWE_IMAGE,
        })
    }
}

const F2P: &str = "tests/test_calc.py::test_clamp_high";

fn verification(record: &TrajectoryRecord) -> &Verification {
    record.verification.as_ref().unwrap_or_else(|| {
        panic!(
            "{} was not verified: {:?}",
            record.instance_id, record.error
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn swe_bench_rows_are_graded_per_test_as_swe_bench_does() {
    let rows = Rows::new();
    let tasks: Vec<String> = [
        (101, "[swe-fix]"),
        (102, "[swe-wrong]"),
        (103, "[swe-fake-test]"),
        (104, "[swe-regression]"),
    ]
    .iter()
    .map(|(n, needle)| rows.swe_bench(*n, needle, F2P, &rows.gold).to_string())
    .collect();
    let llm = FakeLlm::start(vec![
        Script::new("[swe-fix]", &[FIX, "python3 -m pytest -q tests", "submit"]),
        Script::new("[swe-wrong]", &[WRONG_FIX, "submit"]),
        Script::new(
            "[swe-fake-test]",
            &[FAKE_TEST, "python3 -m pytest -q tests", "submit"],
        ),
        Script::new("[swe-regression]", &[FIX, BREAK_MUL, "submit"]),
    ]);
    let body = format!("budget_usd = 5.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("swe-bench", &tasks, &body);
    fx.run_ok(&["-j", "4"]);
    let results = fx.results().await;
    assert_eq!(results.records.len(), 4);

    let fixed = verification(results.record("pallets__flask-101", 0));
    assert!(fixed.resolved && fixed.patch_applied, "{fixed:?}");
    assert_eq!(fixed.harness, Some(Harness::SweBench));
    assert_eq!(fixed.resolution, Some(Resolution::Full));
    assert_eq!(fixed.reward, 1.0);
    let f2p = fixed.fail_to_pass.as_ref().expect("per-test outcome");
    assert_eq!(
        (f2p.passed.as_slice(), f2p.failed.len()),
        ([F2P.to_owned()].as_slice(), 0)
    );
    assert_eq!(fixed.pass_to_pass.as_ref().expect("p2p").passed.len(), 3);

    let wrong = verification(results.record("pallets__flask-102", 0));
    assert!(!wrong.resolved, "{wrong:?}");
    assert_eq!(
        wrong.fail_to_pass.as_ref().expect("f2p").failed,
        vec![F2P.to_owned()]
    );
    assert_eq!(wrong.reward, 0.0);

    // The agent's own test of the FAIL_TO_PASS name is reset away: the real one fails.
    let faked = results.record("pallets__flask-103", 0);
    assert!(faked.patch.contains("+    assert True"), "{}", faked.patch);
    assert_eq!(faked.exit_status, Some(ExitStatus::Submitted));
    let faked = verification(faked);
    assert!(!faked.resolved, "{faked:?}");
    assert_eq!(
        faked.fail_to_pass.as_ref().expect("f2p").failed,
        vec![F2P.to_owned()]
    );
    assert_eq!(faked.pass_to_pass.as_ref().expect("p2p").failed.len(), 0);

    let regression = verification(results.record("pallets__flask-104", 0));
    assert!(!regression.resolved, "{regression:?}");
    assert_eq!(
        regression.fail_to_pass.as_ref().expect("f2p").passed,
        vec![F2P.to_owned()]
    );
    assert_eq!(
        regression.pass_to_pass.as_ref().expect("p2p").failed,
        vec!["tests/test_calc.py::test_mul".to_owned()]
    );
    assert_eq!(regression.resolution, Some(Resolution::No));
    assert_eq!(
        (
            results.campaign.counts.success,
            results.campaign.counts.failed
        ),
        (1, 3)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gold_validation_flags_broken_tasks_of_a_parquet_dataset_and_the_campaign_skips_them() {
    let rows = Rows::new();
    let jsonl: Vec<String> = [
        rows.swe_bench(201, "[gold-sound]", F2P, &rows.gold),
        // Broken: its FAIL_TO_PASS test passes before any change.
        rows.swe_bench(
            202,
            "[gold-empty]",
            "tests/test_calc.py::test_add",
            &rows.gold,
        ),
        // Broken: its reference patch does not fix the bug.
        rows.swe_bench(203, "[gold-wrong]", F2P, &diff_of(WRONG_FIX)),
    ]
    .iter()
    .map(|r| r.to_string())
    .collect();
    let llm = FakeLlm::start(vec![Script::new("[gold-sound]", &[FIX, "submit"])]);
    let body = format!("budget_usd = 5.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("swe-gold", &jsonl, &body);
    // The rows as a Hugging Face dataset directory of Parquet files, as downloaded.
    let data = fx.dir.path().join("dataset/data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let convert = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, pyarrow as pa, pyarrow.parquet as pq; rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]; pq.write_table(pa.Table.from_pylist(rows), sys.argv[2])",
            fx.dir.path().join("tasks.jsonl").to_str().expect("utf-8"),
            data.join("test-00000-of-00001.parquet").to_str().expect("utf-8"),
        ])
        .output()
        .expect("python3");
    assert!(
        convert.status.success(),
        "{}",
        String::from_utf8_lossy(&convert.stderr)
    );
    std::fs::write(
        data.join("train-00000-of-00001.parquet"),
        b"not read: another split",
    )
    .expect("write");
    let campaign = std::fs::read_to_string(&fx.campaign).expect("read campaign");
    let parquet_source = "tasks = [{ path = \"dataset\", split = \"test\", format = \"swe-bench\" }]\nskip_broken_tasks = true";
    std::fs::write(
        &fx.campaign,
        campaign.replace("tasks = [\"tasks.jsonl\"]", parquet_source),
    )
    .expect("write campaign");

    let out = synthfleet(
        &["validate", fx.campaign_arg()],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 tasks x 1 samples") && stdout.contains("swe-bench 3"),
        "{stdout}"
    );

    // Without a gold report, a campaign that skips broken tasks does not start.
    let out = synthfleet(&["run", fx.campaign_arg()], &[("FAKE_LLM_KEY", SECRET)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("validate --gold"),
        "{stderr}"
    );

    let out = synthfleet(
        &["validate", "--gold", fx.campaign_arg(), "-j", "4"],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "broken tasks fail validation: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok       pallets__flask-201"), "{stdout}");
    assert!(
        stdout.contains("BROKEN   pallets__flask-202: the empty patch already resolves it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("BROKEN   pallets__flask-203: the reference patch does not resolve it (failing: tests/test_calc.py::test_clamp_high)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 tasks, 1 sound, 2 broken, 0 errors"),
        "{stdout}"
    );

    let out = fx.run_ok(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("left out 2 task(s) that gold validation found broken: pallets__flask-202, pallets__flask-203"),
        "{stderr}"
    );
    let results = fx.results().await;
    assert_eq!(results.records.len(), 1, "only the sound task ran");
    assert!(verification(results.record("pallets__flask-201", 0)).resolved);
    assert!(
        crate::containers_of("swe-gold").await.is_empty(),
        "gold sandboxes are removed"
    );
}

/// A PASS_TO_PASS test whose outcome is a coin toss: `os.urandom` differs in every fresh
/// container.
const COIN: &str = "tests/test_calc.py::test_coin";

#[tokio::test(flavor = "multi_thread")]
async fn repeated_gold_validation_flags_a_flaky_test_and_the_campaign_skips_its_task() {
    let rows = Rows::new();
    let stable = rows.swe_bench(301, "[flaky-stable]", F2P, &rows.gold);
    let mut coin = rows.swe_bench(302, "[flaky-coin]", F2P, &rows.gold);
    coin["test_patch"] = diff_of(
        "printf '\\n\\ndef test_clamp_high():\\n    assert clamp(15, 0, 10) == 10\\n\\n\\ndef test_coin():\\n    import os\\n    assert os.urandom(1)[0] < 128\\n' >> tests/test_calc.py",
    )
    .into();
    coin["PASS_TO_PASS"] = serde_json::to_string(&[
        "tests/test_calc.py::test_add",
        "tests/test_calc.py::test_mul",
        COIN,
    ])
    .expect("json")
    .into();
    let tasks = vec![stable.to_string(), coin.to_string()];
    let llm = FakeLlm::start(vec![Script::new("[flaky-stable]", &[FIX, "submit"])]);
    let body = format!(
        "budget_usd = 5.0\nskip_broken_tasks = true\n{}",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new("swe-flaky", &tasks, &body);

    let out = synthfleet(
        &["validate", fx.campaign_arg(), "--repeat", "10"],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && stderr.contains("--gold"),
        "--repeat without --gold is a usage error: {stderr}"
    );

    // Each of the 10 gold and 10 empty runs tosses the coin afresh: the task passes as
    // stable only if all 10 runs of each patch land alike, with probability
    // (2 / 2^10)^2 = 2^-18, about 4 in a million.
    let mut child = crate::synthfleet_command(
        &[
            "validate",
            "--gold",
            fx.campaign_arg(),
            "--repeat",
            "10",
            "-j",
            "4",
        ],
        [("FAKE_LLM_KEY", SECRET)],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("running synthfleet");
    // A run is one sandbox: never more than -j of them at once.
    let mut most = 0;
    while child.try_wait().expect("wait").is_none() {
        most = most.max(crate::containers_of("swe-flaky").await.len());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a flaky task fails validation as a broken one does: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        (2..=4).contains(&most),
        "runs in parallel, at most 4 sandboxes at once: {most}"
    );
    assert!(stdout.contains("ok       pallets__flask-301"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "BROKEN   pallets__flask-302: flaky: tests changed outcome between 10 runs: {COIN}\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 tasks, 1 sound, 1 broken, 0 errors; 1 flaky over 10 runs of each patch"),
        "{stdout}"
    );

    // The stored report says so, with every run counted.
    let objects = LocalObjectStore::new(&fx.state_dir().join("objects"));
    let report = gold::get_report(&objects, "swe-flaky")
        .await
        .expect("read the report")
        .expect("a stored report");
    assert_eq!(
        report.flaky(),
        BTreeMap::from([("pallets__flask-302", [COIN.to_owned()].as_slice())])
    );
    let task = |id: &str| {
        report
            .tasks
            .iter()
            .find(|t| t.instance_id == id)
            .unwrap_or_else(|| panic!("{id} is in the report"))
    };
    let sound = task("pallets__flask-301");
    assert_eq!((sound.problem.as_ref(), sound.runs), (None, 10));
    let gold_runs = sound.gold_outcomes.as_ref().expect("gold outcomes");
    assert_eq!((gold_runs.runs, gold_runs.resolved), (10, 10));
    let empty_runs = sound.empty_outcomes.as_ref().expect("empty outcomes");
    assert_eq!((empty_runs.runs, empty_runs.resolved), (10, 0));
    let flaky = task("pallets__flask-302");
    assert!(
        matches!(&flaky.problem, Some(Problem::Flaky { tests, runs: 10 }) if tests == &[COIN.to_owned()]),
        "{:?}",
        flaky.problem
    );
    let tosses: Vec<_> = [&flaky.gold_outcomes, &flaky.empty_outcomes]
        .into_iter()
        .map(|o| {
            o.as_ref()
                .expect("outcomes")
                .tests
                .get(COIN)
                .copied()
                .unwrap_or_default()
        })
        .collect();
    assert!(
        tosses.iter().all(|c| c.passed + c.failed <= 10)
            && tosses.iter().any(|c| c.passed > 0 && c.failed > 0),
        "{tosses:?}"
    );

    // skip_broken_tasks leaves the flaky task out.
    let out = fx.run_ok(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("left out 1 task(s) that gold validation found broken: pallets__flask-302"),
        "{stderr}"
    );
    let results = fx.results().await;
    assert_eq!(results.records.len(), 1, "only the stable task ran");
    assert!(verification(results.record("pallets__flask-301", 0)).resolved);
    assert!(
        crate::containers_of("swe-flaky").await.is_empty(),
        "gold sandboxes are removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn swe_smith_row_is_rebuilt_from_its_bug_and_evaluated_at_the_bug_commit() {
    require_swe_image();
    // SWE-smith's `patch` introduces the bug into the clean repository the image holds.
    let bug = diff_of(BREAK_MUL);
    let row = |suffix: &str, needle: &str| {
        serde_json::json!({
            "instance_id": format!("acme__calc.1a2b3c4d.func_pm_op_swap__{suffix}"),
            "repo": "swesmith/acme__calc.1a2b3c4d",
            "patch": bug,
            "FAIL_TO_PASS": ["tests/test_calc.py::test_mul"],
            "PASS_TO_PASS": ["tests/test_calc.py::test_add", "tests/test_calc.py::test_clamp_low"],
            "image_name": SWE_IMAGE,
            "problem_statement": format!("{needle} mul(2, 3) returns 5 instead of 6."),
        })
        .to_string()
    };
    let tasks = vec![row("fix", "[smith-fix]"), row("nofix", "[smith-nofix]")];
    let llm = FakeLlm::start(vec![
        // The F2P test file is gone from the agent's view; the bug is in calc.py.
        Script::new(
            "[smith-fix]",
            &[
                "test ! -e tests/test_calc.py && grep -n 'a + b' calc.py",
                "python3 -c \"p = 'calc.py'; s = open(p).read(); open(p, 'w').write(s.replace('def mul(a, b):\\n    return a + b', 'def mul(a, b):\\n    return a * b'))\"",
                "cat calc.py",
                "submit",
            ],
        ),
        Script::new("[smith-nofix]", &["submit"]),
    ]);
    let body = format!("budget_usd = 5.0\n{}", fake_model(&llm.url, ""));
    let fx = Fixture::new("swe-smith", &tasks, &body);
    fx.run_ok(&["-j", "2"]);
    let results = fx.results().await;

    let fixed = results.record("acme__calc.1a2b3c4d.func_pm_op_swap__fix", 0);
    assert_eq!(
        fixed.steps[0].exit_code,
        Some(0),
        "the agent sees the bug and not the F2P tests: {}",
        fixed.steps[0].observation
    );
    assert!(
        !fixed.patch.contains("test_calc"),
        "the agent's diff is its own: {}",
        fixed.patch
    );
    let v = verification(fixed);
    assert!(v.resolved, "{v:?}");
    assert_eq!(v.harness, Some(Harness::SweSmith));
    assert_eq!(
        v.fail_to_pass.as_ref().expect("f2p").passed,
        vec!["tests/test_calc.py::test_mul".to_owned()]
    );

    let v = verification(results.record("acme__calc.1a2b3c4d.func_pm_op_swap__nofix", 0));
    assert!(!v.resolved, "{v:?}");
    assert_eq!(
        v.fail_to_pass.as_ref().expect("f2p").failed,
        vec!["tests/test_calc.py::test_mul".to_owned()]
    );

    // The reference solution (the bug reversed) resolves it; the empty patch does not.
    let out = synthfleet(
        &["validate", "--gold", fx.campaign_arg()],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 tasks, 2 sound, 0 broken"), "{stdout}");
}
