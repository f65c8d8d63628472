//! The `edit` scaffold end to end, under both protocols: the file editor views, creates,
//! replaces, inserts and undoes in a real sandbox; malformed or refused edits come back as
//! observations, never as a crashed rollout; the fixes are verified like any other.

use crate::{Fixture, fake_model, standard_tasks};
use synthfleet_tests::fake_llm::{FakeLlm, Script};

fn edit(arguments: serde_json::Value) -> String {
    format!("edit:{arguments}")
}

async fn edit_scaffold_solves_tasks(protocol: &str) {
    let (tasks, _) = standard_tasks();
    let tasks = tasks[..2].to_vec();
    let median = [
        edit(serde_json::json!({"command": "view", "path": "stats.py", "view_range": [10, -1]})),
        // Ambiguous, missing, malformed: observations and a format error.
        edit(
            serde_json::json!({"command": "str_replace", "path": "stats.py", "old_str": "raise ValueError", "new_str": "raise"}),
        ),
        edit(
            serde_json::json!({"command": "str_replace", "path": "nope.py", "old_str": "a", "new_str": "b"}),
        ),
        edit(serde_json::json!({"command": "view"})),
        edit(serde_json::json!({
            "command": "str_replace",
            "path": "stats.py",
            "old_str": "    return ordered[middle]\n",
            "new_str": "    if len(ordered) % 2:\n        return ordered[middle]\n    return (ordered[middle - 1] + ordered[middle]) / 2\n"
        })),
        "python3 -m unittest -q test_stats".to_owned(),
        "submit".to_owned(),
    ];
    let leap = [
        edit(
            serde_json::json!({"command": "create", "path": "notes/NOTES.md", "file_text": "scratch\n"}),
        ),
        edit(serde_json::json!({"command": "undo_edit", "path": "notes/NOTES.md"})),
        edit(
            serde_json::json!({"command": "insert", "path": "calendar_utils.py", "insert_line": 3, "new_str": "# Gregorian: every 4 years, not every 100, every 400."}),
        ),
        edit(serde_json::json!({
            "command": "str_replace",
            "path": "calendar_utils.py",
            "old_str": "return year % 4 == 0\n",
            "new_str": "return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)\n"
        })),
        "submit".to_owned(),
    ];
    let script = |needle: &str, actions: &[String]| {
        Script::new(
            needle,
            &actions.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let llm = FakeLlm::start(vec![script("[median]", &median), script("[leap]", &leap)]);
    let body = format!(
        "budget_usd = 1.0\n{}\n[scaffold]\nkind = \"edit\"\nprotocol = \"{protocol}\"\n",
        fake_model(&llm.url, "")
    );
    let fx = Fixture::new(&format!("e2e-edit-{protocol}"), &tasks, &body);
    fx.run_ok(&[]);
    let results = fx.results().await;

    let m = results.record("median", 0);
    assert_eq!(m.scaffold.name, "edit");
    assert!(
        m.verification.as_ref().is_some_and(|v| v.resolved),
        "{:?}",
        m.steps
    );
    assert!(m.steps[0].observation.contains("return ordered[middle]"));
    assert_eq!(m.steps[0].tool.as_deref(), Some("str_replace_editor"));
    assert_eq!(m.steps[1].exit_code, Some(1));
    assert!(
        m.steps[1].observation.contains("occurs 2 times"),
        "{}",
        m.steps[1].observation
    );
    assert_eq!(m.steps[2].exit_code, Some(1));
    assert!(
        m.steps[2].observation.contains("no such file"),
        "{}",
        m.steps[2].observation
    );
    assert!(m.steps[3].format_error, "{}", m.steps[3].observation);
    assert!(
        m.steps[3].observation.contains("path"),
        "{}",
        m.steps[3].observation
    );
    assert_eq!(m.steps[4].exit_code, Some(0));
    assert_eq!(m.steps[5].tool, None, "a shell command names no tool");
    if protocol == "tool_calls" {
        let names: Vec<&str> = m
            .tools
            .iter()
            .filter_map(|t| t["function"]["name"].as_str())
            .collect();
        assert_eq!(names, ["bash", "str_replace_editor", "submit"]);
    }

    let l = results.record("leap", 0);
    assert!(l.verification.as_ref().is_some_and(|v| v.resolved));
    assert!(
        l.steps.iter().take(4).all(|s| s.exit_code == Some(0)),
        "{:?}",
        l.steps
    );
    assert!(
        !l.patch.contains("NOTES.md"),
        "the undone creation left nothing: {}",
        l.patch
    );
    assert!(l.patch.contains("+# Gregorian"), "{}", l.patch);
    assert!(l.patch.contains("year % 400 == 0"), "{}", l.patch);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edit_scaffold_solves_tasks_with_tool_calls() {
    edit_scaffold_solves_tasks("tool_calls").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edit_scaffold_solves_tasks_in_text_mode() {
    edit_scaffold_solves_tasks("text").await;
}
