//! An experiment end to end (`[[variants]]`): two arms — a model that fixes the tasks on the
//! `edit` scaffold against one that does not, on `bash` — split every task's samples; the
//! records, the report and the export carry the arm, and the report's comparison gives
//! the known rates, intervals and verdict.

use crate::quality::{ok, python};
use crate::{Fixture, path_str, standard_tasks, synthfleet};
use serde_json::Value;
use synthfleet_tests::fake_llm::{FakeLlm, Script};

#[tokio::test(flavor = "multi_thread")]
async fn a_two_arm_experiment_reports_its_known_answer() {
    let (tasks, good_scripts) = standard_tasks();
    // The control's model looks and gives up on every task.
    let bad = FakeLlm::start(
        ["[median]", "[leap]", "[bsearch]"]
            .into_iter()
            .map(|needle| Script::new(needle, &["ls", "submit"]))
            .collect(),
    );
    let good = FakeLlm::start(good_scripts);
    let model = |name: &str, url: &str| {
        format!(
            "[[models]]\nname = \"{name}\"\nprovider = \"openai\"\nmodel = \"fake-coder\"\nendpoint = \"{url}\"\napi_key_env = \"FAKE_LLM_KEY\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\nmax_tokens = 256\n\n"
        )
    };
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 1.0\n\n{}{}[[variants]]\nname = \"control\"\nmodel = \"weak\"\n\n[[variants]]\nname = \"treatment\"\nmodel = \"strong\"\nscaffold = \"edit\"\ntemperature = 0.3\ntemplates = \"treatment-prompts\"\n",
        model("weak", &bad.url),
        model("strong", &good.url)
    );
    let fx = Fixture::new("e2e-experiment", &tasks, &body);
    // The treatment arm brings its own instance prompt.
    let prompts = fx.dir.path().join("treatment-prompts");
    std::fs::create_dir_all(&prompts).expect("a template directory");
    std::fs::write(
        prompts.join("instance.j2"),
        "TREATMENT PROMPT\n{{ problem_statement }}\nThe repository is in {{ workdir }}.",
    )
    .expect("a template");
    fx.run_ok(&[]);

    let results = fx.results().await;
    assert_eq!(results.records.len(), 6);
    for r in &results.records {
        let (arm, model, scaffold) = if r.sample_index == 0 {
            ("control", "weak", "bash")
        } else {
            ("treatment", "strong", "edit")
        };
        assert_eq!(
            (
                r.variant.as_deref(),
                r.model.as_str(),
                r.scaffold.name.as_str()
            ),
            (Some(arm), model, scaffold),
            "{} #{}",
            r.instance_id,
            r.sample_index
        );
        assert_eq!(r.route.as_deref(), Some("variant"));
        assert_eq!(
            r.messages[1]
                .content
                .as_deref()
                .is_some_and(|c| c.starts_with("TREATMENT PROMPT")),
            arm == "treatment",
            "each arm renders its own prompts"
        );
    }
    let hashes: std::collections::BTreeSet<&str> = results
        .records
        .iter()
        .map(|r| r.scaffold.template_hash.as_str())
        .collect();
    assert_eq!(hashes.len(), 2, "the arms' template hashes differ");
    // The treatment's temperature went out with every request; the control's model's own
    // (none) with its.
    assert!(good.requests().iter().all(|r| r["temperature"] == 0.3));
    assert!(
        bad.requests()
            .iter()
            .all(|r| r.get("temperature").is_none())
    );

    let report: Value = serde_json::from_str(&ok(
        &synthfleet(&["report", fx.campaign_arg(), "--format", "json"], &[]),
        "report",
    ))
    .expect("report JSON");
    let arms = report["experiment"]["arms"].as_array().expect("arms");
    assert_eq!(arms[0]["variant"], "control");
    assert_eq!(
        (
            arms[0]["trajectories"].as_u64(),
            arms[0]["resolved"].as_u64()
        ),
        (Some(3), Some(0))
    );
    assert_eq!(arms[1]["variant"], "treatment");
    assert_eq!(
        (
            arms[1]["trajectories"].as_u64(),
            arms[1]["resolved"].as_u64()
        ),
        (Some(3), Some(2))
    );
    // Wilson's 95 % interval of 2 in 3: [0.2077, 0.9385].
    let near = |v: &Value, x: f64| v.as_f64().is_some_and(|v| (v - x).abs() < 1e-3);
    assert!(
        near(&arms[1]["ci_low"], 0.2077) && near(&arms[1]["ci_high"], 0.9385),
        "{}",
        arms[1]
    );
    let cmp = &report["experiment"]["comparisons"][0];
    assert_eq!(
        (cmp["better"].as_u64(), cmp["worse"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(cmp["p_value"].as_f64(), Some(0.5));
    assert_eq!(cmp["significant"], false);
    assert!(
        cmp["verdict"].as_str().is_some_and(|v| v.starts_with(
            "no significant difference between treatment and control (the control): 66.7% vs 0.0%"
        )),
        "{cmp}"
    );
    let variants: Vec<&str> = report["by_variant"]
        .as_array()
        .expect("by_variant")
        .iter()
        .filter_map(|g| g["key"].as_str())
        .collect();
    assert_eq!(variants, ["control", "treatment"]);
    let text = ok(&synthfleet(&["report", fx.campaign_arg()], &[]), "report");
    assert!(
        text.contains("verdict: no significant difference"),
        "{text}"
    );

    let out = fx.dir.path().join("export");
    ok(
        &synthfleet(
            &[
                "export",
                fx.campaign_arg(),
                "--filter",
                "all",
                "--out",
                path_str(&out),
            ],
            &[],
        ),
        "export",
    );
    let arms = python(
        r#"
import glob, sys
import pyarrow.parquet as pq
rows = [r for f in sorted(glob.glob(sys.argv[1] + "/data/*.parquet")) for r in pq.read_table(f).to_pylist()]
print(",".join(sorted(f"{r['variant']}:{r['sample_index']}" for r in rows)))
"#,
        &[path_str(&out)],
    );
    assert_eq!(
        arms.trim(),
        "control:0,control:0,control:0,treatment:1,treatment:1,treatment:1"
    );
}
