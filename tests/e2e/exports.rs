//! Preference and RL exports end to end: a real campaign whose tasks have resolved and
//! unresolved samples (a model that fixes them against one that gives up), exported with
//! `synthfleet export --format pairs` and `--format rl`, loaded back by Hugging Face
//! `datasets`, and every row checked against the stored records.

use crate::quality::{ok, python};
use crate::{Fixture, fake_model, path_str, standard_tasks, synthfleet};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use synthfleet_core::trajectory::{ChatMessage, Role, TrajectoryRecord};
use synthfleet_tests::fake_llm::{FakeLlm, Script};

/// Samples of each task: the first on the weak model, the next two on the strong one.
const SAMPLES: u32 = 3;

/// Three tasks × three samples. The weak model looks and gives up (unresolved); the
/// strong one fixes median and leap and gets bsearch wrong.
fn mixed_campaign(name: &str) -> (FakeLlm, FakeLlm, Fixture) {
    let (tasks, good_scripts) = standard_tasks();
    let weak = FakeLlm::start(
        ["[median]", "[leap]", "[bsearch]"]
            .into_iter()
            .map(|needle| Script::new(needle, &["ls", "cat *.py", "submit"]))
            .collect(),
    );
    let strong = FakeLlm::start(good_scripts);
    let model = |name: &str, url: &str| {
        fake_model(url, "").replace("name = \"fake\"", &format!("name = \"{name}\""))
    };
    let body = format!(
        "samples_per_task = {SAMPLES}\nbudget_usd = 1.0\n\n{}\n{}\n[[variants]]\nname = \"weak\"\nmodel = \"weak\"\n\n[[variants]]\nname = \"strong\"\nmodel = \"strong\"\nweight = 2\n",
        model("weak", &weak.url),
        model("strong", &strong.url)
    );
    let fx = Fixture::new(name, &tasks, &body);
    fx.run_ok(&["--concurrency", "2"]);
    (weak, strong, fx)
}

/// Exports `format` into `out` and loads it with `datasets`: every row as JSON.
fn export_and_load(fx: &Fixture, format: &str, out: &Path) -> Vec<Value> {
    let exported = ok(
        &synthfleet(
            &[
                "export",
                fx.campaign_arg(),
                "--format",
                format,
                "--out",
                path_str(out),
            ],
            &[],
        ),
        &format!("export --format {format}"),
    );
    assert!(exported.contains("README.md"), "{exported}");
    let rows = python(
        r#"
import glob, json, sys
from datasets import load_dataset
files = sorted(glob.glob(sys.argv[1] + "/data/train-*.parquet"))
ds = load_dataset("parquet", data_files=files, split="train")
print(json.dumps([row for row in ds]))
"#,
        &[path_str(out)],
    );
    serde_json::from_str(rows.trim()).expect("rows as JSON")
}

/// Messages as (role, content) — what a chat template renders.
fn turns(messages: &[ChatMessage]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                serde_json::json!([serde_json::to_value(m.role).unwrap_or_default(), m.content])
            })
            .collect(),
    )
}

fn loaded_turns(messages: &Value) -> Value {
    Value::Array(
        messages
            .as_array()
            .expect("a list of messages")
            .iter()
            .map(|m| serde_json::json!([m["role"], m["content"]]))
            .collect(),
    )
}

fn steps(r: &TrajectoryRecord) -> u32 {
    r.totals.n_steps
}

#[tokio::test(flavor = "multi_thread")]
async fn pairs_and_rl_rows_load_in_datasets_and_match_the_records() {
    let (_weak, _strong, fx) = mixed_campaign("e2e-exports");
    let results = fx.results().await;
    assert_eq!(results.records.len(), 9);
    let by_id: BTreeMap<&str, &TrajectoryRecord> = results
        .records
        .iter()
        .map(|r| (r.trajectory_id.as_str(), r))
        .collect();
    let resolved = |r: &TrajectoryRecord| r.verification.as_ref().map(|v| v.resolved);
    // The campaign is what the test needs: per task, resolved and unresolved samples.
    for r in &results.records {
        let expect = r.sample_index > 0 && r.instance_id != "bsearch";
        assert_eq!(
            resolved(r),
            Some(expect),
            "{} #{}",
            r.instance_id,
            r.sample_index
        );
    }

    // --- Pairs: (prompt, chosen, rejected) in TRL's conversational format.
    let rows = export_and_load(&fx, "pairs", &fx.dir.path().join("pairs"));
    // median and leap: two resolved, one unresolved each → one pair; bsearch: none.
    assert_eq!(rows.len(), 2, "{rows:?}");
    let mut used = BTreeSet::new();
    for row in &rows {
        let chosen = by_id[row["chosen_trajectory_id"].as_str().expect("chosen id")];
        let rejected = by_id[row["rejected_trajectory_id"].as_str().expect("rejected id")];
        assert!(used.insert(&chosen.trajectory_id) && used.insert(&rejected.trajectory_id));
        assert_eq!(row["instance_id"], chosen.instance_id.as_str());
        assert_eq!(rejected.instance_id, chosen.instance_id, "the same task");
        assert_eq!(
            (resolved(chosen), resolved(rejected)),
            (Some(true), Some(false))
        );
        assert_eq!(
            (chosen.model.as_str(), rejected.model.as_str()),
            ("strong", "weak")
        );
        let reward = |r: &TrajectoryRecord| r.verification.as_ref().map(|v| v.reward);
        assert_eq!(row["chosen_reward"].as_f64(), reward(chosen));
        assert_eq!(row["rejected_reward"].as_f64(), reward(rejected));
        assert_eq!(
            row["chosen_n_steps"].as_u64(),
            Some(u64::from(steps(chosen)))
        );
        assert_eq!(
            row["rejected_n_steps"].as_u64(),
            Some(u64::from(steps(rejected)))
        );
        // The rule: of the two resolved samples (equal steps), the smaller id.
        let first_resolved = results
            .records
            .iter()
            .filter(|r| r.instance_id == chosen.instance_id && resolved(r) == Some(true))
            .map(|r| (steps(r), r.trajectory_id.as_str()))
            .min();
        assert_eq!(
            first_resolved,
            Some((steps(chosen), chosen.trajectory_id.as_str()))
        );
        // The prompt is the conversation up to the task; each side is the rest of its own.
        let split = chosen
            .messages
            .iter()
            .position(|m| m.role == Role::User)
            .expect("a user message")
            + 1;
        assert_eq!(
            loaded_turns(&row["prompt"]),
            turns(&chosen.messages[..split])
        );
        assert_eq!(
            turns(&rejected.messages[..split]),
            turns(&chosen.messages[..split]),
            "both saw the same prompt"
        );
        assert_eq!(
            loaded_turns(&row["chosen"]),
            turns(&chosen.messages[split..])
        );
        assert_eq!(
            loaded_turns(&row["rejected"]),
            turns(&rejected.messages[split..])
        );
        assert_eq!(row["chosen"][0]["role"], "assistant");
        assert!(
            row["chosen"][0]["tool_calls"][0]["function"]["name"].is_string(),
            "tool calls survive: {}",
            row["chosen"][0]
        );
        assert_eq!(
            row["tools"].as_str().map(|t| t.contains("\"bash\"")),
            Some(true)
        );
    }
    let card = std::fs::read_to_string(fx.dir.path().join("pairs/README.md")).expect("card");
    assert!(
        card.contains("## Pairs") && card.contains("- Rows: 2 (preference pairs"),
        "{card}"
    );

    // --- RL: one row per verified trajectory, grouped by task and round.
    let rows = export_and_load(&fx, "rl", &fx.dir.path().join("rl"));
    let verified = results
        .records
        .iter()
        .filter(|r| r.verification.is_some())
        .count();
    assert_eq!(rows.len(), verified);
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        let r = by_id[row["trajectory_id"].as_str().expect("trajectory id")];
        let group = row["group_id"].as_str().expect("group id");
        // A fixed campaign draws a task's samples in one round.
        assert_eq!(
            group,
            format!("{}#r{}", r.instance_id, r.sample_index / SAMPLES)
        );
        assert_eq!(row["round"], 0);
        *groups.entry(group).or_default() += 1;
        let v = r.verification.as_ref().expect("verified");
        assert_eq!(row["reward"].as_f64(), Some(v.reward));
        assert_eq!(row["resolved"].as_bool(), Some(v.resolved));
        assert_eq!(row["n_steps"].as_u64(), Some(u64::from(r.totals.n_steps)));
        assert_eq!(
            row["llm_calls"].as_u64(),
            Some(u64::from(r.totals.llm_calls))
        );
        assert_eq!(row["input_tokens"].as_u64(), Some(r.totals.input_tokens));
        assert_eq!(row["output_tokens"].as_u64(), Some(r.totals.output_tokens));
        let prompt = |i: usize| {
            let s = &r.steps[i];
            s.input_tokens + s.cache_read_tokens + s.cache_write_tokens
        };
        let last = r.steps.len() - 1;
        assert!(prompt(0) > 0, "the fake server counts usage");
        assert_eq!(row["prompt_tokens"].as_u64(), Some(prompt(0)));
        assert_eq!(
            row["context_tokens"].as_u64(),
            Some(prompt(last) + r.steps[last].output_tokens)
        );
        assert_eq!(
            row["messages"].as_array().map(Vec::len),
            Some(r.messages.len())
        );
        assert_eq!(loaded_turns(&row["messages"]), turns(&r.messages));
    }
    assert_eq!(
        groups,
        BTreeMap::from([("bsearch#r0", 3), ("leap#r0", 3), ("median#r0", 3)])
    );
}
