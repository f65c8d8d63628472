//! The metadata port: campaign states, the budget ledger with its leases, exactly-once
//! commits, dead letters, liveness.

use chrono::{Duration as Age, Utc};
use std::sync::Arc;
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::{BudgetLease, CampaignState, Spend};
use synthfleet_core::liveness::{self, Reclaim};
use synthfleet_core::message::ResultKey;
use synthfleet_core::ports::{
    CommitOutcome, DeadLetter, Draw, MetadataStore, Reservation, WorkerHeartbeat,
};
use synthfleet_core::trajectory::{ErrorKind, ExitStatus, RecordStatus};
use synthfleet_llm::{Holding, Wallet};
use tokio_util::sync::CancellationToken;

/// Concurrent reservers in [`the_cap_holds_under_concurrency`].
pub const RESERVERS: usize = 50;

/// Runs the whole suite on an empty store.
pub async fn conforms(store: Arc<dyn MetadataStore>) {
    states_change_only_along_the_rules(store.as_ref()).await;
    the_cap_holds_under_concurrency(store.clone()).await;
    slices_are_sized_within_the_headroom(store.as_ref()).await;
    the_cap_holds_for_wallets_under_contention(store.clone()).await;
    settling_twice_books_once(store.as_ref()).await;
    a_ledger_that_moved_is_not_repaired(store.as_ref()).await;
    leases_of_the_dead_are_reclaimed(store.as_ref()).await;
    a_sample_commits_exactly_once(store.clone()).await;
    dead_letters_count_once(store.as_ref()).await;
    markers_alerts_and_heartbeats(store.as_ref()).await;
    rounds_are_decided_once_and_share_the_pool(store.clone()).await;
    commits_are_read_in_order_and_resumed(store.as_ref()).await;
}

/// Creates a running campaign.
async fn create(store: &dyn MetadataStore, name: &str, budget: u64, samples: u64) {
    store
        .upsert_campaign(name, MicroUsd(budget), samples)
        .await
        .expect("create a campaign");
}

fn lease(campaign: &str, owner: &str, amount: u64) -> BudgetLease {
    BudgetLease::new(campaign, owner, MicroUsd(amount), Utc::now())
}

/// The heartbeat of a worker with a rollout in flight, beating every 30 s, last at `at`.
pub fn busy_worker(worker_id: &str, at: chrono::DateTime<Utc>) -> WorkerHeartbeat {
    WorkerHeartbeat {
        worker_id: worker_id.into(),
        at,
        in_flight: 1,
        completed: 0,
        version: "test".into(),
        interval_s: 30,
        last_active: None,
        open_breakers: Vec::new(),
    }
}

/// Reserves exactly `lease.amount`, or nothing.
pub async fn reserve(store: &dyn MetadataStore, lease: &BudgetLease, spend: Spend) -> Reservation {
    store
        .reserve(&Draw::exact(lease.clone(), spend))
        .await
        .expect("reserve")
}

async fn ledger(store: &dyn MetadataStore, campaign: &str) -> synthfleet_core::budget::Ledger {
    store
        .campaign(campaign)
        .await
        .expect("read campaign")
        .expect("campaign exists")
        .ledger
}

pub use synthfleet_core::testing::sample_meta;

async fn states_change_only_along_the_rules(store: &dyn MetadataStore) {
    let created = store
        .upsert_campaign("states", MicroUsd(100), 2)
        .await
        .expect("create");
    assert_eq!(created.state, CampaignState::Running);
    assert!(store.campaign("absent").await.expect("read").is_none());
    assert!(
        store
            .set_state("states", CampaignState::Paused, Some("by hand".into()))
            .await
            .expect("pause")
    );
    // Rollouts already running may finish their calls while paused.
    let running_call = lease("states", "w", 10);
    assert_eq!(
        reserve(store, &running_call, Spend::Rollout).await,
        Reservation::Granted(running_call.clone())
    );
    assert!(
        store
            .settle(&running_call, MicroUsd(5))
            .await
            .expect("settle")
    );
    assert!(
        store
            .set_state("states", CampaignState::Running, None)
            .await
            .expect("resume")
    );
    assert!(
        store
            .set_state("states", CampaignState::Done, None)
            .await
            .expect("done")
    );
    assert!(
        !store
            .set_state("states", CampaignState::Paused, None)
            .await
            .expect("pause"),
        "a done campaign is not paused"
    );
    // Done: no rollout spend, but quality work (the judge) may still pay.
    assert!(matches!(
        reserve(store, &lease("states", "w", 10), Spend::Rollout).await,
        Reservation::Refused(_)
    ));
    let judge = lease("states", "judge", 10);
    assert_eq!(
        reserve(store, &judge, Spend::Quality).await,
        Reservation::Granted(judge.clone())
    );
    assert!(store.settle(&judge, MicroUsd(10)).await.expect("settle"));
    let record = store.campaign("states").await.expect("read").expect("item");
    assert_eq!(
        (record.state, record.ledger.spent, record.ledger.reserved),
        (CampaignState::Done, MicroUsd(15), MicroUsd::ZERO)
    );
    let names: Vec<String> = store
        .campaigns()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(names.contains(&"states".to_owned()), "{names:?}");
}

/// [`RESERVERS`] concurrent callers reserve 30 and settle 25 until refused: nothing is
/// granted past the cap, every lease is settled, and the campaign says why it stopped.
async fn the_cap_holds_under_concurrency(store: Arc<dyn MetadataStore>) {
    create(store.as_ref(), "cap", 1_000, 4).await;
    let reservers: Vec<_> = (0..RESERVERS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut granted = 0u64;
                loop {
                    let lease = lease("cap", &format!("w{i}"), 30);
                    match reserve(store.as_ref(), &lease, Spend::Rollout).await {
                        Reservation::Granted(_) => {
                            granted += 1;
                            assert!(store.settle(&lease, MicroUsd(25)).await.expect("settle"));
                        }
                        Reservation::Busy => {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await
                        }
                        Reservation::Refused(_) => return granted,
                    }
                }
            })
        })
        .collect();
    let mut granted = 0;
    for r in reservers {
        granted += r.await.expect("join");
    }
    let record = store.campaign("cap").await.expect("read").expect("item");
    let ledger = record.ledger;
    assert_eq!(ledger.reserved, MicroUsd::ZERO);
    assert_eq!(ledger.spent, MicroUsd(granted * 25));
    assert!(ledger.spent <= ledger.budget, "{ledger:?}");
    assert!(
        ledger.spent.0 + 30 > 1_000,
        "stopped only when no call could fit"
    );
    assert!(store.leases("cap").await.expect("leases").is_empty());
    assert_eq!(record.state, CampaignState::Exhausted);
    assert!(
        record
            .state_reason
            .as_deref()
            .is_some_and(|r| r.contains("budget cap")),
        "{:?}",
        record.state_reason
    );
    // Same budget: stays exhausted; a raised one resumes, keeping what was spent.
    let same = store
        .upsert_campaign("cap", MicroUsd(1_000), 4)
        .await
        .expect("resubmit");
    assert_eq!(same.state, CampaignState::Exhausted);
    let raised = store
        .upsert_campaign("cap", MicroUsd(2_000), 4)
        .await
        .expect("resubmit");
    assert_eq!(
        (raised.state, raised.ledger.spent),
        (CampaignState::Running, ledger.spent)
    );
}

/// A slice is granted between its minimum and what it wants, within its share of the
/// headroom; the lease stored holds what was granted, and only that amount settles it.
async fn slices_are_sized_within_the_headroom(store: &dyn MetadataStore) {
    create(store, "slices", 1_000, 1).await;
    let draw = |wanted: u64, minimum: u64, holders: u32| Draw {
        lease: lease("slices", "w", wanted),
        minimum: MicroUsd(minimum),
        holders,
        spend: Spend::Rollout,
    };
    let granted = |reservation: Reservation| match reservation {
        Reservation::Granted(lease) => lease,
        other => panic!("expected a slice, got {other:?}"),
    };
    let first = granted(store.reserve(&draw(600, 10, 1)).await.expect("draw"));
    assert_eq!(first.amount, MicroUsd(600));
    let second = granted(store.reserve(&draw(600, 10, 2)).await.expect("draw"));
    assert_eq!(second.amount, MicroUsd(200), "half of the 400 left");
    assert_eq!(
        store.reserve(&draw(600, 201, 1)).await.expect("draw"),
        Reservation::Busy,
        "200 left: a call of 201 waits for the others"
    );
    let mut leases = store.leases("slices").await.expect("leases");
    leases.sort_by_key(|l| l.amount);
    assert_eq!(leases, [second.clone(), first.clone()], "stored as granted");
    let wrong = BudgetLease {
        amount: MicroUsd(600),
        ..second.clone()
    };
    assert!(
        !store.settle(&wrong, MicroUsd(1)).await.expect("settle"),
        "a settle that names another amount books nothing"
    );
    assert!(store.settle(&second, MicroUsd(150)).await.expect("settle"));
    assert!(store.settle(&first, MicroUsd(500)).await.expect("settle"));
    let ledger = ledger(store, "slices").await;
    assert_eq!(
        (ledger.spent, ledger.reserved, ledger.writes),
        (MicroUsd(650), MicroUsd::ZERO, 4),
        "two draws and two settles written; refusals write nothing"
    );
}

/// Workers meter calls on budget slices held in [`Wallet`]s: each call holds its worst
/// case, books a real cost below it, and the wallets draw and return slices as they go,
/// until the campaign refuses. The cap holds exactly (nothing is spent past it, every
/// cent booked is a call's real cost), every slice is returned, and the campaign item is
/// written once per many calls.
async fn the_cap_holds_for_wallets_under_contention(store: Arc<dyn MetadataStore>) {
    const WORKERS: usize = 8;
    const CALLS_AT_ONCE: usize = 4;
    const WORST: u64 = 100;
    create(store.as_ref(), "wallets", 200_000, 1).await;
    let cancel = CancellationToken::new();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let wallet = Arc::new(Wallet::new(store.clone(), &format!("worker-{w}")));
        wallet.set_holders(WORKERS);
        for c in 0..CALLS_AT_ONCE {
            let (wallet, cancel) = (wallet.clone(), cancel.clone());
            workers.push(tokio::spawn(async move {
                let (mut calls, mut booked) = (0u64, 0u64);
                loop {
                    let holding = wallet
                        .hold(
                            "wallets",
                            Spend::Rollout,
                            MicroUsd(WORST),
                            std::time::Duration::from_secs(30),
                            &cancel,
                        )
                        .await
                        .expect("hold");
                    let Holding::Held(hold) = holding else {
                        wallet.close().await;
                        return (calls, booked);
                    };
                    // Real costs vary below the worst case, as a reply's length does.
                    let cost = 40 + (calls * 7 + c as u64 * 13) % 55;
                    tokio::task::yield_now().await;
                    wallet.release(hold, MicroUsd(cost)).await;
                    calls += 1;
                    booked += cost;
                }
            }));
        }
    }
    let (mut calls, mut booked) = (0, 0);
    for worker in workers {
        let (c, b) = worker.await.expect("join");
        calls += c;
        booked += b;
    }
    let record = store
        .campaign("wallets")
        .await
        .expect("read")
        .expect("item");
    let ledger = record.ledger;
    assert_eq!(ledger.reserved, MicroUsd::ZERO, "every slice returned");
    assert!(store.leases("wallets").await.expect("leases").is_empty());
    assert_eq!(
        ledger.spent,
        MicroUsd(booked),
        "every call booked at its real cost, once"
    );
    assert!(ledger.spent <= ledger.budget, "{ledger:?}");
    assert!(
        ledger.spent.0 + WORST > ledger.budget.0,
        "stopped only when no call could fit: {ledger:?}"
    );
    assert_eq!(record.state, CampaignState::Exhausted);
    assert!(
        ledger.writes * 5 < calls,
        "{} ledger writes for {calls} calls: slices, not a write per call",
        ledger.writes
    );
}

async fn settling_twice_books_once(store: &dyn MetadataStore) {
    create(store, "settle", 1_000, 1).await;
    let call = lease("settle", "w", 100);
    assert_eq!(
        reserve(store, &call, Spend::Rollout).await,
        Reservation::Granted(call.clone())
    );
    assert_eq!(
        store.leases("settle").await.expect("leases"),
        std::slice::from_ref(&call),
        "the reservation is a record with its owner"
    );
    let renewed = call.renewed(Utc::now() + Age::minutes(1));
    assert!(store.renew(&renewed).await.expect("renew"));
    assert_eq!(
        store.leases("settle").await.expect("leases")[0].expires_at,
        renewed.expires_at
    );
    assert!(store.settle(&call, MicroUsd(40)).await.expect("settle"));
    assert!(
        !store
            .settle(&call, MicroUsd(40))
            .await
            .expect("settle again"),
        "a retried settle finds no lease"
    );
    assert!(!store.renew(&renewed).await.expect("renew"), "gone");
    let ledger = ledger(store, "settle").await;
    assert_eq!(
        (ledger.spent, ledger.reserved),
        (MicroUsd(40), MicroUsd::ZERO)
    );
}

/// A repair applies only to the ledger it was computed from: one written meanwhile (a
/// draw or settle racing an audit) is left alone. On a ledger that is right, the audit
/// finds nothing.
async fn a_ledger_that_moved_is_not_repaired(store: &dyn MetadataStore) {
    create(store, "audit", 1_000, 1).await;
    let held = lease("audit", "w", 100);
    assert_eq!(
        reserve(store, &held, Spend::Rollout).await,
        Reservation::Granted(held.clone())
    );
    let seen = ledger(store, "audit").await;
    assert!(
        liveness::audit_ledgers(store)
            .await
            .expect("audit")
            .iter()
            .all(|r| r.campaign != "audit"),
        "reserved is what the lease holds"
    );
    let other = lease("audit", "w", 50);
    reserve(store, &other, Spend::Rollout).await;
    assert!(
        !store
            .repair_ledger("audit", &seen, MicroUsd::ZERO)
            .await
            .expect("repair"),
        "the ledger moved since it was seen"
    );
    let now = ledger(store, "audit").await;
    assert!(
        store
            .repair_ledger("audit", &now, MicroUsd(100))
            .await
            .expect("repair")
    );
    let repaired = ledger(store, "audit").await;
    assert_eq!(
        (repaired.spent, repaired.reserved, repaired.writes),
        (MicroUsd(50), MicroUsd(100), now.writes + 1),
        "50 reserved by no lease (as the repair was told): booked as spent"
    );
    assert!(store.settle(&held, MicroUsd(30)).await.expect("settle"));
    // The lease of 50 the repair was told away is one the ledger now misses: the audit
    // finds it and reserves it again.
    let found: Vec<_> = liveness::audit_ledgers(store)
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.campaign == "audit")
        .map(|r| (r.found.reserved, r.found.held))
        .collect();
    assert_eq!(found, [(MicroUsd::ZERO, MicroUsd(50))]);
    assert!(store.settle(&other, MicroUsd(10)).await.expect("settle"));
    let end = ledger(store, "audit").await;
    assert_eq!((end.spent, end.reserved), (MicroUsd(90), MicroUsd::ZERO));
}

/// A worker killed mid-call leaves its lease; the reconciler books it at its worst case
/// once the worker's heartbeat is stale (or the lease expired), and spares live calls.
async fn leases_of_the_dead_are_reclaimed(store: &dyn MetadataStore) {
    create(store, "reclaim", 1_000, 1).await;
    let now = Utc::now();
    for (worker, age_s) in [("dead-worker", 600), ("live-worker", 1)] {
        store
            .heartbeat(&busy_worker(worker, now - Age::seconds(age_s)))
            .await
            .expect("heartbeat");
    }
    let dead = lease("reclaim", "dead-worker", 300);
    let live = lease("reclaim", "live-worker", 200);
    let mut forgotten = lease("reclaim", "judge-pid1", 50);
    forgotten.created_at = now - Age::minutes(10);
    forgotten.expires_at = now - Age::minutes(5);
    for l in [&dead, &live, &forgotten] {
        assert_eq!(
            reserve(store, l, Spend::Rollout).await,
            Reservation::Granted(l.clone())
        );
    }
    assert_eq!(ledger(store, "reclaim").await.reserved, MicroUsd(550));

    let mut reclaimed: Vec<String> = liveness::reclaim_leases(store, Reclaim::Stale(Utc::now()))
        .await
        .expect("reclaim")
        .into_iter()
        .map(|l| l.owner)
        .collect();
    reclaimed.sort();
    assert_eq!(reclaimed, ["dead-worker", "judge-pid1"]);
    let after = ledger(store, "reclaim").await;
    assert_eq!(
        (after.reserved, after.spent),
        (MicroUsd(200), MicroUsd(350)),
        "reclaimed at the worst case; the live call keeps its reservation"
    );
    assert!(
        liveness::reclaim_leases(store, Reclaim::Stale(Utc::now()))
            .await
            .expect("again")
            .is_empty(),
        "reclaiming is idempotent"
    );
    // The dead worker's late settle (it was only partitioned) books nothing more.
    assert!(
        !store
            .settle(&dead, MicroUsd(10))
            .await
            .expect("late settle")
    );
    assert!(store.settle(&live, MicroUsd(20)).await.expect("settle"));
    let end = ledger(store, "reclaim").await;
    assert_eq!((end.reserved, end.spent), (MicroUsd::ZERO, MicroUsd(370)));
}

async fn a_sample_commits_exactly_once(store: Arc<dyn MetadataStore>) {
    create(store.as_ref(), "commit", 10, 2).await;
    let key = ResultKey {
        campaign: "commit".into(),
        instance_id: "i".into(),
        sample_index: 0,
    };
    let commits: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            let meta = sample_meta(&key, &format!("01T{i}"));
            tokio::spawn(async move { store.commit(&meta).await.expect("commit") })
        })
        .collect();
    let mut winners = 0;
    for c in commits {
        if c.await.expect("join") == CommitOutcome::Committed {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let stored = store
        .result(&key)
        .await
        .expect("result")
        .expect("one result");
    assert_eq!(
        (stored.summary.cost_usd, stored.summary.cache_read_tokens),
        (0.01, 900),
        "the item keeps the cost and the cache tokens"
    );
    match store
        .commit(&sample_meta(&key, "01TLATE"))
        .await
        .expect("commit")
    {
        CommitOutcome::AlreadyCommitted(existing) => assert_eq!(*existing, stored),
        other => panic!("expected AlreadyCommitted, got {other:?}"),
    }
    let mut failed = sample_meta(
        &ResultKey {
            sample_index: 1,
            ..key.clone()
        },
        "01TFAILED",
    );
    failed.status = RecordStatus::Failed;
    failed.exit_status = ExitStatus::Error(ErrorKind::Sandbox);
    (failed.resolved, failed.reward) = (None, None);
    failed.summary.cache_read_tokens = 0;
    failed.expires_at = Some(failed.summary.created_at + Age::days(30));
    assert_eq!(
        store.commit(&failed).await.expect("commit"),
        CommitOutcome::Committed
    );
    assert_eq!(store.trajectories("commit").await.expect("list").len(), 2);
    assert_eq!(
        store
            .trajectory("01TFAILED")
            .await
            .expect("lookup")
            .expect("found"),
        failed,
        "the item reads back as committed (absent options, the expiry, the summary's fields)"
    );
    let counts = store
        .campaign("commit")
        .await
        .expect("read")
        .expect("item")
        .counts;
    assert_eq!((counts.success, counts.failed), (1, 1));
}

async fn dead_letters_count_once(store: &dyn MetadataStore) {
    create(store, "dead", 10, 1).await;
    let key = ResultKey {
        campaign: "dead".into(),
        instance_id: "poison".into(),
        sample_index: 0,
    };
    for (attempts, error) in [(3, "the worker's error"), (4, "the queue's backstop")] {
        store
            .record_dead_letter(&DeadLetter {
                key: key.clone(),
                attempts,
                error: error.into(),
                at: Utc::now(),
                history: Vec::new(),
            })
            .await
            .expect("record");
    }
    let letters = store.dead_letters("dead").await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].error, "the worker's error",
        "the first record, with the worker's error, is kept"
    );
    let record = store.campaign("dead").await.expect("read").expect("item");
    assert_eq!(record.counts.dead_lettered, 1);
    assert!(record.is_finished());
    // A redrive clears the record and uncounts it, once.
    let cleared = store.clear_dead_letter(&key).await.expect("clear");
    assert_eq!(
        cleared.map(|l| l.error),
        Some("the worker's error".to_owned())
    );
    assert!(
        store
            .clear_dead_letter(&key)
            .await
            .expect("clear")
            .is_none()
    );
    let record = store.campaign("dead").await.expect("read").expect("item");
    assert_eq!(record.counts.dead_lettered, 0);
    assert!(!record.is_finished());
}

/// A campaign item that does not decode (edited by hand, or written by a newer version) is
/// left out of the listing, which returns every other campaign: one bad item never stops
/// the budget and finalize functions for all campaigns. Asked for by name, it is an error.
/// `corrupt` writes such an item, named by its argument, behind the store's back.
pub async fn a_corrupt_campaign_item_is_skipped(
    store: &dyn MetadataStore,
    corrupt: impl AsyncFnOnce(&str),
) {
    create(store, "before-corrupt", 10, 1).await;
    corrupt("corrupt").await;
    create(store, "after-corrupt", 10, 1).await;
    let names: Vec<String> = store
        .campaigns()
        .await
        .expect("the listing survives a corrupt item")
        .into_iter()
        .map(|c| c.name)
        .collect();
    for name in ["before-corrupt", "after-corrupt"] {
        assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
    }
    assert!(!names.contains(&"corrupt".to_owned()), "{names:?}");
    assert!(
        matches!(
            store.campaign("corrupt").await,
            Err(synthfleet_core::ports::StoreError::Corrupt { .. })
        ),
        "asked for by name, the item is an error"
    );
}

async fn markers_alerts_and_heartbeats(store: &dyn MetadataStore) {
    create(store, "markers", 10, 1).await;
    // Each alert once, and never one below what was sent.
    for (pct, claimed) in [(50, true), (50, false), (80, true), (50, false)] {
        assert_eq!(
            store
                .claim_budget_alert("markers", pct)
                .await
                .expect("claim"),
            claimed,
            "claiming {pct}%"
        );
    }
    let record = store
        .campaign("markers")
        .await
        .expect("read")
        .expect("item");
    assert_eq!(record.alerted_pct, 80);
    assert!(
        store
            .enqueued_samples("markers")
            .await
            .expect("read")
            .is_empty()
    );
    // More than one write batch (DynamoDB takes 25), instance ids with separators in them.
    let keys: Vec<ResultKey> = (0..30)
        .map(|i| ResultKey {
            campaign: "markers".into(),
            instance_id: format!("org__repo-{}#x/y", i % 7),
            sample_index: i,
        })
        .collect();
    store.mark_enqueued(&keys).await.expect("mark");
    store
        .mark_enqueued(&keys[..3])
        .await
        .expect("marking again is harmless");
    let mut marked = store.enqueued_samples("markers").await.expect("read");
    marked.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(marked, expected);
    assert!(
        store
            .enqueued_samples("other")
            .await
            .expect("read")
            .is_empty()
    );
    store.add_enqueued("markers", 30).await.expect("count");
    let beat = WorkerHeartbeat {
        worker_id: "beating".into(),
        at: Utc::now(),
        in_flight: 2,
        completed: 7,
        version: "test".into(),
        interval_s: 5,
        last_active: Some(Utc::now()),
        open_breakers: vec!["flaky-model".into()],
    };
    store.heartbeat(&beat).await.expect("beat");
    let beats = store.heartbeats().await.expect("beats");
    let found = beats
        .iter()
        .find(|b| b.worker_id == "beating")
        .expect("the beat is listed");
    assert_eq!(
        (found.in_flight, found.completed, found.interval_s),
        (2, 7, 5)
    );
    assert_eq!(
        found.open_breakers,
        ["flaky-model"],
        "open breakers are kept"
    );
}

/// The campaign item and its adaptive tally.
async fn tallied(
    store: &dyn MetadataStore,
    campaign: &str,
) -> (
    synthfleet_core::budget::CampaignRecord,
    synthfleet_core::sampling::AdaptiveTally,
) {
    let c = store
        .campaign(campaign)
        .await
        .expect("read")
        .expect("campaign");
    let tally = c.adaptive.clone().expect("an adaptive tally");
    (c, tally)
}

/// Adaptive sampling: a round is decided once however many workers settle its last sample
/// at once, its decision and the campaign's tally change together, the pool is shared
/// exactly, and a campaign with an open round is not finished.
async fn rounds_are_decided_once_and_share_the_pool(store: Arc<dyn MetadataStore>) {
    use synthfleet_core::lifecycle::Trigger;
    use synthfleet_core::sampling::{
        Decided, RoundDecision, RoundKey, SamplePlan, StopReason, Verdict,
    };
    let campaign = "adaptive";
    // 2 tasks, rounds of 2: 4 samples planned now, a pool of 8.
    let plan = SamplePlan {
        samples: 4,
        adaptive: Some((8, 2)),
    };
    let (record, _) = store
        .submit_campaign(campaign, MicroUsd(1_000_000), &plan, &Trigger::Request)
        .await
        .expect("submit");
    let tally = record.adaptive.clone().expect("an adaptive tally");
    assert_eq!(
        (record.total_samples, tally.pool, tally.open_rounds),
        (4, 8, 2)
    );
    let decision = |task: &str, round: u32, verdict: Verdict| RoundDecision {
        round: RoundKey {
            campaign: campaign.into(),
            instance_id: task.into(),
            round,
        },
        verdict,
        resolved: 1,
        judged: 2,
        decided_at: Utc::now(),
        sent: false,
    };
    let more = |first| Verdict::Continue { first, samples: 2 };
    // Eight workers settle the last sample of t1's first round at once: one decides.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let d = decision("t1", 0, more(2));
            tokio::spawn(async move { store.decide_round(&d).await.expect("decide") })
        })
        .collect();
    let mut applied = 0;
    for racer in racers {
        let decided = racer.await.expect("join");
        assert_eq!(decided.decision().verdict, more(2));
        applied += usize::from(matches!(decided, Decided::Applied(_)));
    }
    assert_eq!(applied, 1, "a round is decided exactly once");
    let (c, tally) = tallied(store.as_ref(), campaign).await;
    assert_eq!(
        (c.total_samples, tally.open_rounds, tally.continued),
        (6, 2, 1)
    );
    store
        .round_sent(&decision("t1", 0, more(2)).round)
        .await
        .expect("mark sent");
    let again = store
        .decide_round(&decision("t1", 0, more(2)))
        .await
        .expect("decide again");
    assert!(
        matches!(&again, Decided::Existing(d) if d.sent),
        "{again:?}"
    );
    // t2 takes the rest of the pool; t1's next round does not fit and stops its task.
    let t2 = store
        .decide_round(&decision("t2", 0, more(2)))
        .await
        .expect("decide t2");
    assert!(matches!(t2, Decided::Applied(_)), "{t2:?}");
    let t1 = store
        .decide_round(&decision("t1", 1, more(4)))
        .await
        .expect("decide t1 again");
    assert!(matches!(t1, Decided::Applied(_)), "{t1:?}");
    assert_eq!(
        t1.decision().verdict,
        Verdict::Stop {
            reason: StopReason::PoolSpent
        }
    );
    let (c, _) = tallied(store.as_ref(), campaign).await;
    assert!(!c.is_finished(), "rounds are open and samples unaccounted");
    store
        .decide_round(&decision(
            "t2",
            1,
            Verdict::Stop {
                reason: StopReason::AllResolved,
            },
        ))
        .await
        .expect("decide t2 again");
    let (c, tally) = tallied(store.as_ref(), campaign).await;
    assert_eq!(c.total_samples, 8, "never more than the pool");
    assert_eq!(
        (
            tally.open_rounds,
            tally.continued,
            tally.stopped(StopReason::PoolSpent),
            tally.stopped(StopReason::AllResolved)
        ),
        (0, 2, 1, 1)
    );
    // A re-submission keeps the rounds planned.
    let (again, _) = store
        .submit_campaign(campaign, MicroUsd(1_000_000), &plan, &Trigger::Request)
        .await
        .expect("resubmit");
    assert_eq!(again.total_samples, 8);
    assert_eq!(again.adaptive.map(|t| t.continued), Some(2));
}

/// The commit order: every commit once, in the order committed, resumed exactly after a
/// cursor (also from its text form), a page at a time; losing duplicates and other
/// campaigns' commits (one whose name extends this one's too) are not in it.
async fn commits_are_read_in_order_and_resumed(store: &dyn MetadataStore) {
    let campaign = "tail";
    create(store, campaign, 10, 5).await;
    create(store, "tail-b", 10, 1).await;
    assert!(
        store
            .commits_after(campaign, None, 10)
            .await
            .expect("read an empty order")
            .is_empty()
    );
    let start = Utc::now() - Age::minutes(1);
    let mut committed = Vec::new();
    for i in 0..5u32 {
        let key = ResultKey {
            campaign: campaign.into(),
            instance_id: format!("task-{}", 4 - i),
            sample_index: i % 2,
        };
        let mut meta = sample_meta(&key, &format!("01TAIL{i}"));
        meta.summary.created_at = start + Age::milliseconds(i64::from(i) * 250);
        assert_eq!(
            store.commit(&meta).await.expect("commit"),
            CommitOutcome::Committed
        );
        committed.push(meta);
        if i == 2 {
            // A losing duplicate of the first sample, and a commit of the other campaign.
            let mut late = sample_meta(&committed[0].result_key(), "01TAILLATE");
            late.summary.created_at = start + Age::milliseconds(600);
            assert!(matches!(
                store.commit(&late).await.expect("commit"),
                CommitOutcome::AlreadyCommitted(_)
            ));
            let other = ResultKey {
                campaign: "tail-b".into(),
                instance_id: "task-0".into(),
                sample_index: 0,
            };
            let mut other = sample_meta(&other, "01TAILB");
            other.summary.created_at = start + Age::milliseconds(550);
            store.commit(&other).await.expect("commit");
        }
    }
    let all = store
        .commits_after(campaign, None, 100)
        .await
        .expect("read the order");
    let ids = |commits: &[synthfleet_core::commits::Commit]| -> Vec<String> {
        commits
            .iter()
            .map(|c| c.meta.summary.trajectory_id.clone())
            .collect()
    };
    assert_eq!(
        ids(&all),
        ["01TAIL0", "01TAIL1", "01TAIL2", "01TAIL3", "01TAIL4"]
    );
    assert_eq!(
        all.iter().map(|c| c.meta.clone()).collect::<Vec<_>>(),
        committed,
        "each commit carries its item as committed"
    );
    assert!(
        all.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "positions grow along the order"
    );
    assert!(all.iter().all(|c| c.cursor.campaign() == campaign));
    // Resumed after the second, from the cursor's text form.
    let resumed =
        synthfleet_core::commits::CommitCursor::decode_for(&all[1].cursor.encode(), campaign)
            .expect("the cursor reads back");
    let rest = store
        .commits_after(campaign, Some(&resumed), 100)
        .await
        .expect("resume");
    assert_eq!(ids(&rest), ["01TAIL2", "01TAIL3", "01TAIL4"]);
    // A page at a time.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .commits_after(campaign, after.as_ref(), 2)
            .await
            .expect("a page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.cursor.clone());
        paged.extend(page);
    }
    assert_eq!(ids(&paged), ids(&all));
    assert!(
        store
            .commits_after(campaign, all.last().map(|c| &c.cursor), 10)
            .await
            .expect("read past the end")
            .is_empty()
    );
    assert_eq!(
        ids(&store
            .commits_after("tail-b", None, 10)
            .await
            .expect("other")),
        ["01TAILB"]
    );
}
