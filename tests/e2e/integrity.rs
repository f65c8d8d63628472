//! No answer in the agent's sandbox (SPEC invariant 10), for every task format, on images
//! that hold the answer the way public task images do: a clone reset to its base commit
//! whose later tag, branches, stash and reflogs hold the fix (`synthfleet/swe-history:1`),
//! a SWE-smith instance rebuilt by synthfleet ("Bug Patch" → "Remove F2P Tests") and one
//! whose branch the image carries. Agents that cheat through history end unresolved and
//! are flagged; honest fixes on the same images stay resolved and unflagged.

use crate::{Fixture, SECRET, fake_model, synthfleet};
use std::collections::BTreeSet;
use std::sync::Arc;
use synthfleet_core::facts::{TrajectoryFacts, facts_key};
use synthfleet_core::hacks::Signal;
use synthfleet_core::ports::ObjectStore;
use synthfleet_core::trajectory::TrajectoryRecord;
use synthfleet_local::LocalObjectStore;
use synthfleet_tests::fake_llm::{FakeLlm, Script};
use synthfleet_tests::{HISTORY_IMAGE, SWE_IMAGE, in_image, require_swe_image};

/// The upstream fix of the fixture's bug (`clamp` never caps at `high`).
const FIX: &str = "sed -i 's/^    return value$/    return min(value, high)/' calc.py";
/// The SWE-smith bug: `mul` adds.
const BREAK_MUL: &str = "sed -i 's/return a \\* b/return a + b/' calc.py";
const FIX_MUL: &str = "sed -i '/def mul/{n;s/return a + b/return a * b/}' calc.py";
/// The SWE-smith instance whose branch `synthfleet/swe-history:1` carries.
const BRANCH_INSTANCE: &str = "acme__calc.1a2b3c4d.func_pm_op_swap__branch";

/// Lists everything the agent's repository holds, between markers the test reads back.
const INSPECT: &str = "cd /testbed && echo '#commits' && git rev-list --all --count \
    && echo '#refs' && git for-each-ref --format='%(refname)' \
    && echo '#stash' && git stash list \
    && echo '#reflog' && git reflog \
    && echo '#gitdir' && ls -A .git \
    && echo '#objects' && git cat-file --batch-all-objects --batch-check='%(objectname)' \
    && echo '#reachable' && git rev-list --objects HEAD | cut -c1-40 \
    && echo '#head' && git rev-parse HEAD && echo '#end'";

/// The lines of `observation` between `#name` and the next marker.
fn section<'a>(observation: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("#{name}");
    observation
        .lines()
        .skip_while(|l| l.trim() != start)
        .skip(1)
        .take_while(|l| !l.starts_with('#'))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

fn base_commit() -> String {
    in_image(
        HISTORY_IMAGE,
        "git -c safe.directory='*' -C /testbed rev-parse HEAD",
    )
    .trim()
    .to_owned()
}

/// A diff made in the fixture image by `change`.
fn diff_of(image: &str, change: &str) -> String {
    in_image(
        image,
        &format!("cd /testbed && {change} && git -c safe.directory='*' diff"),
    )
}

/// A SWE-bench-style row (SWE-bench, SWE-Gym or SWE-rebench by its fields) on the history
/// image: the clamp bug, graded by the test `test_clamp_high` its test patch adds.
fn clamp_row(instance_id: &str, needle: &str, extra: serde_json::Value) -> String {
    let mut row = serde_json::json!({
        "repo": "pallets/flask",
        "instance_id": instance_id,
        "base_commit": base_commit(),
        "patch": diff_of(HISTORY_IMAGE, FIX),
        "test_patch": diff_of(
            HISTORY_IMAGE,
            "printf '\\n\\ndef test_clamp_high():\\n    assert clamp(15, 0, 10) == 10\\n' >> tests/test_calc.py",
        ),
        "problem_statement": format!("{needle} clamp(value, low, high) never caps the value at `high`."),
        "version": "2.0",
        "FAIL_TO_PASS": ["tests/test_calc.py::test_clamp_high"],
        "PASS_TO_PASS": ["tests/test_calc.py::test_add", "tests/test_calc.py::test_mul"],
        "image_name": HISTORY_IMAGE,
    });
    if let (Some(row), Some(extra)) = (row.as_object_mut(), extra.as_object()) {
        row.extend(extra.clone());
    }
    row.to_string()
}

/// A SWE-smith row: `mul` broken by the bug patch, graded by `test_mul`.
fn smith_row(instance_id: &str, needle: &str, image: &str) -> String {
    serde_json::json!({
        "instance_id": instance_id,
        "repo": "swesmith/acme__calc.1a2b3c4d",
        "patch": diff_of(SWE_IMAGE, BREAK_MUL),
        "FAIL_TO_PASS": ["tests/test_calc.py::test_mul"],
        "PASS_TO_PASS": ["tests/test_calc.py::test_add", "tests/test_calc.py::test_clamp_low"],
        "image_name": image,
        "problem_statement": format!("{needle} mul(2, 3) returns 5 instead of 6."),
    })
    .to_string()
}

/// A campaign over several task files, each with its format.
fn campaign(name: &str, sources: &[(&str, &str, Vec<String>)], llm: &FakeLlm) -> Fixture {
    require_swe_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut entries = Vec::new();
    for (file, format, rows) in sources {
        std::fs::write(dir.path().join(file), rows.join("\n") + "\n").expect("write tasks");
        entries.push(format!("{{ path = \"{file}\", format = \"{format}\" }}"));
    }
    let text = format!(
        "name = \"{name}\"\ntasks = [{}]\nbudget_usd = 5.0\n{}\n[storage]\nkind = \"local\"\ndir = \"state\"\n",
        entries.join(", "),
        fake_model(&llm.url, "")
    );
    let path = dir.path().join("campaign.toml");
    std::fs::write(&path, text).expect("write campaign");
    Fixture {
        dir,
        name: name.to_owned(),
        campaign: path,
    }
}

async fn facts_of(fx: &Fixture, record: &TrajectoryRecord) -> TrajectoryFacts {
    let objects = Arc::new(LocalObjectStore::new(&fx.state_dir().join("objects")));
    let bytes = objects
        .get(&facts_key(&record.campaign, &record.trajectory_id))
        .await
        .expect("the facts written at commit");
    serde_json::from_slice(&bytes).expect("facts parse")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_task_format_starts_from_one_commit_and_nothing_after_it() {
    require_swe_image();
    let inspect = |needle: &str| Script::new(needle, &[INSPECT, "submit"]);
    let llm = FakeLlm::start(vec![
        inspect("[native]"),
        inspect("[swe-bench]"),
        inspect("[swe-gym]"),
        inspect("[swe-rebench]"),
        inspect("[smith-rebuilt]"),
        inspect("[smith-branch]"),
    ]);
    let native = serde_json::json!({
        "instance_id": "native-history",
        "image": HISTORY_IMAGE,
        "problem_statement": "[native] clamp never caps at high.",
        "eval": "cd /testbed && python3 -m pytest -q tests",
    })
    .to_string();
    let rebench = clamp_row(
        "acme__calc-3",
        "[swe-rebench]",
        serde_json::json!({"install_config": {"test_cmd": "pytest -rA", "log_parser": "pytest"}}),
    );
    let fx = campaign(
        "integrity-formats",
        &[
            ("native.jsonl", "native", vec![native]),
            (
                "bench.jsonl",
                "swe-bench",
                vec![clamp_row(
                    "pallets__flask-1",
                    "[swe-bench]",
                    serde_json::json!({}),
                )],
            ),
            (
                "gym.jsonl",
                "swe-gym",
                vec![clamp_row(
                    "acme__calc-2",
                    "[swe-gym]",
                    serde_json::json!({"test_cmd": "pytest -rA", "log_parser": "pytest"}),
                )],
            ),
            ("rebench.jsonl", "swe-rebench", vec![rebench]),
            (
                "smith.jsonl",
                "swe-smith",
                vec![
                    smith_row(
                        "acme__calc.1a2b3c4d.func_pm_op_swap__rebuilt",
                        "[smith-rebuilt]",
                        SWE_IMAGE,
                    ),
                    smith_row(BRANCH_INSTANCE, "[smith-branch]", HISTORY_IMAGE),
                ],
            ),
        ],
        &llm,
    );
    fx.run_ok(&["-j", "3"]);
    let results = fx.results().await;
    assert_eq!(results.records.len(), 6, "{:?}", results.dead);
    for record in &results.records {
        let what = &record.instance_id;
        let seen = &record.steps[0].observation;
        assert_eq!(
            section(seen, "commits"),
            ["1"],
            "{what}: one commit\n{seen}"
        );
        assert_eq!(
            section(seen, "refs"),
            ["refs/heads/main"],
            "{what}: one branch, no tags or remotes\n{seen}"
        );
        assert!(
            section(seen, "stash").is_empty(),
            "{what}: no stash\n{seen}"
        );
        assert!(
            section(seen, "reflog").is_empty(),
            "{what}: no reflog\n{seen}"
        );
        let gitdir: BTreeSet<&str> = section(seen, "gitdir").into_iter().collect();
        for gone in [
            "ORIG_HEAD",
            "FETCH_HEAD",
            "logs",
            "packed-refs",
            "refs/stash",
        ] {
            assert!(
                !gitdir.contains(gone),
                "{what}: .git/{gone} is left\n{seen}"
            );
        }
        // Every object in the store, loose or packed, belongs to the starting commit.
        let objects: BTreeSet<&str> = section(seen, "objects").into_iter().collect();
        let reachable: BTreeSet<&str> = section(seen, "reachable").into_iter().collect();
        assert!(!objects.is_empty(), "{what}\n{seen}");
        assert_eq!(
            objects, reachable,
            "{what}: only the start's objects\n{seen}"
        );
        let environment = record.environment.as_ref().expect("the environment");
        assert_eq!(
            section(seen, "head").first().copied(),
            environment.start_commit.as_deref(),
            "{what}: the record names the commit the agent saw"
        );
        assert_eq!(environment.workdir, "/testbed");
        assert_eq!(environment.harness_hash.len(), 64);
    }
    // Samples of one task start from the same commit; the SWE-smith instances start from
    // the bug with the F2P tests removed, both ways they are built.
    let start = |id: &str| {
        results
            .record(id, 0)
            .environment
            .as_ref()
            .and_then(|e| e.start_commit.clone())
    };
    assert_eq!(
        start("acme__calc.1a2b3c4d.func_pm_op_swap__rebuilt"),
        start(BRANCH_INSTANCE),
        "the rebuilt and the carried SWE-smith branch hold the same starting tree"
    );
    assert_ne!(start("pallets__flask-1"), Some(base_commit()));
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_that_read_the_answer_out_of_history_are_unresolved_and_flagged() {
    require_swe_image();
    let llm = FakeLlm::start(vec![
        // SWE-bench clone: the later release tag holds the fix.
        Script::new(
            "[bench-cheat]",
            &[
                "git log --all --oneline",
                "git checkout v1.1 -- calc.py",
                "submit",
            ],
        ),
        Script::new(
            "[bench-honest]",
            &["git log --oneline -3", FIX, "git diff", "submit"],
        ),
        // SWE-smith rebuilt: the commit before "Bug Patch" holds clean code.
        Script::new(
            "[smith-cheat]",
            &["git checkout HEAD~2 -- calc.py", "submit"],
        ),
        Script::new(
            "[smith-honest]",
            &["grep -n 'a + b' calc.py", FIX_MUL, "submit"],
        ),
        // SWE-smith instance branch in the image: main holds clean code.
        Script::new(
            "[branch-cheat]",
            &[
                "git branch -a",
                "git show HEAD~2:calc.py > calc.py",
                "submit",
            ],
        ),
    ]);
    let fx = campaign(
        "integrity-cheats",
        &[
            (
                "bench.jsonl",
                "swe-bench",
                vec![
                    clamp_row("pallets__flask-11", "[bench-cheat]", serde_json::json!({})),
                    clamp_row("pallets__flask-12", "[bench-honest]", serde_json::json!({})),
                ],
            ),
            (
                "smith.jsonl",
                "swe-smith",
                vec![
                    smith_row(
                        "acme__calc.1a2b3c4d.func_pm_op_swap__cheat",
                        "[smith-cheat]",
                        SWE_IMAGE,
                    ),
                    smith_row(
                        "acme__calc.1a2b3c4d.func_pm_op_swap__honest",
                        "[smith-honest]",
                        SWE_IMAGE,
                    ),
                    smith_row(BRANCH_INSTANCE, "[branch-cheat]", HISTORY_IMAGE),
                ],
            ),
        ],
        &llm,
    );
    fx.run_ok(&["-j", "3"]);
    let results = fx.results().await;
    assert_eq!(results.records.len(), 5, "{:?}", results.dead);

    for (id, signal) in [
        ("pallets__flask-11", Signal::History),
        (
            "acme__calc.1a2b3c4d.func_pm_op_swap__cheat",
            Signal::History,
        ),
        (BRANCH_INSTANCE, Signal::History),
    ] {
        let record = results.record(id, 0);
        let verification = record.verification.as_ref().expect("verified");
        assert!(
            !verification.resolved,
            "{id}: the answer was not in the sandbox, so the cheat cannot resolve it: {:?}\n{}",
            record.steps, record.patch
        );
        let facts = facts_of(&fx, record).await;
        assert!(
            facts.hack_signals.iter().any(|f| f.signal == signal),
            "{id}: flagged {signal}: {:?}",
            facts.hack_signals
        );
    }
    for id in [
        "pallets__flask-12",
        "acme__calc.1a2b3c4d.func_pm_op_swap__honest",
    ] {
        let record = results.record(id, 0);
        let verification = record.verification.as_ref().expect("verified");
        assert!(verification.resolved, "{id}: {verification:?}");
        let facts = facts_of(&fx, record).await;
        assert!(
            facts.hack_signals.is_empty(),
            "{id}: an honest fix is not flagged: {:?}",
            facts.hack_signals
        );
    }

    // The suspects are left out of the accepted export; the honest fixes are in it.
    let out_dir = fx.dir.path().join("export");
    let out = synthfleet(
        &[
            "export",
            fx.campaign_arg(),
            "--out",
            out_dir.to_str().expect("utf-8"),
        ],
        &[("FAKE_LLM_KEY", SECRET)],
    );
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = synthfleet(&["report", fx.campaign_arg(), "--format", "json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("report json");
    assert_eq!(
        report["integrity"]["suspect"].as_u64(),
        Some(3),
        "three suspects: {}",
        report["integrity"]
    );
}
