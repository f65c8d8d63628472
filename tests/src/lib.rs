//! The test kit: a fake OpenAI-compatible server, and helpers to drive the real binary.

pub mod fake_llm;
pub mod moto;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The image the tests run tasks in (built by `examples/quickstart/build-image.sh`).
pub const TEST_IMAGE: &str = "synthfleet/quickstart:1";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Panics with the fix when the test image is missing.
pub fn require_test_image() {
    let status = Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        status,
        "test image {TEST_IMAGE} is missing: run examples/quickstart/build-image.sh (or .ci/run) first"
    );
}

/// Builds the `synthfleet` binary once per test run and returns its path.
pub fn synthfleet_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "synthfleet-cli",
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml"))
            .status()
            .expect("running cargo build for the synthfleet binary");
        assert!(status.success(), "building the synthfleet binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("synthfleet")
    })
}

/// A `synthfleet` command with `args`, extra environment and JSON logs.
pub fn synthfleet_command<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> Command {
    let mut command = Command::new(synthfleet_bin());
    command.args(["--log-format", "json"]).args(args).envs(env);
    command
}

/// Runs `synthfleet` with `args`, extra environment and JSON logs, to completion.
pub fn synthfleet(args: &[&str], env: &[(&str, &str)]) -> Output {
    synthfleet_command(args, env.iter().copied())
        .output()
        .expect("running synthfleet")
}

/// One task line on the test image. `project` is a directory under `/tasks`.
pub fn task_line(instance_id: &str, project: &str, problem: &str, eval: &str) -> String {
    serde_json::json!({
        "instance_id": instance_id,
        "image": TEST_IMAGE,
        "problem_statement": problem,
        "workdir": format!("/tasks/{project}"),
        "eval": eval,
    })
    .to_string()
}
