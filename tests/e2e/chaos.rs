//! Faults that never cost a sample or a dollar: a local campaign under the fault mix real
//! providers produce (429 with Retry-After, 500, bodies cut off mid-way, latency), with
//! the runner killed -9 at random points five times, then resumed to the end.

use crate::synthfleet_command;
use crate::{Fixture, SECRET, containers_of, fake_model, standard_tasks};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::CampaignState;
use synthfleet_core::trajectory::ExitStatus;
use synthfleet_tests::fake_llm::{FakeLlm, Fault};

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A share in [0, 1).
    fn share(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 30% 429 with Retry-After, 10% 500, 8% bodies cut off mid-way, else 50 ms of latency.
fn fault_mix(rng: &mut Rng, n: usize) -> Vec<Fault> {
    (0..n)
        .map(|_| match rng.share() {
            x if x < 0.30 => Fault::Status {
                code: 429,
                retry_after: Some(0),
            },
            x if x < 0.40 => Fault::Status {
                code: 500,
                retry_after: None,
            },
            x if x < 0.48 => Fault::Malformed,
            _ => Fault::Delay(Duration::from_millis(50)),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_five_times_under_provider_faults_every_sample_gets_exactly_one_result() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("chaos seed {seed}");
    let mut rng = Rng(seed);
    let (tasks, scripts) = standard_tasks();
    let llm = FakeLlm::start(scripts);
    llm.push_faults(fault_mix(&mut rng, 2_000));
    let body = format!(
        "samples_per_task = 4\nbudget_usd = 5.0\n{}",
        fake_model(&llm.url, "max_attempts = 12")
    );
    let fx = Fixture::new("e2e-chaos", &tasks, &body);

    for kill in 0..5 {
        let mut child = synthfleet_command(
            &[
                "run",
                fx.campaign_arg(),
                "-j",
                "4",
                "--retry-backoff-s",
                "0",
            ],
            [("FAKE_LLM_KEY", SECRET)],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn synthfleet run");
        // Wait for rollouts in flight, then kill at a random point of them.
        let deadline = Instant::now() + Duration::from_secs(60);
        while containers_of(&fx.name).await.is_empty() {
            assert!(Instant::now() < deadline, "seed {seed}: no rollout started");
            if child.try_wait().expect("poll child").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.next() % 2_500)).await;
        if child.try_wait().expect("poll child").is_some() {
            eprintln!("seed {seed}: the run finished before kill {kill}");
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap child");
    }

    // The seed is printed above: a failure here names it in the captured output.
    fx.run_ok(&["-j", "4", "--retry-backoff-s", "0"]);

    let results = fx.results().await;
    let keys: BTreeSet<(String, u32)> = results
        .records
        .iter()
        .map(|r| (r.instance_id.clone(), r.sample_index))
        .collect();
    assert_eq!(
        (results.records.len(), keys.len()),
        (12, 12),
        "seed {seed}: exactly one result per sample"
    );
    assert!(
        results.dead.is_empty(),
        "seed {seed}: transient faults dead-lettered samples: {:?}",
        results.dead
    );
    for r in &results.records {
        // No fault of the provider or of the runner became the agent's outcome.
        assert_eq!(
            r.exit_status,
            Some(ExitStatus::Submitted),
            "seed {seed}: {}#{}: {:?}",
            r.instance_id,
            r.sample_index,
            r.error
        );
        let resolved = r.verification.as_ref().is_some_and(|v| v.resolved);
        assert_eq!(
            resolved,
            r.instance_id != "bsearch",
            "seed {seed}: {}",
            r.instance_id
        );
    }
    assert_eq!(results.campaign.state, CampaignState::Done, "seed {seed}");
    assert_eq!(
        results.campaign.ledger.reserved,
        MicroUsd::ZERO,
        "seed {seed}: no reservation outlives its run"
    );
    assert_eq!(
        results.campaign.counts.success + results.campaign.counts.failed,
        12
    );
    assert!(
        results.checkpoints.is_empty(),
        "seed {seed}: partial records of killed attempts were left beside the results: {:?}",
        results.checkpoints
    );
    assert!(
        containers_of(&fx.name).await.is_empty(),
        "seed {seed}: no sandbox outlives its run"
    );
}
