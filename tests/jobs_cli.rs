//! `synthfleet-jobs` on bad input: every error says what is wrong and what to do.

use std::process::Command;

fn jobs(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synthfleet-jobs"))
        .args(args)
        .output()
        .expect("run synthfleet-jobs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_state_and_unknown_campaign_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("nothing-here");
    let state = state.to_str().expect("utf-8");
    let (ok, err) = jobs(&["report", "quickstart", "--state-dir", state]);
    assert!(!ok);
    assert!(
        err.contains("no synthfleet state in") && err.contains("run a campaign first"),
        "{err}"
    );

    // An existing state without that campaign.
    let empty = dir.path().join("empty");
    synthfleet_backend::local::Local::open(&empty).expect("create an empty local state");
    let (ok, err) = jobs(&[
        "export",
        "nope",
        "--state-dir",
        empty.to_str().expect("utf-8"),
        "--out",
        dir.path().join("x").to_str().expect("utf-8"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("campaign `nope` not found") && err.contains("synthfleet status"),
        "{err}"
    );

    let (ok, err) = jobs(&["export", "nope", "--format", "csv", "--out", "x"]);
    assert!(!ok);
    assert!(err.contains("csv"), "{err}");
}
