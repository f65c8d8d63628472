//! The test kit: a fake OpenAI-compatible server with fault injection, moto's server with
//! synthfleet's resources, and task fixtures on the test image.

pub mod fake_llm;
pub mod moto;

use std::path::{Path, PathBuf};
use std::process::Command;

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
