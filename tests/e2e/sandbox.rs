//! Sandbox hardening against real Docker: isolation, limits, and bombs that leave the
//! worker (this test process) healthy.

use crate::containers_of;
use std::collections::BTreeMap;
use std::time::Duration;
use synthfleet_core::campaign::{SandboxChannel, SandboxConfig};
use synthfleet_core::ports::{HostCapacity, Sandbox, SandboxError, SandboxProvider, SandboxSpec};
use synthfleet_sandbox::{DiskGuard, DockerSandboxes, WarmPool};
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

/// Whether `sandbox`'s commands come through the relay: a relayed command's parent is
/// the relay's shell; an exec's parent is outside the container (PPID 0).
async fn relayed(sandbox: &dyn Sandbox) -> bool {
    run(
        sandbox,
        "grep -c SFRELAY /proc/$PPID/cmdline 2>/dev/null || true",
    )
    .await
    .1 == "1"
}

/// Tight bounds, so that the bombs hit them quickly.
fn adversarial_limits(channel: SandboxChannel) -> SandboxConfig {
    SandboxConfig {
        memory_mb: 256,
        pids: 64,
        tmp_mb: 16,
        max_output_bytes: 64 * 1024,
        channel,
        ..SandboxConfig::default()
    }
}

/// The adversarial suite: a hang with background children, an output flood, a fork bomb,
/// a memory bomb, a disk fill, a process ignoring SIGTERM and an egress attempt each leave
/// the sandbox usable and the worker (this test process) healthy.
async fn adversarial(provider: &dyn SandboxProvider, campaign: &str, channel: SandboxChannel) {
    let sandbox = provider
        .create(&spec(campaign, adversarial_limits(channel)))
        .await
        .expect("create");
    let s = sandbox.as_ref();
    assert_eq!(
        relayed(s).await,
        channel == SandboxChannel::Relay,
        "commands go through the channel asked for ({channel:?})"
    );

    // A hang, with a background child holding the output open, is killed at the timeout.
    let hang = s
        .exec("sleep 300 & sleep 300", Duration::from_secs(2))
        .await
        .expect("exec");
    assert!(hang.timed_out && hang.exit_code.is_none(), "{hang:?}");
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

    // A process that ignores SIGTERM is killed all the same.
    let stubborn = s
        .exec(
            "trap '' TERM; while :; do sleep 1; done",
            Duration::from_secs(2),
        )
        .await
        .expect("exec");
    assert!(stubborn.timed_out, "{stubborn:?}");
    assert_eq!(
        run(s, "pgrep -c -u 1000 -x sleep || true").await.1,
        "0",
        "nothing of the stubborn loop survives"
    );

    // Output flood: bounded, and the cut is marked.
    let flood = s
        .exec("yes synthfleet | head -c 50000000", Duration::from_secs(60))
        .await
        .expect("exec");
    assert!(flood.truncated && flood.output.len() < 70 * 1024);
    assert!(flood.output.contains("bytes of output truncated"));
    assert_eq!(flood.exit_code, Some(0));

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

    // Egress: there is no route out (a documentation address; nothing leaves anyway).
    let (code, out) = run(
        s,
        "python3 -c \"import socket; socket.create_connection(('192.0.2.1', 80), timeout=3)\" 2>&1",
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(out.contains("unreachable"), "{out}");

    assert_eq!(run(s, "echo still alive").await.1, "still alive");
    assert_eq!(
        relayed(s).await,
        channel == SandboxChannel::Relay,
        "still on its channel after the suite"
    );
    sandbox.destroy().await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread")]
async fn bombs_and_hangs_are_contained_through_the_relay() {
    let provider = DockerSandboxes::connect("test-bombs").expect("docker");
    adversarial(&provider, "t-bombs", SandboxChannel::Relay).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bombs_and_hangs_are_contained_through_docker_exec() {
    let provider = DockerSandboxes::connect("test-bombs-exec").expect("docker");
    adversarial(&provider, "t-bombs-exec", SandboxChannel::Exec).await;
}

/// The suite on a spare from the warm pool: the spec is acquired often enough to get
/// spares, and the suite runs on one of them.
#[tokio::test(flavor = "multi_thread")]
async fn bombs_and_hangs_are_contained_in_a_pooled_sandbox() {
    let pool = WarmPool::new(
        DockerSandboxes::connect("test-bombs-pool").expect("docker"),
        2,
    );
    for _ in 0..synthfleet_sandbox::pool::REPEATS {
        let sandbox = pool
            .create(&spec(
                "t-bombs-pool",
                adversarial_limits(SandboxChannel::Relay),
            ))
            .await
            .expect("create");
        sandbox.destroy().await.expect("destroy");
    }
    wait_for_spares(&pool, 1).await;
    adversarial(&pool, "t-bombs-pool", SandboxChannel::Relay).await;
    assert!(pool.stats().warm >= 1, "{:?}", pool.stats());
    pool.shutdown().await;
    assert!(containers_of("t-bombs-pool").await.is_empty());
}

async fn wait_for_spares(pool: &WarmPool, spares: usize) {
    crate::aws::wait_for("spare sandboxes", Duration::from_secs(60), async || {
        pool.stats().idle >= spares
    })
    .await;
}

/// Commands reach the relay byte for byte; a command that kills the relay costs that
/// command's status, not the sandbox; a detached background process does not hold up
/// its command.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_runs_every_command_as_docker_exec_would() {
    let provider = DockerSandboxes::connect("test-relay").expect("docker");
    let sandbox = provider
        .create(&spec("t-relay", SandboxConfig::default()))
        .await
        .expect("create");
    let s = sandbox.as_ref();
    assert!(relayed(s).await);

    // Trailing newlines, quotes, multi-byte text and a large here-document (the kernel caps
    // one argument at 128 KiB, for `docker exec` as for the relay).
    let text = format!(
        "héllo 'wörld' \"$x\" ✓\n{}\n\n",
        "0123456789".repeat(10_000)
    );
    let command = format!("cat > /tmp/t <<'SF_EOF'\n{text}SF_EOF\ncat /tmp/t\n\n\n");
    let out = s
        .exec(&command, Duration::from_secs(30))
        .await
        .expect("exec");
    assert_eq!((out.exit_code, out.output == text), (Some(0), true));

    // Exit codes, stderr interleaved, no stdin.
    assert_eq!(
        run(
            s,
            "echo out; echo err >&2; read -r x || echo no-stdin; exit 3"
        )
        .await,
        (Some(3), "out\nerr\nno-stdin".to_owned())
    );
    // Output without a final newline keeps its last bytes.
    assert_eq!(
        s.exec("printf 'no newline'", Duration::from_secs(10))
            .await
            .expect("exec")
            .output,
        "no newline"
    );
    // Each command is a fresh process: nothing carries over.
    run(s, "export CARRIED=1; cd /").await;
    assert_eq!(
        run(s, "echo \"${CARRIED:-none} $PWD\"").await.1,
        "none /tasks/median"
    );

    // A detached background process does not hold up its command.
    let detached = s
        .exec(
            "nohup sleep 300 >/dev/null 2>&1 & echo started",
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert!(!detached.timed_out && detached.output.trim() == "started");

    // `kill -9 -1` kills everything the user may signal, the relay included.
    let killer = s
        .exec("kill -9 -1", Duration::from_secs(10))
        .await
        .expect("exec");
    assert!(!killer.timed_out, "{killer:?}");
    assert_eq!(run(s, "echo back").await, (Some(0), "back".to_owned()));
    assert!(relayed(s).await, "a new relay took over");
    sandbox.destroy().await.expect("destroy");
}

/// Concurrent acquisitions from a pool with spares get distinct, fresh sandboxes: a
/// spare is handed out once, and what one holder wrote no other sees.
#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_sandbox_is_never_handed_out_twice() {
    let pool = WarmPool::new(DockerSandboxes::connect("test-pool").expect("docker"), 4);
    let spec = spec("t-pool", SandboxConfig::default());
    let mut held = Vec::new();
    for _ in 0..synthfleet_sandbox::pool::REPEATS + 1 {
        held.push(pool.create(&spec).await.expect("create"));
    }
    wait_for_spares(&pool, 1).await;
    let mut more = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (pool, spec) = (pool.clone(), spec.clone());
        more.spawn(async move { pool.create(&spec).await });
    }
    while let Some(sandbox) = more.join_next().await {
        held.push(sandbox.expect("join").expect("create"));
    }
    let stats = pool.stats();
    assert!(stats.warm >= 1, "{stats:?}");
    let ids: std::collections::BTreeSet<&str> = held.iter().map(|s| s.id()).collect();
    assert_eq!(ids.len(), held.len(), "every holder has its own sandbox");
    for (i, sandbox) in held.iter().enumerate() {
        let (code, out) = run(
            sandbox.as_ref(),
            &format!("ls /tmp/mark-* 2>/dev/null; touch /tmp/mark-{i}"),
        )
        .await;
        assert_eq!((code, out.as_str()), (Some(0), ""), "sandbox {i} was fresh");
    }
    for sandbox in &held {
        sandbox.destroy().await.expect("destroy");
    }
    pool.shutdown().await;
    assert!(
        containers_of("t-pool").await.is_empty(),
        "removals and spares are gone after shutdown"
    );
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
    docker_build(
        ROOT_ONLY,
        "FROM synthfleet/debian-base:bookworm-2\nRUN userdel -r agent && mkdir -p /testbed\nWORKDIR /testbed\n",
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

/// Builds `tag` from `dockerfile` (no context) with the classic builder.
fn docker_build(tag: &str, dockerfile: &str) {
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker build");
    {
        use std::io::Write;
        let mut stdin = build.stdin.take().expect("stdin");
        stdin
            .write_all(dockerfile.as_bytes())
            .expect("write Dockerfile");
    }
    assert!(
        build.wait().expect("docker build").success(),
        "building {tag}"
    );
}

/// Under disk pressure the guard removes the images this worker used that nothing needs
/// now, and says why it takes no work while there is still no room; it never removes an
/// image a container uses, nor one of the work at hand.
#[tokio::test(flavor = "multi_thread")]
async fn disk_pressure_removes_only_the_images_nothing_needs() {
    require_test_image();
    let images = [
        "synthfleet/gc-unused:1",
        "synthfleet/gc-in-use:1",
        "synthfleet/gc-kept:1",
    ];
    for image in images {
        docker_build(
            image,
            &format!("FROM {TEST_IMAGE}\nLABEL synthfleet.test=\"{image}\"\n"),
        );
    }
    let engine = DockerSandboxes::connect("test-gc").expect("docker");
    let pool = WarmPool::new(engine.clone(), 0);
    let mut in_use = None;
    for image in images {
        let mut spec = spec("t-gc", SandboxConfig::default());
        spec.image = image.into();
        let sandbox = pool.create(&spec).await.expect("create");
        if image == images[1] {
            in_use = Some(sandbox);
        } else {
            sandbox.destroy().await.expect("destroy");
        }
    }
    // Removal happens in the background: wait until only the sandbox in use is left.
    crate::aws::wait_for("the removals", Duration::from_secs(30), async || {
        containers_of("t-gc").await.len() == 1
    })
    .await;
    let mut guard = DiskGuard::new(
        pool.clone(),
        u64::MAX,
        std::collections::BTreeSet::from([images[2].to_owned()]),
    );
    guard.recent = Duration::ZERO;
    let collected = guard.collect(u64::MAX).await.expect("collect");
    assert_eq!(collected.removed, vec![images[0].to_owned()]);
    assert_eq!(
        engine.missing_images(images).await.expect("inspect"),
        vec![images[0].to_owned()],
        "the image in use and the kept one stay"
    );
    let reason = guard.pressure().await.expect("no room: no work");
    assert!(reason.contains("--min-free-disk-mb"), "{reason}");
    if let Some(sandbox) = in_use {
        sandbox.destroy().await.expect("destroy");
    }
    pool.shutdown().await;
    for image in &images[1..] {
        let _ = std::process::Command::new("docker")
            .args(["rmi", image])
            .output();
    }
}

/// `disk_mb` where the storage driver cannot cap a container's writable layer (this
/// machine's): the sandbox still runs (a warning says the cap is not enforced).
#[tokio::test(flavor = "multi_thread")]
async fn a_disk_limit_the_storage_driver_cannot_enforce_is_not_fatal() {
    let provider = DockerSandboxes::connect("test-disk-mb").expect("docker");
    let limits = SandboxConfig {
        disk_mb: Some(1024),
        ..SandboxConfig::default()
    };
    for _ in 0..2 {
        let sandbox = provider
            .create(&spec("t-disk-mb", limits.clone()))
            .await
            .expect("create with disk_mb");
        assert_eq!(run(sandbox.as_ref(), "echo ok").await.1, "ok");
        sandbox.destroy().await.expect("destroy");
    }
}

/// Through either channel: any bytes written land where the sandbox sees them, `/tmp` (a
/// tmpfs mount) included; a workdir the image lacks is made; the environment is what
/// `docker exec` gives; a NUL byte in a command is left out.
#[tokio::test(flavor = "multi_thread")]
async fn files_workdirs_and_environment_are_the_same_through_either_channel() {
    let provider = DockerSandboxes::connect("test-channels").expect("docker");
    let mut seen = Vec::new();
    for channel in [SandboxChannel::Relay, SandboxChannel::Exec] {
        let mut spec = spec(
            "t-channels",
            SandboxConfig {
                channel,
                ..SandboxConfig::default()
            },
        );
        spec.workdir = "/srv/not-in-the-image".into();
        let sandbox = provider.create(&spec).await.expect("create");
        let s = sandbox.as_ref();
        assert_eq!(
            run(s, "pwd").await.1,
            "/srv/not-in-the-image",
            "{channel:?}"
        );

        let bytes: Vec<u8> = (0..=255u8).cycle().take(200 * 1024).collect();
        s.write_file("/tmp/deep/dir/blob.bin", &bytes)
            .await
            .expect("write");
        assert_eq!(
            run(
                s,
                "python3 -c \"d = open('/tmp/deep/dir/blob.bin', 'rb').read(); print(len(d), d == bytes(range(256)) * 800)\""
            )
            .await
            .1,
            "204800 True",
            "{channel:?}: the whole file, byte for byte, in the tmpfs"
        );
        assert_eq!(run(s, "echo a\0b").await, (Some(0), "ab".to_owned()));
        seen.push(run(s, "env | grep -v ^HOSTNAME= | sort").await.1);
        sandbox.destroy().await.expect("destroy");
    }
    assert_eq!(
        seen[0], seen[1],
        "the same environment through both channels"
    );
}
