//! Sandbox hardening against real Docker: isolation, limits, and bombs that leave the
//! worker (this test process) healthy.

use std::collections::BTreeMap;
use std::time::Duration;
use synthfleet_core::campaign::SandboxConfig;
use synthfleet_core::ports::{Sandbox, SandboxError, SandboxProvider, SandboxSpec};
use synthfleet_sandbox::DockerSandboxes;
use synthfleet_tests::{TEST_IMAGE, require_test_image};

fn spec(campaign: &str, limits: SandboxConfig) -> SandboxSpec {
    require_test_image();
    SandboxSpec {
        image: TEST_IMAGE.into(),
        workdir: "/tasks/median".into(),
        labels: BTreeMap::from([("synthfleet.campaign".to_owned(), campaign.to_owned())]),
        limits,
    }
}

async fn run(sandbox: &dyn Sandbox, command: &str) -> (Option<i64>, String) {
    let out = sandbox
        .exec(command, Duration::from_secs(30))
        .await
        .expect("exec");
    // A probe that timed out was killed, so its output says nothing about the sandbox.
    assert!(
        !out.timed_out,
        "`{command}` took over 30 s (is the machine overloaded?)"
    );
    (out.exit_code, out.output.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_are_isolated_by_default() {
    let provider = DockerSandboxes::connect("test-isolation").expect("docker");
    let sandbox = provider
        .create(&spec("t-isolation", SandboxConfig::default()))
        .await
        .expect("create");
    assert_eq!(
        run(sandbox.as_ref(), "id -u").await,
        (Some(0), "1000".into()),
        "non-root"
    );
    assert_eq!(
        run(sandbox.as_ref(), "grep CapEff /proc/self/status")
            .await
            .1,
        "CapEff:\t0000000000000000",
        "no capabilities"
    );
    assert_eq!(
        run(sandbox.as_ref(), "ls /sys/class/net").await.1,
        "lo",
        "no network but loopback"
    );
    assert_eq!(
        run(sandbox.as_ref(), "test -e /var/run/docker.sock")
            .await
            .0,
        Some(1),
        "no Docker socket"
    );
    assert_eq!(
        run(sandbox.as_ref(), "env | grep -ci key").await.1,
        "0",
        "no worker environment"
    );
    assert_eq!(
        run(sandbox.as_ref(), "grep NoNewPrivs /proc/self/status")
            .await
            .1,
        "NoNewPrivs:\t1"
    );
    // root without capabilities cannot undo the hardening
    let root = sandbox
        .exec_root(
            "ip link add dummy0 type dummy 2>&1 || mount -t tmpfs x /mnt 2>&1; echo done",
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert!(
        root.output.contains("done") && !root.output.contains("dummy0:"),
        "{}",
        root.output
    );
    sandbox.destroy().await.expect("destroy");
    assert!(
        provider
            .containers_labelled("synthfleet.campaign", "t-isolation")
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bombs_and_hangs_are_contained() {
    let limits = SandboxConfig {
        memory_mb: 256,
        pids: 64,
        tmp_mb: 16,
        max_output_bytes: 64 * 1024,
        ..SandboxConfig::default()
    };
    let provider = DockerSandboxes::connect("test-bombs").expect("docker");
    let sandbox = provider
        .create(&spec("t-bombs", limits))
        .await
        .expect("create");
    let s = sandbox.as_ref();

    // A hang, with a background child holding the output open, is killed at the timeout.
    let hang = s
        .exec("sleep 300 & sleep 300", Duration::from_secs(2))
        .await
        .expect("exec");
    assert!(hang.timed_out && hang.exit_code.is_none());
    assert!(
        hang.duration < Duration::from_secs(20),
        "{:?}",
        hang.duration
    );
    assert_eq!(
        run(s, "pgrep -c -u 1000 -x sleep || true").await.1,
        "0",
        "nothing of the hang survives"
    );

    // Output flood: bounded, and the cut is marked.
    let flood = s
        .exec("yes synthfleet | head -c 50000000", Duration::from_secs(60))
        .await
        .expect("exec");
    assert!(flood.truncated && flood.output.len() < 70 * 1024);
    assert!(flood.output.contains("bytes of output truncated"));

    // Fork bomb: bounded by the pids limit, killed at the timeout.
    let bomb = s
        .exec("bomb() { bomb | bomb & }; bomb", Duration::from_secs(5))
        .await
        .expect("exec");
    assert!(bomb.timed_out || bomb.exit_code.is_some());
    assert_eq!(
        run(s, "echo alive").await,
        (Some(0), "alive".into()),
        "sandbox usable after a fork bomb"
    );

    // Memory bomb: the kernel or Python stops it; nothing else is hurt.
    let mem = s
        .exec(
            "python3 -c 'b = bytearray(1024 * 1024 * 1024); print(len(b))'",
            Duration::from_secs(60),
        )
        .await
        .expect("exec");
    assert_ne!(mem.exit_code, Some(0), "{}", mem.output);

    // Disk fill of the scratch space: bounded by its size.
    let (code, out) = run(s, "dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1").await;
    assert_ne!(code, Some(0));
    assert!(out.contains("No space left"), "{out}");
    assert_eq!(run(s, "echo still alive").await.1, "still alive");
    sandbox.destroy().await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread")]
async fn reaper_removes_what_a_crashed_worker_left() {
    let crashed = DockerSandboxes::connect("test-reaper").expect("docker");
    for _ in 0..2 {
        // Created and never destroyed, as by a worker that died.
        let sandbox = crashed
            .create(&spec("t-reaper", SandboxConfig::default()))
            .await
            .expect("create");
        std::mem::forget(sandbox);
    }
    let other = DockerSandboxes::connect("test-reaper-other").expect("docker");
    assert_eq!(
        other.reap().await.expect("reap"),
        0,
        "another worker's sandboxes are not touched"
    );
    let restarted = DockerSandboxes::connect("test-reaper").expect("docker");
    assert_eq!(restarted.reap().await.expect("reap"), 2);
    assert!(
        restarted
            .containers_labelled("synthfleet.campaign", "t-reaper")
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_image_is_a_clear_error() {
    let provider = DockerSandboxes::connect("test-missing").expect("docker");
    let mut s = spec("t-missing", SandboxConfig::default());
    s.image = "synthfleet/does-not-exist:0".into();
    match provider.create(&s).await {
        Err(e @ SandboxError::ImageMissing { .. }) => {
            assert!(e.to_string().contains("does-not-exist"))
        }
        Err(other) => panic!("expected ImageMissing, got {other}"),
        Ok(_) => panic!("expected ImageMissing"),
    }
}

/// `sandbox.runtime` picks the OCI runtime; one the engine does not have is named, with
/// the ones it has, before anything is created.
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_runs_on_the_runtime_asked_for_and_a_missing_one_is_named() {
    let provider = DockerSandboxes::connect("test-runtime").expect("docker");
    match provider.check_runtime(Some("no-such-runtime")).await {
        Err(e @ SandboxError::RuntimeMissing { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("no-such-runtime") && text.contains("runc"),
                "{text}"
            );
        }
        other => panic!("expected RuntimeMissing, got {other:?}"),
    }
    provider.check_runtime(None).await.expect("the default");
    let limits = SandboxConfig {
        runtime: Some("runc".into()),
        ..SandboxConfig::default()
    };
    provider
        .check_runtime(limits.runtime.as_deref())
        .await
        .expect("runc");
    let sandbox = provider
        .create(&spec("t-runtime", limits))
        .await
        .expect("create on runc");
    assert_eq!(
        run(sandbox.as_ref(), "echo on-runc").await,
        (Some(0), "on-runc".to_owned())
    );
    sandbox.destroy().await.expect("destroy");
}

/// SWE-bench's images have no unprivileged user: commands run as root (without
/// capabilities). A command that hangs there is killed at its timeout, and the sandbox
/// (whose init also runs as root) survives for the next step.
#[tokio::test(flavor = "multi_thread")]
async fn a_root_command_that_times_out_leaves_the_sandbox_usable() {
    const ROOT_ONLY: &str = "synthfleet/root-only:1";
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", ROOT_ONLY, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker build");
    {
        use std::io::Write;
        let mut stdin = build.stdin.take().expect("stdin");
        stdin
            .write_all(b"FROM synthfleet/debian-base:bookworm-2\nRUN userdel -r agent && mkdir -p /testbed\nWORKDIR /testbed\n")
            .expect("write Dockerfile");
    }
    assert!(
        build.wait().expect("docker build").success(),
        "building {ROOT_ONLY}"
    );
    let provider = DockerSandboxes::connect("test-root-timeout").expect("docker");
    let sandbox = provider
        .create(&SandboxSpec {
            image: ROOT_ONLY.into(),
            workdir: "/testbed".into(),
            labels: BTreeMap::from([("synthfleet.campaign".to_owned(), "t-root".to_owned())]),
            limits: SandboxConfig::default(),
        })
        .await
        .expect("create");
    let s = sandbox.as_ref();
    assert_eq!(
        run(s, "id -u").await,
        (Some(0), "0".to_owned()),
        "no uid 1000: root"
    );
    let hang = s
        .exec("sleep 300 & sleep 301", Duration::from_secs(2))
        .await
        .expect("exec");
    assert!(hang.timed_out && hang.exit_code.is_none(), "{hang:?}");
    assert_eq!(
        run(s, "pgrep -c -f 'sleep 30[01]' || true").await.1,
        "0",
        "nothing of the hang survives"
    );
    assert_eq!(run(s, "echo alive").await, (Some(0), "alive".to_owned()));
    sandbox.destroy().await.expect("destroy");
}
