//! Adaptive sampling end to end (`[sampling] strategy = "adaptive"`): three tasks with
//! known outcomes — one the model always fixes, one it never does, one it fixes in every
//! other conversation — in rounds of 2 out of a pool of 4 samples per task. The uniform
//! tasks stop after their first round; the mixed one gets the samples they left, up to
//! `max_per_task`; the campaign, `status` and the report say so.

use crate::quality::ok;
use crate::{Fixture, fake_model, standard_tasks, synthfleet};
use serde_json::Value;
use synthfleet_core::budget::CampaignState;
use synthfleet_core::sampling::{StopReason, Verdict, judge};
use synthfleet_tests::fake_llm::{FakeLlm, Script};

/// `[median]` always resolved, `[leap]` resolved in every other conversation, `[bsearch]`
/// never; and the campaign body with `sampling`.
fn known_outcomes(sampling: &str) -> (Vec<String>, FakeLlm, String) {
    let (tasks, scripts) = standard_tasks();
    let leap_fix = scripts[1].actions[0].clone();
    let llm = FakeLlm::start(vec![
        scripts[0].clone(),
        Script::alternating("[leap]", &[&leap_fix, "ls"], &["submit"]),
        Script::new("[bsearch]", &["ls", "submit"]),
    ]);
    let body = format!(
        "samples_per_task = 4\nbudget_usd = 1.0\n\n{}\n{sampling}",
        fake_model(&llm.url, "")
    );
    (tasks, llm, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn uniform_tasks_stop_and_mixed_ones_get_the_rest_of_the_pool() {
    let (tasks, _llm, body) = known_outcomes(
        "[sampling]\nstrategy = \"adaptive\"\nround_size = 2\nmax_per_task = 6\nstop_when = [\"all_resolved\", \"all_unresolved\"]\n",
    );
    let fx = Fixture::new("e2e-adaptive", &tasks, &body);
    let out = fx.run_ok(&["-j", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);

    let results = fx.results().await;
    let per_task = |instance: &str| {
        let mut samples: Vec<(u32, bool)> = results
            .metas
            .iter()
            .filter(|m| m.summary.instance_id == instance)
            .map(|m| (m.summary.sample_index, m.resolved == Some(true)))
            .collect();
        samples.sort();
        samples
    };
    assert_eq!(per_task("median"), [(0, true), (1, true)], "{stdout}");
    assert_eq!(per_task("bsearch"), [(0, false), (1, false)]);
    let leap = per_task("leap");
    assert_eq!(
        leap.iter().map(|s| s.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5],
        "the mixed task gets rounds up to max_per_task"
    );
    for round in leap.chunks(2) {
        assert_ne!(round[0].1, round[1].1, "every round of `leap` is mixed");
    }
    let c = &results.campaign;
    let tally = c.adaptive.clone().expect("the adaptive tally");
    assert_eq!(c.state, CampaignState::Done, "{c:?}");
    assert_eq!(c.total_samples, 10);
    assert_eq!(
        (
            tally.pool,
            tally.tasks,
            tally.continued,
            tally.open_rounds,
            tally.stopped(StopReason::AllResolved),
            tally.stopped(StopReason::AllUnresolved),
            tally.stopped(StopReason::MaxPerTask)
        ),
        (12, 3, 2, 0, 1, 1, 1)
    );

    let status = ok(
        &synthfleet(
            &["status", "--state-dir", crate::path_str(&fx.state_dir())],
            &[],
        ),
        "status",
    );
    assert!(
        status.contains(
            "sampling adaptive: pool 12 samples for 3 tasks; 2 more rounds given to mixed outcomes, 0 rounds open; tasks stopped: all_resolved 1, all_unresolved 1, max_per_task 1"
        ),
        "{status}"
    );

    let report: Value = serde_json::from_str(&ok(
        &synthfleet(&["report", fx.campaign_arg(), "--format", "json"], &[]),
        "report",
    ))
    .expect("report JSON");
    let s = &report["sampling"];
    assert_eq!(s["strategy"], "adaptive");
    assert_eq!(
        (
            s["groups"].as_u64(),
            s["mixed_groups"].as_u64(),
            s["signal_trajectories"].as_u64()
        ),
        (Some(5), Some(3), Some(6))
    );
    assert!((s["signal_share"].as_f64().expect("a share") - 0.6).abs() < 1e-9);
    let leap_rate = s["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["instance_id"] == "leap")
        .expect("leap's rate");
    assert_eq!(leap_rate["pass_rate"].as_f64(), Some(0.5));
    assert_eq!(leap_rate["rounds"].as_u64(), Some(3));

    // Running it again finds every round decided: nothing more is sampled.
    fx.run_ok(&[]);
    let again = fx.results().await;
    assert_eq!(again.metas.len(), 10);
    assert_eq!(again.campaign.total_samples, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_campaign_sampled_fixed_spends_its_pool_evenly() {
    let (tasks, _llm, body) = known_outcomes("");
    let fx = Fixture::new("e2e-fixed-sampling", &tasks, &body);
    fx.run_ok(&["-j", "2"]);
    let results = fx.results().await;
    assert_eq!(results.metas.len(), 12);
    assert!(results.campaign.adaptive.is_none());
    let report: Value = serde_json::from_str(&ok(
        &synthfleet(&["report", fx.campaign_arg(), "--format", "json"], &[]),
        "report",
    ))
    .expect("report JSON");
    let s = &report["sampling"];
    assert_eq!(s["strategy"], "fixed");
    // One group of 4 per task: only `leap`'s is mixed.
    assert_eq!(
        (s["groups"].as_u64(), s["signal_trajectories"].as_u64()),
        (Some(3), Some(4))
    );
}

/// The same adaptive campaign on a fleet (moto's SQS, S3 and DynamoDB; two workers taking
/// two samples each at once): rounds are decided by whichever worker settles their last
/// sample, once, each as the outcomes committed say, and every planned sample runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_samples_adaptively_as_one_machine_does() {
    use crate::aws::{run_cli, spawn_worker, terminate, wait_for};
    use std::time::Duration;
    use synthfleet_tests::moto::Moto;

    let moto = Moto::start().await;
    let (tasks, _llm, body) =
        known_outcomes("[sampling]\nstrategy = \"adaptive\"\nround_size = 2\nmax_per_task = 6\n");
    let fx = Fixture::new("aws-adaptive", &tasks, &body);
    let submitted = run_cli(&moto, &["submit", fx.campaign_arg()]);
    assert!(
        String::from_utf8_lossy(&submitted.stdout).contains("6 enqueued"),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let beats = ["--heartbeat-s", "1"];
    let workers = [
        spawn_worker(&moto, "w1", &beats),
        spawn_worker(&moto, "w2", &beats),
    ];
    let store = moto.store();
    wait_for(
        "every round decided",
        Duration::from_secs(240),
        async || {
            store
                .metadata
                .campaign(&fx.name)
                .await
                .ok()
                .flatten()
                .is_some_and(|c| c.is_finished())
        },
    )
    .await;
    for worker in workers {
        terminate(worker);
    }
    let c = store
        .metadata
        .campaign(&fx.name)
        .await
        .expect("read")
        .expect("the campaign");
    let metas = store.metadata.trajectories(&fx.name).await.expect("list");
    let count = |instance: &str| {
        metas
            .iter()
            .filter(|m| m.summary.instance_id == instance)
            .count()
    };
    assert_eq!((count("median"), count("bsearch")), (2, 2));
    // A rollout that starts over (its lease lost before its first step was recorded) asks
    // its first turn again, so which of `leap`'s conversations fix it is not fixed here:
    // every decision must follow from the outcomes committed, round by round.
    let config = synthfleet_tasks::load_campaign(&fx.campaign)
        .expect("the campaign")
        .config;
    let mut planned = 0;
    let mut continued = 0;
    let mut stopped = std::collections::BTreeMap::new();
    for task in ["median", "bsearch", "leap"] {
        let mut rounds: std::collections::BTreeMap<u32, Vec<Option<bool>>> = Default::default();
        for m in metas.iter().filter(|m| m.summary.instance_id == task) {
            rounds
                .entry(config.round_of(m.summary.sample_index))
                .or_default()
                .push(Some(m.resolved == Some(true)));
        }
        let last = rounds.len() as u32 - 1;
        for (round, outcomes) in &rounds {
            assert_eq!(outcomes.len(), 2, "{task} round {round} is whole");
            planned += 2;
            match judge(&config, *round, outcomes) {
                Verdict::Continue { .. } => {
                    assert!(*round < last, "{task} round {round} asked for another");
                    continued += 1;
                }
                Verdict::Stop { reason } => {
                    assert_eq!(*round, last, "{task} stopped at round {round}");
                    *stopped.entry(reason).or_insert(0u64) += 1;
                }
            }
        }
    }
    let tally = c.adaptive.expect("the adaptive tally");
    assert_eq!(
        (c.total_samples, tally.continued, tally.open_rounds),
        (planned, continued, 0)
    );
    for reason in StopReason::ALL {
        assert_eq!(
            tally.stopped(reason),
            stopped.get(&reason).copied().unwrap_or(0),
            "{reason:?}"
        );
    }
    assert!(
        tally.stopped(StopReason::AllResolved) >= 1
            && tally.stopped(StopReason::AllUnresolved) >= 1,
        "median and bsearch stop after their first round: {tally:?}"
    );
    // Every planned sample was sent, and has its one result. (A redelivered sample of a
    // round its decider is still sending may send the round again: at least once, and the
    // conditional commit keeps one result per sample.)
    assert!(
        c.counts.enqueued >= planned,
        "{} < {planned}",
        c.counts.enqueued
    );
    assert_eq!(metas.len() as u64, planned);
}
