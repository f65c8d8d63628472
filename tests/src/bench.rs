//! What the fleet benchmarks (`workers/cli/benches/{fleet,resume}.rs`) share: their
//! numeric options, a campaign on the fake LLM server written and submitted to moto, and
//! worker processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The numeric options `--name N` of a bench binary, each defaulting as `defaults` says;
/// any other argument (`cargo bench` passes `--bench`) is ignored.
pub fn options<const N: usize>(defaults: [(&'static str, u64); N]) -> BTreeMap<&'static str, u64> {
    let mut options: BTreeMap<&'static str, u64> = defaults.into_iter().collect();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(slot) = arg
            .strip_prefix("--")
            .and_then(|name| options.iter_mut().find(|(n, _)| **n == name))
        else {
            continue;
        };
        *slot.1 = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{arg} needs a number"));
    }
    options
}

/// The shape of a fleet benchmark's run, from its options (`workers`, `concurrency`,
/// `tasks`, `samples`, `steps`).
pub struct Fleet {
    pub workers: u64,
    pub concurrency: u64,
    pub tasks: u64,
    pub samples: u64,
    /// Steps per rollout.
    pub steps: u64,
}

impl Fleet {
    pub fn of(options: &BTreeMap<&'static str, u64>) -> Fleet {
        let get = |name: &str| options.get(name).copied().unwrap_or(1);
        Fleet {
            workers: get("workers"),
            concurrency: get("concurrency"),
            tasks: get("tasks"),
            samples: get("samples"),
            steps: get("steps"),
        }
    }
}

/// A campaign file of `tasks` (JSONL lines) on one model served by the fake LLM server at
/// `llm_url` ($3 / $15 per million tokens), with `scaffold` lines in its `[scaffold]`.
pub struct BenchCampaign {
    _dir: tempfile::TempDir,
    pub file: PathBuf,
}

impl BenchCampaign {
    pub fn write(
        name: &str,
        tasks: &[String],
        samples: u64,
        scaffold: &str,
        llm_url: &str,
    ) -> BenchCampaign {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tasks.jsonl"), tasks.join("\n") + "\n").expect("tasks");
        let file = dir.path().join("campaign.toml");
        std::fs::write(
            &file,
            format!(
                "name = \"{name}\"\ntasks = [\"tasks.jsonl\"]\nsamples_per_task = {samples}\nbudget_usd = 1000.0\n\n[scaffold]\n{scaffold}\n\n[[models]]\nname = \"fake\"\nprovider = \"openai\"\nmodel = \"fake-coder\"\nendpoint = \"{llm_url}\"\napi_key_env = \"FAKE_LLM_KEY\"\ninput_price_per_mtok = 3.0\noutput_price_per_mtok = 15.0\nmax_tokens = 1024\n"
            ),
        )
        .expect("campaign");
        BenchCampaign { _dir: dir, file }
    }

    /// `synthfleet submit` of the campaign with `env`; panics with its error.
    pub fn submit(&self, synthfleet: &Path, env: &[(String, String)]) {
        let submitted = Command::new(synthfleet)
            .args(["--log-format", "json", "submit"])
            .arg(&self.file)
            .envs(env.iter().cloned())
            .output()
            .expect("synthfleet submit");
        assert!(
            submitted.status.success(),
            "{}",
            String::from_utf8_lossy(&submitted.stderr)
        );
    }
}

/// A `synthfleet worker` process named `id` with `args`, its output discarded.
pub fn worker(synthfleet: &Path, env: &[(String, String)], id: &str, args: &[&str]) -> Child {
    Command::new(synthfleet)
        .args(["--log-format", "json", "worker", "--worker-id", id])
        .args(["--poll-wait-s", "0"])
        .args(args)
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a worker")
}

/// Stops `workers` with SIGTERM and waits for each.
pub fn stop(workers: Vec<Child>) {
    for worker in workers {
        let _ = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status();
        let _ = worker.wait_with_output();
    }
}

/// How many of `campaign`'s samples have a result or a dead letter (0 while its item does
/// not read). Panics when the fleet has run for an hour since `started`.
pub async fn accounted(
    metadata: &dyn synthfleet_core::ports::MetadataStore,
    campaign: &str,
    started: std::time::Instant,
) -> u64 {
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60 * 60),
        "the fleet did not finish in an hour"
    );
    metadata
        .campaign(campaign)
        .await
        .ok()
        .flatten()
        .map(|c| c.accounted())
        .unwrap_or(0)
}

/// The key variable the bench campaign's model names, with a value.
pub fn key_env() -> (String, String) {
    ("FAKE_LLM_KEY".to_owned(), "sk-bench".to_owned())
}
