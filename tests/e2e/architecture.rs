//! The dependency rules of docs/ARCHITECTURE.md, checked on the resolved graph (`cargo
//! tree`): a rule that is no longer true fails here, not in a review.

use std::collections::BTreeSet;
use std::process::Command;

/// The packages `package` depends on, directly (`depth` 1) or at any depth.
fn dependencies(package: &str, direct_only: bool) -> BTreeSet<String> {
    let mut command = Command::new(env!("CARGO"));
    command.args([
        "tree",
        "--offline",
        "--locked",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
        "-p",
        package,
    ]);
    if direct_only {
        command.args(["--depth", "1"]);
    }
    let out = command
        .current_dir(synthfleet_tests::workspace_root())
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_owned)
        .collect()
}

fn assert_free_of(package: &str, deps: &BTreeSet<String>, forbidden: &[&str]) {
    let found: Vec<&String> = deps
        .iter()
        .filter(|d| {
            forbidden
                .iter()
                .any(|f| d.as_str() == *f || (f.ends_with('-') && d.starts_with(f)))
        })
        .collect();
    assert!(
        found.is_empty(),
        "{package} must not depend on {found:?} (see docs/ARCHITECTURE.md)"
    );
}

#[test]
fn core_has_no_aws_docker_http_or_duckdb_dependency() {
    assert_free_of(
        "synthfleet-core",
        &dependencies("synthfleet-core", false),
        &[
            "aws-", "bollard", "reqwest", "hyper", "duckdb", "tokio", "redb",
        ],
    );
}

#[test]
fn what_functions_build_on_has_no_docker_duckdb_or_clap() {
    for package in ["synthfleet-backend", "synthfleet-llm", "synthfleet-tasks"] {
        assert_free_of(
            package,
            &dependencies(package, false),
            &["bollard", "duckdb", "libduckdb-sys", "clap", "anyhow"],
        );
    }
}

#[test]
fn the_agent_names_only_ports() {
    assert_free_of(
        "synthfleet-agent",
        &dependencies("synthfleet-agent", true),
        &[
            "bollard",
            "redb",
            "reqwest",
            "aws-",
            "synthfleet-sandbox",
            "synthfleet-local",
            "synthfleet-aws",
        ],
    );
}

#[test]
fn no_binary_depends_on_another_binarys_package() {
    for package in ["synthfleet-jobs", "synthfleet-cli"] {
        let deps = dependencies(package, false);
        assert_free_of(package, &deps, &["synthfleet-cli", "synthfleet-jobs"]);
    }
    assert_free_of(
        "synthfleet-cli",
        &dependencies("synthfleet-cli", false),
        &["duckdb", "libduckdb-sys", "synthfleet-quality"],
    );
}
