//! The facts of a trajectory: the compact, versioned row every quality job needs — outcome,
//! costs, tokens, steps, durations, the checks that judge one record alone, and the
//! features dedup and diversity compare — derived once from the record and stored beside
//! it, so that reports never read the conversation again.
//!
//! One derivation ([`TrajectoryFacts::of`]) serves both paths: the worker writes the facts
//! when it commits the trajectory ([`crate::store::TrajectoryStore::commit`]), and the jobs
//! derive them from the record for a trajectory committed without them (an older campaign)
//! or with an older [`FACTS_VERSION`].
//!
//! Nothing here depends on the campaign's `[quality]` thresholds: the facts keep the raw
//! measures (the longest run of one repeated action, failed and truncated step counts), and
//! the stages compare them with the thresholds when a report runs. Changing a threshold
//! therefore never re-reads a record; only a new [`FACTS_VERSION`] does.

use crate::codec::{hex, sha256_hex};
use crate::hacks::{self, Finding};
use crate::ports::TrajectorySummary;
use crate::task::DEFAULT_WORKDIR;
use crate::trajectory::{ExitStatus, Role, TrajectoryRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Bumped whenever what [`TrajectoryFacts::of`] derives changes: facts of another version
/// are derived again from their record. 3: `scaffold_detail` names the protocol as
/// campaign files do (`text`, `tool_calls`).
pub const FACTS_VERSION: u32 = 3;

/// Slots of a MinHash signature: the similarity estimate's standard error is about
/// `1 / sqrt(SLOTS)` (0.09 here), ample to tell near copies (>= 0.9) from others.
const SLOTS: usize = 128;
/// Words per shingle.
const SHINGLE: usize = 3;

/// `quality/{campaign}/facts/{trajectory_id}.json`: the facts the worker wrote with the
/// trajectory (or the jobs derived later).
pub fn facts_key(campaign: &str, trajectory_id: &str) -> String {
    format!("quality/{campaign}/facts/{trajectory_id}.json")
}

/// `quality/{campaign}/facts/compacted/`: segments of many trajectories' facts
/// (zstd-compressed JSON lines), written by the jobs so that a report reads a few objects,
/// not one per trajectory.
pub fn compacted_prefix(campaign: &str) -> String {
    format!("quality/{campaign}/facts/compacted/")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryFacts {
    pub version: u32,
    /// The checksum of the record they were derived from (its metadata item's).
    pub record_sha256: String,
    /// What the metadata item says alike (flattened: its keys are the facts').
    #[serde(flatten)]
    pub summary: TrajectorySummary,
    /// `name@version`.
    pub scaffold: String,
    /// `name@version (protocol, templates sha256 …)`, for the dataset card.
    pub scaffold_detail: String,
    /// `image digest`, for the dataset card.
    pub image: String,
    pub exit_status: String,
    pub resolved: bool,
    pub reward: f64,
    pub duration_ms: u64,
    pub started_at: DateTime<Utc>,
    /// Why the record is not structurally valid (`None`: it is).
    pub structural_failure: Option<String>,
    /// Why execution verification did not pass (`None`: it did).
    pub execution_failure: Option<String>,
    pub measures: Measures,
    /// SHA-256 of the action sequence: equal means the same commands in the same order.
    pub action_hash: String,
    pub minhash: MinHash,
    /// The sequence of command names, e.g. `cat > python3 > submit`.
    pub pattern: String,
    /// SHA-256 of the final patch, when there is one.
    pub patch_hash: Option<String>,
    /// The commit the agent started from (see [`crate::start`]); `None` for records made
    /// before it was kept, or when the workdir is no git repository.
    #[serde(default)]
    pub start_commit: Option<String>,
    /// SHA-256 of the task's verification ([`crate::task::Task::harness_hash`]).
    #[serde(default)]
    pub harness_hash: Option<String>,
    /// Signs of reward hacking in the agent's commands and patch ([`hacks::detect`]).
    #[serde(default)]
    pub hack_signals: Vec<Finding>,
}

/// What the heuristics compare with the thresholds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measures {
    pub steps: u32,
    /// The longest run of one action repeated in a row, and its first line.
    pub longest_repeat: u32,
    pub repeated_action: String,
    /// Steps that failed: a format error, a timeout or a non-zero exit.
    pub failed_steps: u32,
    pub truncated_observations: u32,
}

impl TrajectoryFacts {
    /// The facts of `record`, whose stored form has the checksum `record_sha256`.
    pub fn of(record: &TrajectoryRecord, record_sha256: &str) -> TrajectoryFacts {
        let verification = record.verification.as_ref();
        let actions: Vec<&str> = record
            .steps
            .iter()
            .filter_map(|s| s.action.as_deref())
            .collect();
        let mut hasher = Sha256::new();
        for action in &actions {
            hasher.update(action.as_bytes());
            hasher.update([0]);
        }
        let mut verbs: Vec<&str> = actions.iter().map(|a| command_name(a)).collect();
        if record.exit_status == Some(ExitStatus::Submitted) {
            verbs.push("submit");
        }
        let words: Vec<&str> = actions.iter().flat_map(|a| a.split_whitespace()).collect();
        TrajectoryFacts {
            version: FACTS_VERSION,
            record_sha256: record_sha256.to_owned(),
            summary: TrajectorySummary::of(
                record,
                record
                    .timings
                    .finished_at
                    .unwrap_or(record.timings.started_at),
            ),
            scaffold: format!("{}@{}", record.scaffold.name, record.scaffold.version),
            scaffold_detail: format!(
                "{}@{} ({} protocol, templates sha256 {})",
                record.scaffold.name,
                record.scaffold.version,
                record.scaffold.protocol,
                record.scaffold.template_hash
            ),
            image: format!(
                "{} {}",
                record.image,
                record.image_digest.as_deref().unwrap_or("")
            )
            .trim()
            .to_owned(),
            exit_status: record
                .exit_status
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "unfinished".into()),
            resolved: verification.is_some_and(|v| v.resolved),
            reward: verification.map_or(0.0, |v| v.reward),
            duration_ms: record.timings.duration_ms,
            started_at: record.timings.started_at,
            structural_failure: structural_failure(record),
            execution_failure: execution_failure(record),
            measures: Measures::of(record),
            action_hash: hex(&hasher.finalize()),
            minhash: MinHash::of(&words),
            pattern: verbs.join(" > "),
            patch_hash: (!record.patch.trim().is_empty())
                .then(|| sha256_hex(record.patch.as_bytes())),
            start_commit: record
                .environment
                .as_ref()
                .and_then(|e| e.start_commit.clone()),
            harness_hash: record.environment.as_ref().map(|e| e.harness_hash.clone()),
            hack_signals: hack_signals(record),
        }
    }
}

/// What [`hacks::detect`] finds in the record's commands and patch, the graded tests'
/// files counting as test files.
fn hack_signals(record: &TrajectoryRecord) -> Vec<Finding> {
    let commands: Vec<(u32, String)> = record
        .steps
        .iter()
        .filter_map(|s| shell_equivalent(s).map(|a| (s.index, a)))
        .collect();
    let commands: Vec<(u32, &str)> = commands.iter().map(|(i, c)| (*i, c.as_str())).collect();
    let graded_tests: Vec<String> = record
        .verification
        .iter()
        .flat_map(|v| v.fail_to_pass.iter().chain(&v.pass_to_pass))
        .flat_map(|split| split.passed.iter().chain(&split.failed))
        .cloned()
        .collect();
    hacks::detect(&hacks::Trajectory {
        commands: &commands,
        patch: &record.patch,
        workdir: record
            .environment
            .as_ref()
            .map_or(DEFAULT_WORKDIR, |e| e.workdir.as_str()),
        graded_tests: &graded_tests,
    })
}

/// A step's action as the shell command it amounts to, for the hack scan: a command as
/// it is; a file editor call (`str_replace_editor`) as reading (`view`) or writing (every
/// other command) its path — so reading `.git` internals or writing a test file or
/// site-packages through the editor is caught like the same through `bash`.
fn shell_equivalent(step: &crate::trajectory::Step) -> Option<String> {
    let action = step.action.as_deref()?;
    if step.tool.as_deref() != Some("str_replace_editor") {
        return Some(action.to_owned());
    }
    let call: serde_json::Value = serde_json::from_str(action).ok()?;
    let path = crate::task::shell_quote(call["path"].as_str()?);
    Some(match call["command"].as_str()? {
        "view" => format!("cat -- {path}"),
        _ => format!("echo edit > {path}"),
    })
}

impl TrajectoryFacts {
    /// Whether these facts describe the committed record `meta` as this build derives them.
    pub fn current_for(&self, meta: &crate::ports::TrajectoryMeta) -> bool {
        self.version == FACTS_VERSION
            && self.record_sha256 == meta.sha256
            && self.summary.trajectory_id == meta.summary.trajectory_id
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain data: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Measures {
    fn of(record: &TrajectoryRecord) -> Measures {
        let steps = &record.steps;
        let (mut run, mut longest, mut repeated) = (1u32, u32::from(!steps.is_empty()), "");
        for pair in steps.windows(2) {
            let same = pair[0].action.is_some() && pair[0].action == pair[1].action;
            run = if same { run + 1 } else { 1 };
            if run > longest {
                longest = run;
                repeated = pair[1].action.as_deref().unwrap_or_default();
            }
        }
        Measures {
            steps: steps.len() as u32,
            longest_repeat: longest,
            repeated_action: first_line(repeated).to_owned(),
            failed_steps: steps
                .iter()
                .filter(|s| s.format_error || s.timed_out || s.exit_code.is_some_and(|c| c != 0))
                .count() as u32,
            truncated_observations: steps.iter().filter(|s| s.observation_truncated).count() as u32,
        }
    }
}

/// Structural validity: the record is complete and well formed.
fn structural_failure(record: &TrajectoryRecord) -> Option<String> {
    let Some(exit) = &record.exit_status else {
        return Some("no exit status: the rollout never finished".into());
    };
    if let ExitStatus::Error(_) = exit {
        return Some(format!(
            "rollout ended in {exit}: {}",
            record.error.as_deref().unwrap_or("no detail")
        ));
    }
    if exit == &ExitStatus::BudgetExhausted {
        return Some("rollout cut short by the campaign budget".into());
    }
    if !matches!(
        record.messages.first().map(|m| m.role),
        Some(Role::System | Role::User)
    ) {
        return Some("messages do not start with a system or user message".into());
    }
    if !record.messages.iter().any(|m| m.role == Role::Assistant) {
        return Some("no assistant message".into());
    }
    // Every tool call is answered, and every tool answer belongs to a call.
    let mut open: Vec<&str> = Vec::new();
    for message in &record.messages {
        match message.role {
            Role::Assistant => open.extend(message.tool_calls.iter().map(|c| c.id.as_str())),
            Role::Tool => {
                let Some(id) = message.tool_call_id.as_deref() else {
                    return Some("a tool message has no tool_call_id".into());
                };
                let Some(at) = open.iter().position(|o| *o == id) else {
                    return Some(format!("tool message answers unknown call `{id}`"));
                };
                open.remove(at);
            }
            _ => {}
        }
    }
    if let Some(id) = open.first() {
        return Some(format!("tool call `{id}` has no answer"));
    }
    if record.steps.len() != record.totals.n_steps as usize {
        return Some(format!(
            "{} steps recorded but totals say {}",
            record.steps.len(),
            record.totals.n_steps
        ));
    }
    record
        .steps
        .iter()
        .enumerate()
        .find(|(i, s)| s.index as usize != *i)
        .map(|(i, step)| format!("step {i} is numbered {}", step.index))
}

/// Execution verification: the eval ran in a fresh sandbox and resolved the task. The
/// agent's own claim never counts.
fn execution_failure(record: &TrajectoryRecord) -> Option<String> {
    match &record.verification {
        None => Some("never verified".into()),
        Some(v) if !v.patch_applied => Some("the patch did not apply to a fresh sandbox".into()),
        Some(v) if !v.resolved => Some(match v.eval_exit_code {
            Some(code) => format!("eval failed (exit code {code})"),
            None => "eval did not finish".to_owned(),
        }),
        Some(_) => None,
    }
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    let mut end = line.len().min(60);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// The program a shell command starts with (`cd x && pytest` → `cd`).
fn command_name(action: &str) -> &str {
    let word = action.split_whitespace().next().unwrap_or("");
    word.rsplit('/').next().unwrap_or(word)
}

/// A MinHash signature over word shingles, stored as hex. Every hash in it is defined
/// here (SHA-256 of the shingle, then a fixed mix per slot), so signatures computed by
/// different builds and machines compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MinHash(Vec<u32>);

impl MinHash {
    pub fn of(words: &[&str]) -> MinHash {
        let shingles: BTreeSet<u64> = if words.len() < SHINGLE {
            words
                .iter()
                .map(|w| shingle_hash(std::slice::from_ref(w)))
                .collect()
        } else {
            words.windows(SHINGLE).map(shingle_hash).collect()
        };
        let mut slots = vec![u32::MAX; SLOTS];
        for shingle in shingles {
            for (k, slot) in slots.iter_mut().enumerate() {
                let mixed = splitmix64(shingle ^ (k as u64).wrapping_mul(0x9E37_79B9));
                *slot = (*slot).min((mixed >> 32) as u32);
            }
        }
        MinHash(slots)
    }

    /// Estimated Jaccard similarity of the two shingle sets.
    pub fn similarity(&self, other: &MinHash) -> f64 {
        let equal = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        equal as f64 / self.0.len().max(1) as f64
    }
}

impl From<MinHash> for String {
    fn from(m: MinHash) -> String {
        m.0.iter().map(|s| format!("{s:08x}")).collect()
    }
}

impl TryFrom<String> for MinHash {
    type Error = String;

    fn try_from(text: String) -> Result<MinHash, String> {
        if text.len() != SLOTS * 8 || !text.is_ascii() {
            return Err(format!(
                "a MinHash signature is {} hex digits, not {}",
                SLOTS * 8,
                text.len()
            ));
        }
        (0..SLOTS)
            .map(|i| {
                u32::from_str_radix(&text[i * 8..i * 8 + 8], 16)
                    .map_err(|e| format!("MinHash slot {i}: {e}"))
            })
            .collect::<Result<_, _>>()
            .map(MinHash)
    }
}

fn shingle_hash(words: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    for word in words {
        hasher.update(word.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A well-mixed 64-bit permutation (Steele et al.), one per signature slot.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_editor_call_is_scanned_as_the_read_or_write_it_is() {
        let step = |tool: Option<&str>, action: &str| -> crate::trajectory::Step {
            serde_json::from_value(serde_json::json!({
                "index": 0, "action": action, "observation": "", "observation_truncated": false,
                "exit_code": 0, "timed_out": false, "duration_ms": 1, "llm_duration_ms": 1,
                "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "llm_retries": 0,
                "model": "m", "format_error": false, "tool": tool
            }))
            .expect("a step")
        };
        let editor = Some("str_replace_editor");
        assert_eq!(
            shell_equivalent(&step(
                editor,
                r#"{"command":"view","path":".git/packed-refs"}"#
            )),
            Some("cat -- '.git/packed-refs'".to_owned())
        );
        assert_eq!(
            shell_equivalent(&step(
                editor,
                r#"{"command":"create","path":"tests/test_a.py","file_text":""}"#
            )),
            Some("echo edit > 'tests/test_a.py'".to_owned())
        );
        assert_eq!(
            shell_equivalent(&step(None, "ls -la")),
            Some("ls -la".to_owned())
        );
        let findings = hacks::detect(&hacks::Trajectory {
            commands: &[(0, "cat -- '.git/packed-refs'")],
            patch: "",
            workdir: "/testbed",
            graded_tests: &[],
        });
        assert!(
            findings.iter().any(|f| f.signal.as_str() == "history"),
            "{findings:?}"
        );
    }

    fn words(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn minhash_estimates_jaccard() {
        let a: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let mut b = a.clone();
        b[199] = "changed".into();
        let c: Vec<String> = (0..200).map(|i| format!("other{i}")).collect();
        let (a, b, c) = (
            MinHash::of(&words(&a)),
            MinHash::of(&words(&b)),
            MinHash::of(&words(&c)),
        );
        // 198 shingles shared out of 199: near 0.99.
        assert!(a.similarity(&b) > 0.9, "{}", a.similarity(&b));
        assert!(a.similarity(&c) < 0.1, "{}", a.similarity(&c));
        assert_eq!(a.similarity(&a), 1.0);
    }

    #[test]
    fn minhash_is_the_same_on_every_build_and_survives_its_text_form() {
        let m = MinHash::of(&["cat", "stats.py", "&&", "python3", "-m", "unittest"]);
        // Pinned: a change here is a change of FACTS_VERSION.
        assert_eq!(&String::from(m.clone())[..16], "2fb2864742e5a348");
        assert_eq!(MinHash::try_from(String::from(m.clone())), Ok(m));
        assert!(MinHash::try_from("abc".to_owned()).is_err());
    }

    /// Facts as the worker wrote them before [`TrajectorySummary`] existed: every field at
    /// the top level, in the old order.
    fn old_facts() -> serde_json::Value {
        serde_json::json!({
            "version": 2,
            "record_sha256": "ab12",
            "campaign": "c",
            "trajectory_id": "01T",
            "instance_id": "task-1",
            "sample_index": 0,
            "model": "m",
            "provider": "openai",
            "scaffold": "mini@1",
            "scaffold_detail": "mini@1 (Text protocol, templates sha256 cd34)",
            "image": "img@sha256:ef",
            "exit_status": "submitted",
            "resolved": true,
            "reward": 1.0,
            "cost_usd": 0.0125,
            "input_tokens": 1200,
            "output_tokens": 80,
            "cache_read_tokens": 900,
            "cache_write_tokens": 10,
            "n_steps": 3,
            "duration_ms": 5000,
            "started_at": "2024-05-02T11:59:55Z",
            "created_at": "2024-05-02T12:00:00Z",
            "structural_failure": null,
            "execution_failure": null,
            "measures": {
                "steps": 3,
                "longest_repeat": 1,
                "repeated_action": "",
                "failed_steps": 0,
                "truncated_observations": 0
            },
            "action_hash": "0f",
            "minhash": String::from(MinHash::of(&["cat", "a"])),
            "pattern": "cat > submit",
            "patch_hash": null,
            "start_commit": "1a2b",
            "harness_hash": "3c4d",
            "hack_signals": [{"signal": "history", "step": 2, "evidence": "git log --all"}]
        })
    }

    #[test]
    fn facts_of_the_old_layout_read_back_and_are_written_the_same() {
        let bytes = serde_json::to_vec(&old_facts()).expect("encode");
        let facts: TrajectoryFacts = serde_json::from_slice(&bytes).expect("the old facts read");
        assert_eq!(facts.summary.trajectory_id, "01T");
        assert_eq!(facts.summary.cache_write_tokens, 10);
        assert_eq!(
            facts.summary.created_at.to_rfc3339(),
            "2024-05-02T12:00:00+00:00"
        );
        assert_eq!(facts.hack_signals.len(), 1);
        assert_eq!(
            serde_json::to_value(&facts).expect("encode"),
            old_facts(),
            "the summary's keys stay at the facts' top level"
        );
        // And through the bytes the jobs store (`to_json`).
        let again: TrajectoryFacts = serde_json::from_slice(&facts.to_json()).expect("reads");
        assert_eq!(again, facts);
    }

    #[test]
    fn command_names_and_first_lines() {
        assert_eq!(command_name("/usr/bin/python3 -m x"), "python3");
        assert_eq!(command_name("  cat a"), "cat");
        assert_eq!(first_line(&"é".repeat(40)), "é".repeat(30));
    }
}
