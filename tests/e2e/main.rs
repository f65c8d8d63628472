//! End-to-end tests: the real binary, real Docker, a real HTTP server speaking OpenAI's
//! API. Run after `examples/quickstart/build-image.sh` (`.ci/run` does it).

mod architecture;
mod aws;
mod campaign;
mod chaos;
mod cli_errors;
mod conformance;
mod control;
mod crash;
mod experiments;
mod exports;
mod external;
mod harness;
mod integrity;
mod lambda;
mod providers;
mod quality;
mod resume;
mod sampling;
mod sandbox;
mod scaffolds;
mod tail;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use synthfleet_core::budget::CampaignRecord;
use synthfleet_core::ports::{DeadLetter, MetadataStore, TrajectoryMeta};
use synthfleet_core::store::TrajectoryStore;
use synthfleet_core::trajectory::TrajectoryRecord;
use synthfleet_local::{LocalMetadata, LocalObjectStore, LocalState};
use synthfleet_sandbox::DockerSandboxes;
use synthfleet_tests::fake_llm::Script;
use synthfleet_tests::{require_test_image, task_line};

/// The binary under test, built by cargo with this test (same features, no rebuild).
pub fn synthfleet_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_synthfleet"))
}

/// A `synthfleet` command with `args`, extra environment and JSON logs.
pub fn synthfleet_command<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> std::process::Command {
    let mut command = std::process::Command::new(synthfleet_bin());
    command.args(["--log-format", "json"]).args(args).envs(env);
    command
}

/// Runs `synthfleet` with `args`, extra environment and JSON logs, to completion.
pub fn synthfleet(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    synthfleet_command(args, env.iter().copied())
        .output()
        .expect("running synthfleet")
}

/// The secret the fake provider's key variable holds; it must never reach a record.
pub const SECRET: &str = "sk-test-0123456789abcdef";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub campaign: PathBuf,
}

impl Fixture {
    /// Writes a campaign named `name` with `tasks` (JSONL lines) and the given TOML body
    /// (models, scaffold, ...), storing state under the fixture's directory.
    pub fn new(name: &str, tasks: &[String], body: &str) -> Fixture {
        require_test_image();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tasks.jsonl"), tasks.join("\n") + "\n")
            .expect("write tasks");
        let campaign = dir.path().join("campaign.toml");
        let text = format!(
            "name = \"{name}\"\ntasks = [\"tasks.jsonl\"]\n{body}\n\n[storage]\nkind = \"local\"\ndir = \"state\"\n"
        );
        std::fs::write(&campaign, text).expect("write campaign");
        Fixture {
            dir,
            name: name.to_owned(),
            campaign,
        }
    }

    /// Runs the campaign (with `extra` arguments and the fake provider's key) and asserts
    /// it succeeded; returns the output.
    pub fn run_ok(&self, extra: &[&str]) -> std::process::Output {
        let args: Vec<&str> = ["run", self.campaign_arg()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let out = synthfleet(&args, &[("FAKE_LLM_KEY", SECRET)]);
        assert!(
            out.status.success(),
            "run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn campaign_arg(&self) -> &str {
        self.campaign.to_str().expect("utf-8 path")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Opens the state the binary left (after it exited: the database is exclusive).
    pub async fn results(&self) -> Results {
        let state = LocalState::open(&self.state_dir()).expect("open state");
        let metadata = Arc::new(LocalMetadata::new(&state));
        let store = TrajectoryStore::new(
            Arc::new(LocalObjectStore::new(&self.state_dir().join("objects"))),
            metadata.clone(),
        );
        let campaign = metadata
            .campaign(&self.name)
            .await
            .expect("read campaign")
            .expect("campaign item");
        let metas = metadata
            .trajectories(&self.name)
            .await
            .expect("list trajectories");
        let mut records = Vec::new();
        for meta in &metas {
            records.push(store.load(meta).await.expect("load and verify a record"));
        }
        let dead = metadata
            .dead_letters(&self.name)
            .await
            .expect("dead letters");
        let checkpoints = store
            .objects
            .list(&format!("checkpoints/{}/", self.name))
            .await
            .expect("list checkpoints")
            .into_iter()
            .map(|o| o.key)
            .collect();
        Results {
            campaign,
            metas,
            records,
            dead,
            checkpoints,
        }
    }
}

pub struct Results {
    pub campaign: CampaignRecord,
    pub metas: Vec<TrajectoryMeta>,
    pub records: Vec<TrajectoryRecord>,
    pub dead: Vec<DeadLetter>,
    /// Mid-rollout records still stored (none once every sample committed).
    pub checkpoints: Vec<String>,
}

impl Results {
    pub fn record(&self, instance: &str, sample: u32) -> &TrajectoryRecord {
        self.records
            .iter()
            .find(|r| r.instance_id == instance && r.sample_index == sample)
            .unwrap_or_else(|| panic!("no record for {instance}#{sample}"))
    }
}

/// Containers labelled with this campaign, running or not.
pub async fn containers_of(campaign: &str) -> Vec<String> {
    DockerSandboxes::connect("test-observer")
        .expect("docker")
        .containers_labelled("synthfleet.campaign", campaign)
        .await
        .expect("list containers")
}

/// The three standard test tasks, with their fake-LLM scripts: two real fixes and one
/// plausible but wrong fix that verification must reject.
pub fn standard_tasks() -> (Vec<String>, Vec<Script>) {
    let tasks = vec![
        task_line(
            "median",
            "median",
            "[median] median() is wrong for even-length lists.",
            "python3 -m unittest -q test_stats",
        ),
        task_line(
            "leap",
            "leapyear",
            "[leap] is_leap() is wrong for century years.",
            "python3 -m unittest -q test_calendar_utils",
        ),
        task_line(
            "bsearch",
            "bsearch",
            "[bsearch] index_of() misses elements.",
            "python3 -m unittest -q test_search",
        ),
    ];
    let scripts = vec![
        Script::new(
            "[median]",
            &[
                "cat stats.py",
                "python3 - <<'EOF'\np='stats.py'\ns=open(p).read()\ns=s.replace('    return ordered[middle]\\n', '    if len(ordered) % 2:\\n        return ordered[middle]\\n    return (ordered[middle - 1] + ordered[middle]) / 2\\n')\nopen(p,'w').write(s)\nEOF",
                "python3 -m unittest -q test_stats",
                "submit",
            ],
        ),
        Script::new(
            "[leap]",
            &[
                "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py",
                "submit",
            ],
        ),
        Script::new(
            "[bsearch]",
            &[
                "sed -i 's/len(items) - 1/len(items)/' search.py",
                "echo 'I am sure this is fixed'",
                "submit",
            ],
        ),
    ];
    (tasks, scripts)
}

/// A `[[models]]` entry for the fake server: $1 per million input tokens, $2 output.
pub fn fake_model(url: &str, extra: &str) -> String {
    format!(
        "[[models]]\nname = \"fake\"\nprovider = \"openai\"\nmodel = \"fake-coder\"\nendpoint = \"{url}\"\napi_key_env = \"FAKE_LLM_KEY\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\nmax_tokens = 256\n{extra}\n"
    )
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
