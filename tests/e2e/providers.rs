//! Providers in one campaign: an OpenAI-compatible model, an Anthropic one and one on
//! Amazon Bedrock (through the AWS SDK, its endpoint overridden to the local server), each
//! through the format its API speaks, under injected faults; costs from each provider's own
//! usage, cache reads and writes priced apart. Fleet-wide rate limits, circuit breakers and
//! the context policy.

use crate::{Fixture, SECRET, fake_model, standard_tasks};
use std::collections::BTreeSet;
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::CampaignState;
use synthfleet_core::trajectory::{ExitStatus, Role};
use synthfleet_tests::fake_llm::{FakeLlm, Fault};

/// The Anthropic model's prices: $3 in, $15 out, $0.30 cache reads, $3.75 cache writes.
fn claude_cost(s: &synthfleet_core::trajectory::Step) -> MicroUsd {
    MicroUsd::from_usd_ceil(
        (3.0 * s.input_tokens as f64
            + 15.0 * s.output_tokens as f64
            + 0.3 * s.cache_read_tokens as f64
            + 3.75 * s.cache_write_tokens as f64)
            / 1e6,
    )
}

/// The Bedrock model's prices: $1 in, $4 out.
fn nova_cost(s: &synthfleet_core::trajectory::Step) -> MicroUsd {
    MicroUsd::from_usd_ceil((s.input_tokens as f64 + 4.0 * s.output_tokens as f64) / 1e6)
}

/// The OpenAI-compatible model's prices (see `fake_model`).
fn fake_cost(s: &synthfleet_core::trajectory::Step) -> MicroUsd {
    MicroUsd::from_usd_ceil((s.input_tokens as f64 + 2.0 * s.output_tokens as f64) / 1e6)
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_anthropic_and_bedrock_models_serve_one_campaign_under_faults() {
    let (tasks, scripts) = standard_tasks();
    let llm = FakeLlm::start(scripts);
    // Rate limits, an overloaded Anthropic (529), a server error and a cut-off body: each
    // retried at the call, whichever API it hits.
    llm.push_faults([
        Fault::Status {
            code: 429,
            retry_after: Some(0),
        },
        Fault::Status {
            code: 529,
            retry_after: None,
        },
        Fault::Malformed,
        Fault::Status {
            code: 500,
            retry_after: Some(0),
        },
    ]);
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 5.0\n{}\n[[models]]\nname = \"claude\"\nprovider = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nendpoint = \"{}\"\napi_key_env = \"FAKE_LLM_KEY\"\ninput_price_per_mtok = 3.0\noutput_price_per_mtok = 15.0\ncache_read_price_per_mtok = 0.3\ncache_write_price_per_mtok = 3.75\nmax_tokens = 256\nmax_attempts = 8\n\n[[models]]\nname = \"nova\"\nprovider = \"bedrock\"\nmodel = \"amazon.nova-pro-v1:0\"\nendpoint = \"{}\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 4.0\nmax_tokens = 256\nmax_attempts = 8\n",
        fake_model(&llm.url, "max_attempts = 8"),
        llm.url,
        llm.url
    );
    let fx = Fixture::new("e2e-providers", &tasks, &body);
    // Bedrock signs with AWS credentials from the standard chain.
    let out = crate::synthfleet(
        &["run", fx.campaign_arg(), "--concurrency", "3"],
        &[
            ("FAKE_LLM_KEY", SECRET),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let results = fx.results().await;
    assert_eq!(results.records.len(), 6);
    assert_eq!(results.campaign.state, CampaignState::Done);
    let models: BTreeSet<&str> = results.records.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(
        models,
        BTreeSet::from(["claude", "fake", "nova"]),
        "every model served"
    );
    let mut ledger = MicroUsd::ZERO;
    let mut estimated = 0;
    for r in &results.records {
        assert_eq!(
            r.exit_status,
            Some(ExitStatus::Submitted),
            "{}",
            r.instance_id
        );
        assert_eq!(r.attempt, 1, "no fault cost a sample an attempt");
        let resolved = r.verification.as_ref().is_some_and(|v| v.resolved);
        assert_eq!(resolved, r.instance_id != "bsearch", "{}", r.instance_id);
        // The record is in OpenAI's format whichever API served it.
        assert_eq!(r.messages[0].role, Role::System);
        assert!(r.messages.iter().any(|m| !m.tool_calls.is_empty()));
        assert_eq!(r.messages[2].reasoning_content.as_deref(), Some("step 0"));
        let (provider, price): (&str, fn(&synthfleet_core::trajectory::Step) -> MicroUsd) =
            match r.model.as_str() {
                "claude" => ("anthropic", claude_cost),
                "nova" => ("bedrock", nova_cost),
                _ => ("openai", fake_cost),
            };
        assert_eq!(r.provider, provider);
        let steps: MicroUsd = r.steps.iter().map(price).sum();
        assert_eq!(
            MicroUsd::from_usd_ceil(r.totals.cost_usd),
            steps,
            "{}",
            r.instance_id
        );
        estimated += r.steps.iter().filter(|s| s.cost_estimated).count();
        if r.model == "claude" {
            // The conversation so far is read from the cache, the newest turn written to it.
            assert!(r.steps[0].cache_write_tokens > 0, "{:?}", r.steps[0]);
            assert!(
                r.steps[1..]
                    .iter()
                    .filter(|s| !s.cost_estimated)
                    .all(|s| s.cache_read_tokens > 0 && s.input_tokens == 0)
            );
            assert_eq!(
                r.totals.cache_read_tokens,
                r.steps.iter().map(|s| s.cache_read_tokens).sum::<u64>()
            );
        }
        ledger = ledger.saturating_add(steps);
    }
    // The one cut-off body was billed: its step is booked with the estimate, and says so.
    assert_eq!(estimated, 1, "one step had a cut-off body");
    assert_eq!(
        results.campaign.ledger.spent, ledger,
        "the ledger is the records' sum"
    );
    assert_eq!(results.campaign.ledger.reserved, MicroUsd::ZERO);

    // Per model, from the metadata alone: `status --models`.
    let status = crate::synthfleet(&["status", fx.campaign_arg(), "--models", "--json"], &[]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let models = status["campaigns"][0]["models"]
        .as_array()
        .expect("models")
        .clone();
    let named: BTreeSet<&str> = models.iter().filter_map(|m| m["model"].as_str()).collect();
    assert_eq!(named, BTreeSet::from(["claude", "fake", "nova"]));
    let total: f64 = models.iter().filter_map(|m| m["cost_usd"].as_f64()).sum();
    assert!(
        (total - ledger.as_usd()).abs() < 1e-5,
        "{total} vs {ledger}"
    );
    for m in &models {
        let records: Vec<_> = results
            .records
            .iter()
            .filter(|r| r.model == m["model"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(m["trajectories"], records.len());
        assert_eq!(
            m["cache_read_tokens"],
            records
                .iter()
                .map(|r| r.totals.cache_read_tokens)
                .sum::<u64>()
        );
    }

    // The fake refuses what Anthropic's API refuses (no version header, turns that do not
    // alternate, a tool call without its result, the signed thinking not sent back): every
    // rollout submitted, so no request was refused.
    let requests = llm.requests();
    let anthropic = requests
        .iter()
        .filter(|r| r.get("system").is_some() && r["max_tokens"] == 256)
        .count();
    let bedrock = requests
        .iter()
        .filter(|r| r["inferenceConfig"]["maxTokens"] == 256 && r["toolConfig"]["tools"].is_array())
        .count();
    assert!(
        anthropic > 0 && bedrock > 0,
        "{anthropic} Anthropic, {bedrock} Converse requests"
    );
    // Each API got the key in its own header.
    let keys = llm.authorization_headers();
    assert!(keys.contains(&SECRET.to_owned()), "x-api-key");
    assert!(keys.contains(&format!("Bearer {SECRET}")), "bearer");
    assert!(
        keys.iter()
            .all(|k| k == SECRET || *k == format!("Bearer {SECRET}"))
    );
}

/// A model's `requests_per_minute` holds for the fleet: two worker processes together stay
/// within it (each paces at its share of the live workers), where each alone would use it
/// all.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_holds_across_worker_processes() {
    const RPM: u64 = 40;
    const WINDOW_S: u64 = 15;
    let moto = synthfleet_tests::moto::Moto::start().await;
    let (tasks, scripts) = standard_tasks();
    let llm = FakeLlm::start(scripts);
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 5.0\n{}",
        fake_model(&llm.url, &format!("requests_per_minute = {RPM}"))
    );
    let fx = Fixture::new("rate-shared", &tasks, &body);
    let submitted = crate::synthfleet_command(&["submit", fx.campaign_arg()], moto.env())
        .output()
        .expect("submit");
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let beats = ["--heartbeat-s", "1"];
    let workers = [
        crate::aws::spawn_worker(&moto, "rate-w1", &beats),
        crate::aws::spawn_worker(&moto, "rate-w2", &beats),
    ];
    let store = moto.store();
    crate::aws::wait_for(
        "all six samples committed",
        std::time::Duration::from_secs(240),
        async || {
            store
                .metadata
                .campaign(&fx.name)
                .await
                .is_ok_and(|c| c.is_some_and(|c| c.counts.success + c.counts.failed == 6))
        },
    )
    .await;
    for worker in workers {
        crate::aws::terminate(worker);
    }
    let served: BTreeSet<String> = store
        .metadata
        .trajectories(&fx.name)
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.worker_id)
        .collect();
    assert_eq!(served.len(), 2, "both workers served: {served:?}");

    // In every window, at most the window's share of the limit, plus the first call of
    // each worker and one for the moment the workers learn of each other (the documented
    // bound: a heartbeat's worth of the old share).
    let arrivals = llm.arrivals();
    assert!(arrivals.len() >= 18, "{} calls", arrivals.len());
    let window = std::time::Duration::from_secs(WINDOW_S);
    let allowed = (WINDOW_S * RPM).div_ceil(60) + 2 + 1;
    let busiest = arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|t| **t >= *start && **t - *start < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest as u64 <= allowed,
        "{busiest} calls in {WINDOW_S} s, the fleet's limit allows {allowed}"
    );
    let span = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(
        span.as_secs_f64() >= (arrivals.len() as f64 - 3.0) * 60.0 / RPM as f64,
        "{} calls in {span:?}",
        arrivals.len()
    );
}

/// A 429 storm on one model: after a few calls its circuit breaker opens and the rollouts
/// go on with its fallback, without calling it at every step; nothing is counted against
/// the agent.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_opens_the_breaker_and_rollouts_continue_on_the_fallback() {
    let (tasks, scripts) = standard_tasks();
    let storming: Vec<_> = scripts
        .iter()
        .cloned()
        .map(|mut s| {
            s.always = Some(Fault::Status {
                code: 429,
                retry_after: Some(0),
            });
            s
        })
        .collect();
    let storm = FakeLlm::start(storming);
    let good = FakeLlm::start(scripts);
    let body = format!(
        "samples_per_task = 2\nbudget_usd = 5.0\n[[models]]\nname = \"storm\"\nprovider = \"openai\"\nendpoint = \"{}\"\nmax_attempts = 2\nfallbacks = [\"fake\"]\nmax_tokens = 256\n{}",
        storm.url,
        fake_model(&good.url, "weight = 0")
    );
    let fx = Fixture::new("e2e-breaker", &tasks, &body);
    fx.run_ok(&["--concurrency", "3"]);

    let results = fx.results().await;
    assert_eq!(results.records.len(), 6);
    let mut calls = 0;
    for r in &results.records {
        assert_eq!(r.model, "storm", "routed to the storming model");
        assert_eq!(r.exit_status, Some(ExitStatus::Submitted));
        assert_eq!(r.attempt, 1);
        assert!(
            r.steps.iter().all(|s| s.model == "fake"),
            "served by the fallback"
        );
        calls += r.steps.len();
    }
    // Without the breaker every call would try the storming model first (2 attempts each).
    let tried = storm.requests().len();
    let bound = (synthfleet_llm::BREAKER_THRESHOLD as usize + 3) * 2;
    assert!(
        tried <= bound,
        "{tried} requests to the storming model for {calls} calls; the breaker allows {bound}"
    );
    assert_eq!(good.requests().len(), calls);
}

/// A rollout whose conversation outgrows the model's context window completes: old
/// observations are elided from what the model sees (the record keeps them whole). Without
/// the policy the same rollout ends as `context_exceeded`.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_longer_than_the_context_window_completes_with_elided_observations() {
    let tasks = vec![synthfleet_tests::task_line(
        "long",
        "leapyear",
        "[long] fix is_leap.",
        "python3 -m unittest -q",
    )];
    let fix = "sed -i 's/return year % 4 == 0$/return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)/' calendar_utils.py";
    let llm = FakeLlm::start(vec![synthfleet_tests::fake_llm::Script::new(
        "[long]",
        &[
            "seq 1 4000",
            "seq 1 4000",
            "seq 1 4000",
            fix,
            "python3 -m unittest -q",
            "submit",
        ],
    )]);
    // The server takes 5000 tokens (20 000 characters); each observation is 10 000.
    llm.set_context_window(5_000);
    let run = |name: &str, window: &str| {
        let body = format!(
            "budget_usd = 1.0\n{}\n[scaffold]\nkeep_recent_observations = 1\n",
            fake_model(&llm.url, window)
        );
        let fx = Fixture::new(name, &tasks, &body);
        fx.run_ok(&[]);
        fx
    };

    let fx = run("ctx-policy", "context_window = 6000");
    let results = fx.results().await;
    let r = results.record("long", 0);
    assert_eq!(r.exit_status, Some(ExitStatus::Submitted), "{:?}", r.error);
    assert!(r.verification.as_ref().is_some_and(|v| v.resolved));
    let elided: Vec<&Vec<usize>> = r
        .steps
        .iter()
        .map(|s| &s.context_elided)
        .filter(|e| !e.is_empty())
        .collect();
    assert!(
        !elided.is_empty(),
        "later steps saw old observations elided"
    );
    for indices in &elided {
        for &i in *indices {
            let kept = r.messages[i].content.as_deref().unwrap_or("");
            assert!(
                !kept.contains("output elided"),
                "the record keeps message {i} whole"
            );
        }
    }
    assert!(
        elided.iter().flat_map(|e| e.iter()).any(|&i| r.messages[i]
            .content
            .as_deref()
            .is_some_and(|c| c.contains("3999"))),
        "the big outputs were among the elided"
    );

    let fx = run("ctx-none", "");
    let results = fx.results().await;
    assert_eq!(
        results.record("long", 0).exit_status,
        Some(ExitStatus::ContextExceeded),
        "without a context window the conversation overflows"
    );
}
