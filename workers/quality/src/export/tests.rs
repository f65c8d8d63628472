//! Preference pairs and RL rows on stored campaigns with known answers, read back by
//! DuckDB (a Parquet reader other than the writer), and every format's columns against
//! its rows' fields.

use super::{ExportOptions, Exported, Filter, Format, export, export_row, pairs, rl};
use crate::tests::{Stored, record, stored};
use crate::{Item, QualityError};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use synthfleet_core::codec;
use synthfleet_core::trajectory::{ErrorKind, ExitStatus, TrajectoryRecord};

/// A trajectory of `steps` distinct commands (no loop, no duplicate of another).
fn run(
    id: &str,
    task: &str,
    model: &str,
    steps: usize,
    resolved: bool,
    sample: i64,
) -> TrajectoryRecord {
    let actions: Vec<String> = (0..steps).map(|i| format!("cat {id}-{i}.py")).collect();
    let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
    record(id, task, model, &actions, resolved, sample)
}

/// A trajectory that ended before verification (an infrastructure error): no reward.
fn unverified(id: &str, task: &str, steps: usize, sample: i64) -> TrajectoryRecord {
    let mut r = run(id, task, "m2", steps, false, sample);
    r.verification = None;
    r.exit_status = Some(ExitStatus::Error(ErrorKind::Sandbox));
    r
}

fn options(format: Format, filter: Filter, out: &Path) -> ExportOptions {
    ExportOptions {
        format,
        filter,
        out: out.to_owned(),
        anonymize: true,
        rows_per_shard: 100,
        since: None,
    }
}

/// The rows of an export's shards, in file order, as DuckDB reads them.
fn read_back(out: &Path, select: &str) -> Vec<Value> {
    let ds = crate::dataset::Dataset::new().expect("duckdb");
    ds.query(&format!(
        "SELECT {select} FROM read_parquet('{}')",
        crate::dataset::sql_path(&out.join("data/train-*.parquet"))
    ))
    .expect("read back")
}

async fn known_pairs() -> Stored {
    let mut other_prompt = run("u-g1", "gamma", "m2", 2, false, 11);
    other_prompt.scaffold.template_hash = "other-templates".into();
    stored(vec![
        run("r-a1", "alpha", "m1", 5, true, 1),
        run("r-a2", "alpha", "m1", 3, true, 2),
        run("r-a3", "alpha", "m1", 8, true, 3),
        run("u-a1", "alpha", "m2", 4, false, 4),
        run("u-a2", "alpha", "m2", 9, false, 5),
        // Closest of all to r-a2, but never verified: not a candidate.
        unverified("u-a3", "alpha", 3, 6),
        // Nothing to pair with.
        run("r-b1", "beta", "m1", 2, true, 7),
        // Another prompt (templates): not comparable.
        run("r-g1", "gamma", "m1", 2, true, 10),
        other_prompt,
    ])
    .await
}

#[tokio::test]
async fn pairs_match_each_resolved_trajectory_with_the_closest_unused_unresolved_one() {
    let known = known_pairs().await;
    let data = &known.data;
    let a = data.assess();
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = export(
        data,
        &a,
        &known.store,
        &options(Format::Pairs, Filter::All, dir.path()),
        &|_, _| {},
    )
    .await
    .expect("export");
    // Shortest resolved first: r-a2 (3 steps) takes u-a1 (4), r-a1 (5) takes u-a2 (9),
    // and r-a3 finds none left.
    assert_eq!(summary.rows, 2);
    let rows = read_back(
        dir.path(),
        "instance_id, chosen_trajectory_id AS c, rejected_trajectory_id AS r, chosen_reward AS cr, rejected_reward AS rr, chosen_n_steps AS cn, rejected_n_steps AS rn, chosen_model AS cm, [m.role FOR m IN prompt] AS prompt_roles, prompt[2].content AS task, len(chosen) AS chosen_len, len(rejected) AS rejected_len, chosen[1].role AS first, tools, scaffold, campaign",
    );
    let ids: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["c"].as_str().unwrap_or(""), r["r"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(ids, [("r-a2", "u-a1"), ("r-a1", "u-a2")]);
    for row in &rows {
        assert_eq!(row["instance_id"], "alpha");
        assert_eq!(
            (row["cr"].as_f64(), row["rr"].as_f64()),
            (Some(1.0), Some(0.0))
        );
        assert_eq!(row["cm"], "m1");
        assert_eq!(row["prompt_roles"], json!(["system", "user"]));
        assert_eq!(row["task"], "Fix alpha. Contact <email>", "anonymised");
        // Each step is an assistant message and its observation, after the prompt.
        assert_eq!(
            row["chosen_len"].as_u64(),
            row["cn"].as_u64().map(|n| 2 * n)
        );
        assert_eq!(
            row["rejected_len"].as_u64(),
            row["rn"].as_u64().map(|n| 2 * n)
        );
        assert_eq!(row["first"], "assistant");
        assert_eq!(
            (
                row["tools"].as_str(),
                row["scaffold"].as_str(),
                row["campaign"].as_str()
            ),
            (Some("[]"), Some("bash@1"), Some("known"))
        );
    }
    let card = std::fs::read_to_string(dir.path().join("README.md")).expect("card");
    assert!(
        card.contains("- Rows: 2 (preference pairs, filter `all`")
            && card.contains("## Pairs")
            && card.contains("| `chosen` | list<struct> |"),
        "{card}"
    );

    // `--filter accepted` restricts the chosen side to accepted trajectories.
    let accepted: BTreeSet<&str> = a
        .iter()
        .filter(|x| x.accepted)
        .map(|x| x.trajectory_id.as_str())
        .collect();
    let candidates: Vec<(&Item, &crate::stages::Assessment)> = data
        .items
        .iter()
        .zip(&a)
        .filter(|(i, _)| i.meta.resolved.is_some())
        .collect();
    for pair in pairs::plan(&candidates, Filter::Accepted) {
        assert!(accepted.contains(pair.chosen.0.meta.summary.trajectory_id.as_str()));
    }

    // Filters and times that make no pairs are refused, with what to do.
    for (filter, since) in [
        (Filter::Resolved, None),
        (Filter::All, Some(chrono::Utc::now())),
    ] {
        let err = export(
            data,
            &a,
            &known.store,
            &ExportOptions {
                since,
                ..options(Format::Pairs, filter, dir.path())
            },
            &|_, _| {},
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(
                err,
                super::ExportError::Quality(QualityError::InvalidOption { .. })
            ),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_campaign_without_pairs_exports_an_empty_dataset_with_its_schema() {
    let known = stored(vec![run("r-b1", "beta", "m1", 2, true, 1)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = export(
        &known.data,
        &known.data.assess(),
        &known.store,
        &options(Format::Pairs, Filter::All, dir.path()),
        &|_, _| {},
    )
    .await
    .expect("export");
    assert_eq!(
        (summary.rows, summary.files.len()),
        (0, 2),
        "{:?}",
        summary.files
    );
    let rows = read_back(dir.path(), "count(*) AS n, count(chosen) AS chosen");
    assert_eq!(rows, [json!({"n": 0, "chosen": 0})]);
}

#[tokio::test]
async fn rl_rows_are_the_verified_trajectories_with_their_groups_and_token_counts() {
    let mut first = run("t0", "alpha", "m1", 3, true, 0);
    first.steps[0].input_tokens = 1_234;
    first.steps[0].cache_read_tokens = 16;
    first.steps[0].cache_write_tokens = 4;
    first.steps[2].input_tokens = 3_000;
    first.steps[2].output_tokens = 77;
    let mut known = stored(vec![
        first,
        run("t1", "alpha", "m2", 2, false, 1),
        run("t2", "alpha", "m1", 4, true, 2),
        unverified("t3", "alpha", 2, 3),
        run("t4", "alpha", "m2", 1, false, 4),
        run("t5", "beta", "m1", 2, true, 0),
    ])
    .await;
    // Adaptive sampling, rounds of 2: samples 0-1 are round 0, 2-3 round 1, 4 round 2.
    known.data.config = toml::from_str(
        "name = \"known\"\ntasks = [\"t.jsonl\"]\nbudget_usd = 1.0\nsamples_per_task = 4\n[sampling]\nstrategy = \"adaptive\"\nround_size = 2\n[[models]]\nname = \"m1\"\nprovider = \"replay\"\n",
    )
    .expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = export(
        &known.data,
        &known.data.assess(),
        &known.store,
        &options(Format::Rl, Filter::All, dir.path()),
        &|_, _| {},
    )
    .await
    .expect("export");
    assert_eq!(
        summary.rows, 5,
        "every verified trajectory, the unverified left out"
    );
    let rows = read_back(
        dir.path(),
        "trajectory_id AS id, group_id, round, reward, resolved, prompt_tokens, context_tokens, llm_calls, n_steps, output_tokens, len(messages) AS messages",
    );
    let got: Vec<(&str, &str, u64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or(""),
                r["group_id"].as_str().unwrap_or(""),
                r["round"].as_u64().unwrap_or(99),
                r["reward"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("t0", "alpha#r0", 0, 1.0),
            ("t1", "alpha#r0", 0, 0.0),
            ("t2", "alpha#r1", 1, 1.0),
            ("t4", "alpha#r2", 2, 0.0),
            ("t5", "beta#r0", 0, 1.0),
        ]
    );
    // The first call's whole prompt; the last call's prompt and completion.
    assert_eq!(
        (
            rows[0]["prompt_tokens"].as_u64(),
            rows[0]["context_tokens"].as_u64(),
            rows[0]["llm_calls"].as_u64(),
            rows[0]["n_steps"].as_u64(),
            rows[0]["messages"].as_u64(),
        ),
        (Some(1_254), Some(3_077), Some(3), Some(3), Some(8))
    );
    assert_eq!(
        (
            rows[1]["prompt_tokens"].as_u64(),
            rows[1]["context_tokens"].as_u64()
        ),
        (Some(1_000), Some(1_100))
    );
    let card = std::fs::read_to_string(dir.path().join("README.md")).expect("card");
    assert!(card.contains("## Groups and rewards") && card.contains("| `group_id` | string |"));
}

/// The keys a row serialises.
fn keys<T: serde::Serialize>(row: &T) -> BTreeSet<String> {
    let value = serde_json::to_value(row).expect("a row serialises");
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// What an export reads of `record`, as it reads it from the stored bytes.
fn exported(record: &TrajectoryRecord) -> Exported {
    let encoded = codec::encode(record).expect("encode");
    codec::decode_as(&record.trajectory_id, &encoded.bytes, &encoded.sha256).expect("decode")
}

/// The export's view of a record holds what the whole record does, from the same bytes:
/// a field renamed or defaulted in the record and not in the view would fail here.
#[test]
fn the_exports_view_of_a_record_is_the_records_own() {
    let mut full = run("v1", "alpha", "m1", 3, true, 0);
    full.tools = vec![json!({"type": "function", "function": {"name": "bash"}})];
    full.image_digest = Some("sha256:abc".into());
    full.steps[0].cache_read_tokens = 7;
    full.steps[2].cache_write_tokens = 5;
    let view = exported(&full);
    assert_eq!(view.messages, full.messages);
    assert_eq!(view.tools, full.tools);
    assert_eq!(view.patch, full.patch);
    assert_eq!(view.scaffold.template_hash, full.scaffold.template_hash);
    assert_eq!(view.image_digest, full.image_digest);
    assert_eq!(view.totals.llm_calls, full.totals.llm_calls);
    let first = &full.steps[0];
    let last = &full.steps[2];
    assert_eq!(
        serde_json::to_value(rl::Tokens::of(&view)).expect("tokens"),
        json!({
            "prompt_tokens": first.input_tokens + 7,
            "context_tokens": last.input_tokens + 5 + last.output_tokens,
            "llm_calls": full.totals.llm_calls,
        })
    );
    // A record of a newer schema is refused by the view as by the record.
    let mut newer = full.clone();
    newer.schema_version += 1;
    let encoded = codec::encode(&newer).expect("encode");
    let refused = codec::decode_as::<Exported>("newer", &encoded.bytes, &encoded.sha256)
        .expect_err("a newer schema");
    assert!(
        matches!(refused, codec::CodecError::FutureSchema { .. }),
        "{refused}"
    );
}

/// Strict decoding refuses a field without a column; this keeps every column filled (a
/// column without a field would be written as nulls).
#[tokio::test]
async fn every_formats_columns_are_its_rows_fields() {
    let mut resolved = run("r1", "alpha", "m1", 2, true, 1);
    resolved.variant = Some("arm".into());
    let mut unresolved = run("u1", "alpha", "m1", 2, false, 2);
    unresolved.variant = Some("arm".into());
    let known = stored(vec![resolved.clone(), unresolved.clone()]).await;
    let a = known.data.assess();
    let item = |i: usize| (&known.data.items[i], &a[i]);
    let row = |i: usize, record: TrajectoryRecord| {
        export_row(item(i).0, exported(&record), item(i).1, None, None)
    };
    let names = |format: Format| -> BTreeSet<String> {
        format.columns().iter().map(|c| c.name.to_owned()).collect()
    };
    assert_eq!(keys(&row(0, resolved.clone())), names(Format::Hf));
    let tokens = rl::Tokens::of(&exported(&resolved));
    assert_eq!(
        keys(&rl::RlRow::of(
            &known.data.config,
            tokens,
            row(0, resolved.clone())
        )),
        names(Format::Rl)
    );
    assert_eq!(
        keys(&pairs::PairRow::of(row(0, resolved), row(1, unresolved))),
        names(Format::Pairs)
    );
    for format in [Format::Hf, Format::Rl, Format::Pairs] {
        assert_eq!(
            names(format).len(),
            format.columns().len(),
            "a column of {} is listed twice",
            format.as_str()
        );
    }
}
