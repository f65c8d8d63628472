//! What guards each model across the campaigns' pools of one worker process: the fleet's
//! rate limit and a circuit breaker.
//!
//! **Rate limits.** A model's `requests_per_minute` and `tokens_per_minute` are the fleet's:
//! each worker process paces its calls to that model at `limit / live workers`, the live
//! workers being those with a fresh heartbeat (the worker updates the count with every
//! heartbeat; a lone `synthfleet run` counts 1). Pacing spaces calls evenly — no burst, not
//! even at start, unlike a token bucket that starts full — so over any minute one worker
//! uses at most its share plus one call. A call counts as its prompt estimate plus
//! `max_tokens`: never fewer tokens than it uses.
//!
//! **Error bound.** While the count changes, workers pace at shares computed from counts up
//! to one heartbeat old: when `k` workers join `n`, the fleet can make up to
//! `requests_per_minute × k / n` extra calls per minute for one heartbeat interval, plus
//! one call per worker (its first slot). Workers leaving only lower the rate until the
//! others notice.
//!
//! **Circuit breakers.** After [`BREAKER_THRESHOLD`] calls in a row that found a model
//! unavailable (each already retried at the call), its breaker opens for
//! [`BREAKER_COOLDOWN`]: pools skip the model and go straight to its fallbacks. The first
//! call after the cool-down tries it again; a success closes the breaker, a failure opens
//! it anew.
//!
//! Both live in [`ModelGuards`], which outlives the campaigns' model pools: a pool rebuilt
//! when a campaign's spec is reloaded keeps each model's pacing and breaker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synthfleet_core::campaign::ModelConfig;
use tokio::time::Instant;

/// Calls in a row that found a model unavailable before its breaker opens.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker keeps a model out of the pools.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(60);

/// Pacers by (model name, what they count, how many a minute).
type Pacers = HashMap<(String, Unit, u64), Arc<Pacer>>;

/// The models' guards as one worker process applies them.
#[derive(Clone)]
pub struct ModelGuards {
    workers: Arc<AtomicU32>,
    pacers: Arc<Mutex<Pacers>>,
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
    cooldown: Duration,
}

impl Default for ModelGuards {
    fn default() -> ModelGuards {
        ModelGuards {
            workers: Arc::new(AtomicU32::new(1)),
            pacers: Arc::default(),
            breakers: Arc::default(),
            cooldown: BREAKER_COOLDOWN,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl ModelGuards {
    /// Sets how many live workers share each model's limit (at least 1).
    pub fn set_workers(&self, live: usize) {
        let live = u32::try_from(live).unwrap_or(u32::MAX).max(1);
        self.workers.store(live, Ordering::Relaxed);
    }

    pub fn workers(&self) -> u32 {
        self.workers.load(Ordering::Relaxed)
    }

    /// A different cool-down for open breakers (tests).
    pub fn with_cooldown(mut self, cooldown: Duration) -> ModelGuards {
        self.cooldown = cooldown;
        self
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the model's breaker is open, until when.
    pub fn open_until(&self, model: &str) -> Option<Instant> {
        self.breakers()
            .get(model)
            .and_then(|b| b.open_until)
            .filter(|until| *until > Instant::now())
    }

    /// The models whose breaker is open now, by name.
    pub fn open_breakers(&self) -> Vec<String> {
        let now = Instant::now();
        let mut open: Vec<String> = self
            .breakers()
            .iter()
            .filter(|(_, b)| b.open_until.is_some_and(|u| u > now))
            .map(|(name, _)| name.clone())
            .collect();
        open.sort();
        open
    }

    /// A call of `model` found it unavailable; returns whether its breaker opened now.
    pub fn record_unavailable(&self, model: &str) -> bool {
        let mut breakers = self.breakers();
        let breaker = breakers.entry(model.to_owned()).or_default();
        breaker.failures += 1;
        if breaker.failures >= BREAKER_THRESHOLD {
            let already = breaker.open_until.is_some_and(|u| u > Instant::now());
            breaker.open_until = Some(Instant::now() + self.cooldown);
            return !already;
        }
        false
    }

    /// A call of `model` succeeded: its breaker closes.
    pub fn record_success(&self, model: &str) {
        if let Some(breaker) = self.breakers().get_mut(model) {
            *breaker = Breaker::default();
        }
    }

    /// The pacer of one of a model's limits: the same for every pool of this process that
    /// names the model with the same limit.
    fn pacer(&self, model: &str, unit: Unit, per_minute: u64) -> Arc<Pacer> {
        let mut pacers = self.pacers.lock().unwrap_or_else(|p| p.into_inner());
        pacers
            .entry((model.to_owned(), unit, per_minute))
            .or_insert_with(|| Arc::new(Pacer::new(per_minute)))
            .clone()
    }

    /// The rate limit of a pool entry (`requests_per_minute`, `tokens_per_minute`), if it
    /// has one.
    pub fn rate_limit(&self, config: &ModelConfig) -> Option<RateLimit> {
        let requests = config
            .requests_per_minute
            .filter(|r| *r > 0)
            .map(|r| self.pacer(&config.name, Unit::Requests, u64::from(r)));
        let tokens = config
            .tokens_per_minute
            .filter(|t| *t > 0)
            .map(|t| self.pacer(&config.name, Unit::Tokens, t));
        (requests.is_some() || tokens.is_some()).then(|| RateLimit {
            requests,
            tokens,
            workers: self.workers.clone(),
        })
    }
}

/// What a pacer counts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Unit {
    Requests,
    Tokens,
}

/// One model's limits in this process.
#[derive(Clone)]
pub struct RateLimit {
    requests: Option<Arc<Pacer>>,
    tokens: Option<Arc<Pacer>>,
    workers: Arc<AtomicU32>,
}

impl RateLimit {
    /// Waits for this process's next slot for a call of about `tokens` tokens (prompt
    /// estimate plus `max_tokens`: never fewer than the call uses).
    pub async fn until_ready(&self, tokens: u64) {
        let workers = self.workers.load(Ordering::Relaxed).max(1);
        let limits = [
            (self.requests.as_deref(), 1),
            (self.tokens.as_deref(), tokens),
        ];
        let slot = Pacer::reserve_all(&limits, workers, Instant::now());
        tokio::time::sleep_until(slot).await;
    }
}

/// Evenly spaced slots: a call of `units` (1 request, or its tokens) may start once the
/// previous call's units have been paid off at the worker's share of the rate.
struct Pacer {
    per_minute: u64,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(per_minute: u64) -> Pacer {
        Pacer {
            per_minute,
            next: Mutex::new(None),
        }
    }

    /// How long `units` hold the next call back at a worker's share.
    fn interval(&self, workers: u32, units: u64) -> Duration {
        let nanos = 60_000_000_000u128 * u128::from(workers) * u128::from(units)
            / u128::from(self.per_minute.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Takes the next free slot at or after `now`; returns when it starts.
    #[cfg(test)]
    fn reserve(&self, workers: u32, units: u64, now: Instant) -> Instant {
        Pacer::reserve_all(&[(Some(self), units)], workers, now)
    }

    /// Takes one slot free in every pacer at once (the latest of their next slots) and
    /// moves each past it: a call held back by one limit saves up no credit in another.
    fn reserve_all(limits: &[(Option<&Pacer>, u64)], workers: u32, now: Instant) -> Instant {
        let mut held: Vec<_> = limits
            .iter()
            .filter_map(|(pacer, units)| {
                pacer.map(|p| (p, *units, p.next.lock().unwrap_or_else(|e| e.into_inner())))
            })
            .collect();
        let slot = held
            .iter()
            .filter_map(|(_, _, next)| **next)
            .fold(now, Instant::max);
        for (pacer, units, next) in &mut held {
            **next = Some(slot + pacer.interval(workers, *units));
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_workers_share_without_a_burst() {
        let pacer = Pacer::new(60);
        let t0 = Instant::now();
        let alone: Vec<Duration> = (0..3).map(|_| pacer.reserve(1, 1, t0) - t0).collect();
        assert_eq!(
            alone,
            [0, 1, 2].map(Duration::from_secs),
            "one a second, even at start"
        );
        // Three workers share the limit: this one gets a slot every 3 s.
        let shared = pacer.reserve(3, 1, t0) - t0;
        let after = pacer.reserve(3, 1, t0) - t0;
        assert_eq!(
            (shared, after),
            (Duration::from_secs(3), Duration::from_secs(6))
        );
        // Idle time is not saved up.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(pacer.reserve(1, 1, later), later);
        assert_eq!(pacer.reserve(1, 1, later) - later, Duration::from_secs(1));
        // Tokens: a call of 30 000 tokens at 60 000 a minute holds the next one 30 s.
        let tokens = Pacer::new(60_000);
        assert_eq!(tokens.reserve(1, 30_000, t0), t0);
        assert_eq!(tokens.reserve(1, 10, t0) - t0, Duration::from_secs(30));
        // Both limits: a call held back by tokens saves up no request credit, so the calls
        // after it do not burst.
        let (requests, tokens) = (Pacer::new(60), Pacer::new(60_000));
        let both =
            |units| Pacer::reserve_all(&[(Some(&requests), 1), (Some(&tokens), units)], 1, t0);
        assert_eq!(both(59_000), t0);
        let second = both(10);
        assert_eq!(second - t0, Duration::from_secs(59));
        assert!(
            both(10) - second >= Duration::from_secs(1),
            "one a second after it"
        );
    }

    #[test]
    fn a_breaker_opens_after_repeated_unavailability_and_closes_on_success() {
        let guards = ModelGuards::default();
        assert!(!guards.record_unavailable("m"));
        assert!(!guards.record_unavailable("m"));
        assert!(guards.open_until("m").is_none(), "not yet");
        assert!(guards.record_unavailable("m"), "opens at the threshold");
        assert!(guards.open_until("m").is_some());
        assert_eq!(guards.open_breakers(), ["m"]);
        guards.record_success("m");
        assert!(guards.open_until("m").is_none() && guards.open_breakers().is_empty());
        let brief = ModelGuards::default().with_cooldown(Duration::ZERO);
        for _ in 0..BREAKER_THRESHOLD {
            brief.record_unavailable("m");
        }
        assert!(
            brief.open_until("m").is_none(),
            "the cool-down is over: try again"
        );
    }

    #[test]
    fn a_rebuilt_pool_keeps_the_pacing_state() {
        let guards = ModelGuards::default();
        let config: ModelConfig = serde_json::from_value(serde_json::json!({
            "name": "m", "provider": "openai", "endpoint": "http://127.0.0.1:9/v1",
            "requests_per_minute": 30
        }))
        .expect("config");
        let first = guards.rate_limit(&config).expect("limited");
        let again = guards.rate_limit(&config).expect("limited");
        let (Some(first), Some(again)) = (first.requests, again.requests) else {
            panic!("a request pacer");
        };
        assert!(Arc::ptr_eq(&first, &again));
        guards.set_workers(0);
        assert_eq!(guards.workers(), 1, "at least this worker");
        let unlimited: ModelConfig =
            serde_json::from_value(serde_json::json!({"name": "u", "provider": "replay"}))
                .expect("config");
        assert!(guards.rate_limit(&unlimited).is_none());
    }
}
