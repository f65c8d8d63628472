//! The test kit: a fake OpenAI-compatible server with fault injection, moto's server with
//! synthfleet's resources, and task fixtures on the test image.

pub mod bench;
pub mod conformance;
pub mod counting;
pub mod fake_ecs;
pub mod fake_llm;
pub mod lambda_api;
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

/// The SWE-bench-style image: a repository at /testbed, pytest, a conda stand-in (built by
/// `tests/images/build-swe-fixture.sh`).
pub const SWE_IMAGE: &str = "synthfleet/swe-fixture:1";

/// The same repository cloned with its history, reset to the base commit: the fix sits in
/// a later commit behind a tag, a branch, a remote-tracking ref, a stash and reflogs, and a
/// SWE-smith instance branch is beside it (built with [`SWE_IMAGE`]).
pub const HISTORY_IMAGE: &str = "synthfleet/swe-history:1";

/// The quick start's image with mini-swe-agent from PyPI (built by
/// `tests/images/build-mini-swe-agent.sh`): the external scaffold's real agent.
pub const MINI_SWE_AGENT_IMAGE: &str = "synthfleet/mini-swe-agent:1";

/// Panics with the fix when the mini-swe-agent image is missing.
pub fn require_mini_swe_agent_image() {
    require_image(MINI_SWE_AGENT_IMAGE, "tests/images/build-mini-swe-agent.sh");
}

/// Panics with the fix when the test image is missing.
pub fn require_test_image() {
    require_image(TEST_IMAGE, "examples/quickstart/build-image.sh");
}

/// Panics with the fix when the SWE-style test image is missing.
pub fn require_swe_image() {
    require_image(SWE_IMAGE, "tests/images/build-swe-fixture.sh");
    require_image(HISTORY_IMAGE, "tests/images/build-swe-fixture.sh");
}

fn require_image(image: &str, script: &str) {
    let status = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        status,
        "test image {image} is missing: run {script} (or tests/run.sh) first"
    );
}

/// Runs `script` with bash in a throwaway container of `image` (no network) and returns
/// its stdout: how the tests derive diffs and commits from the image itself.
pub fn in_image(image: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "bash",
            "-c",
            script,
        ])
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "`{script}` in {image} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
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

/// Serves `app` on a free loopback port, on its own thread and runtime (so it serves
/// processes spawned by blocking tests too); stops when the sender is dropped or fires.
pub fn serve(app: axum::Router) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test server runtime");
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("send addr");
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        })
    });
    (rx.recv().expect("test server address"), shutdown)
}
