//! Bad campaign and task files: the error names the file, the line and the field.

use crate::synthfleet;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

const GOOD_TASK: &str = r#"{"instance_id":"a","image":"img","problem_statement":"p"}"#;
const CAMPAIGN: &str = "name = \"c\"\ntasks = [\"tasks.jsonl\"]\nbudget_usd = 1.0\n\n[[models]]\nname = \"r\"\nprovider = \"replay\"\n";

fn stderr_of(args: &[&str]) -> String {
    let out = synthfleet(args, &[]);
    assert!(!out.status.success(), "expected a failure for {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_campaign_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "tasks.jsonl", GOOD_TASK);
    let path = write(
        dir.path(),
        "c.toml",
        &CAMPAIGN.replace("budget_usd = 1.0", "budget_usd = 1.0\nsamples = 3"),
    );
    let err = stderr_of(&["validate", &path]);
    assert!(
        err.contains("c.toml") && err.contains("line 4") && err.contains("samples"),
        "{err}"
    );
}

#[test]
fn bad_task_line_names_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "tasks.jsonl",
        &format!(
            "{GOOD_TASK}\n{}\n",
            r#"{"instance_id":"b","image":"img","problem_statement":"p","timeout_s":-5}"#
        ),
    );
    let path = write(dir.path(), "c.toml", CAMPAIGN);
    let err = stderr_of(&["run", &path]);
    assert!(err.contains("tasks.jsonl:2: field `timeout_s`"), "{err}");
    assert!(
        !dir.path().join(".synthfleet").exists(),
        "nothing is created for a bad campaign"
    );

    write(
        dir.path(),
        "tasks.jsonl",
        &format!("{GOOD_TASK}\n{{\"instance_id\": \n"),
    );
    let err = stderr_of(&["validate", &path]);
    assert!(err.contains("tasks.jsonl:2: not valid JSON"), "{err}");

    write(
        dir.path(),
        "tasks.jsonl",
        r#"{"instance_id":"a","problem_statement":"p"}"#,
    );
    let err = stderr_of(&["validate", &path]);
    assert!(err.contains("tasks.jsonl:1: field `image`"), "{err}");
}

#[test]
fn semantic_campaign_errors_and_missing_keys_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "tasks.jsonl", GOOD_TASK);
    let path = write(
        dir.path(),
        "c.toml",
        &CAMPAIGN.replace("budget_usd = 1.0", "budget_usd = -1.0"),
    );
    assert!(stderr_of(&["validate", &path]).contains("field `budget_usd`"));

    let openai = format!(
        "{CAMPAIGN}\n[[models]]\nname = \"o\"\nprovider = \"openai\"\nendpoint = \"http://127.0.0.1:9/v1\"\napi_key_env = \"SYNTHFLEET_TEST_UNSET_KEY\"\n"
    );
    let path = write(dir.path(), "c.toml", &openai);
    let err = stderr_of(&["validate", &path]);
    assert!(
        err.contains("$SYNTHFLEET_TEST_UNSET_KEY, which is not set"),
        "{err}"
    );
    let missing = stderr_of(&["validate", &dir.path().join("nope.toml").to_string_lossy()]);
    assert!(
        missing.contains("cannot read campaign file") && missing.contains("nope.toml"),
        "{missing}"
    );
}

#[test]
fn missing_task_image_fails_fast_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "tasks.jsonl",
        r#"{"instance_id":"a","image":"synthfleet/not-built-here:0","problem_statement":"p"}"#,
    );
    let path = write(dir.path(), "c.toml", CAMPAIGN);
    let err = stderr_of(&["run", &path]);
    assert!(
        err.contains("not available locally: synthfleet/not-built-here:0"),
        "{err}"
    );
    assert!(
        !dir.path().join(".synthfleet").exists(),
        "no state is created for a run that cannot start"
    );
}
