//! `synthfleet status`: campaigns, budgets, counts, queue depth, dead letters and live
//! workers — once, or with `--watch` redrawn every few seconds with each campaign's pace
//! (samples and dollars an hour, the time left) until Ctrl-C.

use anyhow::Context;
use clap::Args;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use synthfleet_backend::{Backend, BackendConfig};
use synthfleet_core::MicroUsd;
use synthfleet_core::budget::CampaignRecord;
use synthfleet_core::campaign::Campaign;
use synthfleet_core::error_chain;
use synthfleet_core::ports::{DeadLetter, QueueStats, WorkerHeartbeat};
use synthfleet_core::sampling::AdaptiveTally;
use synthfleet_core::spend::{self, ModelSpend};
use synthfleet_core::trajectory::ExitStatus;
use synthfleet_term::BackendArgs;

#[derive(Args)]
pub struct StatusArgs {
    /// A campaign file: show that campaign (from its state directory when local).
    campaign: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print JSON instead of text.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Also each model's trajectories, successes, cost and tokens (cache reads and writes
    /// apart), from the campaign's trajectory items.
    #[arg(long)]
    models: bool,
    /// Redraw every --interval-s seconds until Ctrl-C, with each campaign's pace: samples
    /// accounted and dollars spent an hour, the time left, how long the budget lasts.
    #[arg(long)]
    watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    interval_s: u64,
}

/// How far back the pace looks: long enough to smooth rollouts that end in bursts.
const PACE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Workers seen this recently are listed.
const RECENT_WORKER: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// One campaign as a reading found it.
struct Row {
    campaign: CampaignRecord,
    queue: QueueStats,
    dead: Vec<DeadLetter>,
    models: Vec<ModelSpend>,
}

/// What one reading of the backend found.
struct Snapshot {
    describe: String,
    /// On AWS all campaigns share one queue.
    shared_queue: bool,
    rows: Vec<Row>,
    workers: Vec<WorkerHeartbeat>,
}

async fn read(
    backend: &Backend,
    only: Option<&Campaign>,
    models: bool,
) -> anyhow::Result<Snapshot> {
    let metadata = &backend.store().metadata;
    let mut campaigns = metadata.campaigns().await?;
    campaigns.retain(|c| only.is_none_or(|only| c.name == only.name()));
    campaigns.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for campaign in campaigns {
        let queue = backend.queue(&campaign.name).stats().await?;
        let dead = metadata.dead_letters(&campaign.name).await?;
        let models = if models {
            spend::by_model(&metadata.trajectories(&campaign.name).await?)
        } else {
            Vec::new()
        };
        rows.push(Row {
            campaign,
            queue,
            dead,
            models,
        });
    }
    Ok(Snapshot {
        describe: backend.describe(),
        shared_queue: matches!(backend, Backend::Aws { .. }),
        rows,
        workers: metadata.heartbeats().await?,
    })
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let campaign = args
        .campaign
        .as_deref()
        .map(synthfleet_tasks::load_campaign)
        .transpose()?;
    let config = args.backend.config()?;
    if args.watch {
        return watch(&args, &config, campaign.as_ref()).await;
    }
    let backend = Backend::open_existing(&config, campaign.as_ref()).await?;
    let snapshot = read(&backend, campaign.as_ref(), args.models).await?;
    if args.json {
        let value = serde_json::json!({
            "campaigns": snapshot.rows
                .iter()
                .map(|r| serde_json::json!({"campaign": r.campaign, "queue": r.queue, "dead_letters": r.dead, "models": r.models}))
                .collect::<Vec<_>>(),
            "workers": snapshot.workers,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&snapshot, None));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads and draws until Ctrl-C. The local state is opened for each reading and closed
/// after it (it is one process's at a time: holding it would stop a `synthfleet run` from
/// starting); the AWS backend is opened once.
async fn watch(
    args: &StatusArgs,
    config: &BackendConfig,
    campaign: Option<&Campaign>,
) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut kept: Option<Backend> = None;
    let mut history: BTreeMap<String, VecDeque<Reading>> = BTreeMap::new();
    let mut first = true;
    loop {
        let snapshot = tokio::select! {
            s = read_watched(&mut kept, config, campaign, args.models) => s,
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        let mut block = String::new();
        match snapshot {
            Ok(snapshot) => {
                let at = started.elapsed();
                let mut paces = BTreeMap::new();
                for row in &snapshot.rows {
                    let c = &row.campaign;
                    let readings = history.entry(c.name.clone()).or_default();
                    readings.push_back(Reading {
                        at,
                        accounted: c.finished(),
                        spent: c.ledger.spent,
                    });
                    while readings.len() > 2
                        && readings
                            .get(1)
                            .is_some_and(|r| at.saturating_sub(r.at) >= PACE_WINDOW)
                    {
                        readings.pop_front();
                    }
                    if let (Some(from), Some(to)) = (readings.front(), readings.back())
                        && let Some(pace) =
                            pace(*from, *to, c.total_samples.saturating_sub(c.finished()))
                    {
                        paces.insert(c.name.clone(), pace);
                    }
                }
                block.push_str(&render(&snapshot, Some(&paces)));
            }
            // The first reading fails as `status` does; a later one is shown and retried.
            Err(e) if first => return Err(e),
            Err(e) => {
                let _ = writeln!(block, "cannot read the state: {}", error_chain(e.as_ref()));
                if kept.is_none() {
                    block.push_str(
                        "the local state directory is one process's at a time: while a `synthfleet run` holds it, its progress bar shows the run; retrying\n",
                    );
                }
            }
        }
        first = false;
        let now = chrono::Local::now().format("%H:%M:%S");
        let header = format!(
            "synthfleet status — {now}, every {}s (Ctrl-C ends)\n\n",
            args.interval_s
        );
        if terminal {
            // Home, clear the screen, then the block.
            print!("\x1b[H\x1b[2J{header}{block}");
        } else {
            println!("{header}{block}");
        }
        let interval = Duration::from_secs(args.interval_s);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// One reading for [`watch`]: from `kept` (AWS, opened once), else from the backend opened
/// for it — closed again after it when local, so that a `synthfleet run` can start.
async fn read_watched(
    kept: &mut Option<Backend>,
    config: &BackendConfig,
    campaign: Option<&Campaign>,
    models: bool,
) -> anyhow::Result<Snapshot> {
    if let Some(backend) = kept {
        return read(backend, campaign, models).await;
    }
    let backend = Backend::open_existing(config, campaign).await?;
    let snapshot = read(&backend, campaign, models).await?;
    if matches!(backend, Backend::Aws { .. }) {
        *kept = Some(backend);
    }
    Ok(snapshot)
}

/// A campaign's count of accounted samples and its spend, `at` a time since watching began.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    at: Duration,
    accounted: u64,
    spent: MicroUsd,
}

/// How fast a campaign went between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pace {
    samples_per_hour: f64,
    usd_per_hour: f64,
    /// Time left for the samples not yet accounted, at that rate (`None`: none was
    /// accounted in the window and some remain).
    eta: Option<Duration>,
}

impl Pace {
    /// How long `left` lasts at this spend rate (`None`: nothing is being spent).
    fn lasts(&self, left: MicroUsd) -> Option<Duration> {
        (self.usd_per_hour > 0.0)
            .then(|| Duration::from_secs_f64(left.as_usd() / self.usd_per_hour * 3600.0))
    }
}

/// The pace from `from` to `to`, with `remaining` samples left; `None` until time passed.
fn pace(from: Reading, to: Reading, remaining: u64) -> Option<Pace> {
    let hours = to.at.checked_sub(from.at)?.as_secs_f64() / 3600.0;
    if hours <= 0.0 {
        return None;
    }
    let samples_per_hour = to.accounted.saturating_sub(from.accounted) as f64 / hours;
    let eta = if remaining == 0 {
        Some(Duration::ZERO)
    } else if samples_per_hour > 0.0 {
        Some(Duration::from_secs_f64(
            remaining as f64 / samples_per_hour * 3600.0,
        ))
    } else {
        None
    };
    Some(Pace {
        samples_per_hour,
        usd_per_hour: to.spent.saturating_sub(from.spent).as_usd() / hours,
        eta,
    })
}

/// `2h05m`, `4m10s`, `35s`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// The class a dead letter's error names: the exit status of the last failed attempt
/// (`error:sandbox`), `poison` for a task that kept killing its workers, else `other`.
fn error_class(error: &str) -> String {
    let status = error
        .split_whitespace()
        .map(|word| word.trim_end_matches([':', ',', ';']))
        .find_map(|word| ExitStatus::try_from(word.to_owned()).ok());
    match status {
        Some(status) => status.to_string(),
        None if error.contains("poison task") => "poison".into(),
        None => "other".into(),
    }
}

/// Dead letters by [`error_class`], most first.
fn errors_by_class(dead: &[DeadLetter]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for letter in dead {
        *counts.entry(error_class(&letter.error)).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

/// The text of a snapshot; watching (`paces`), each campaign's pace and its dead letters by
/// class instead of one by one.
/// Adaptive sampling: the pool, the rounds open and added, the tasks stopped and why.
fn adaptive_line(tally: &AdaptiveTally) -> String {
    format!(
        "  sampling adaptive: pool {} samples for {} tasks; {} more rounds given to mixed outcomes, {} rounds open; tasks stopped: {}",
        tally.pool,
        tally.tasks,
        tally.continued,
        tally.open_rounds,
        tally
            .stopped_text()
            .unwrap_or_else(|| "none yet".to_owned())
    )
}

fn render(snapshot: &Snapshot, paces: Option<&BTreeMap<String, Pace>>) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    if snapshot.rows.is_empty() {
        line(format!("no campaigns ({})", snapshot.describe));
    }
    if snapshot.shared_queue
        && let Some(row) = snapshot.rows.first()
    {
        let q = &row.queue;
        line(format!(
            "queue    {} waiting, {} in flight, {} dead (all campaigns)",
            q.visible, q.in_flight, q.dead
        ));
    }
    for row in &snapshot.rows {
        let (c, q) = (&row.campaign, &row.queue);
        line(format!(
            "campaign {}  [{}]{}",
            c.name,
            c.state.as_str(),
            c.state_reason
                .as_ref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        ));
        line(format!(
            "  budget   spent {} + reserved {} of {}",
            c.ledger.spent, c.ledger.reserved, c.ledger.budget
        ));
        line(format!(
            "  samples  {} of {} accounted: {} success, {} failed, {} dead-lettered; {} to go",
            c.finished(),
            c.total_samples,
            c.counts.success,
            c.counts.failed,
            c.counts.dead_lettered,
            c.total_samples.saturating_sub(c.finished())
        ));
        if let Some(tally) = &c.adaptive {
            line(adaptive_line(tally));
        }
        if let Some(paces) = paces {
            line(match paces.get(&c.name) {
                Some(p) => {
                    let left = c.ledger.budget.saturating_sub(c.ledger.spent);
                    format!(
                        "  pace     {:.1} samples/h, {}; ${:.2}/h{}",
                        p.samples_per_hour,
                        match p.eta {
                            Some(eta) if eta.is_zero() => "all accounted".to_owned(),
                            Some(eta) => format!("done in ~{}", short(eta)),
                            None => "no sample accounted lately".to_owned(),
                        },
                        p.usd_per_hour,
                        p.lasts(left)
                            .map(|d| format!(", the budget lasts ~{} more", short(d)))
                            .unwrap_or_default()
                    )
                }
                None => "  pace     (from the next refresh)".to_owned(),
            });
        }
        if !snapshot.shared_queue {
            line(format!(
                "  queue    {} waiting, {} in flight, {} dead",
                q.visible, q.in_flight, q.dead
            ));
        }
        if paces.is_some() {
            let classes = errors_by_class(&row.dead);
            if !classes.is_empty() {
                let text: Vec<String> = classes.iter().map(|(k, n)| format!("{k} {n}")).collect();
                line(format!("  dead     by error: {}", text.join(", ")));
            }
        } else {
            for letter in &row.dead {
                line(format!("  dead     {}: {}", letter.key, letter.error));
            }
        }
        for m in &row.models {
            line(format!(
                "  model    {}: {} trajectories, {} success, ${:.4}; tokens {} in, {} out, {} cache read, {} cache write",
                m.model,
                m.trajectories,
                m.success,
                m.cost_usd,
                m.input_tokens,
                m.output_tokens,
                m.cache_read_tokens,
                m.cache_write_tokens
            ));
        }
        line(format!("  updated  {}", c.updated_at.to_rfc3339()));
    }
    let now = chrono::Utc::now();
    for w in snapshot
        .workers
        .iter()
        .filter(|w| now - w.at < RECENT_WORKER)
    {
        line(format!(
            "worker {}  seen {}s ago, {} in flight, {} completed (v{})",
            w.worker_id,
            (now - w.at).num_seconds(),
            w.in_flight,
            w.completed,
            w.version
        ));
        if !w.open_breakers.is_empty() {
            line(format!(
                "  circuit open: {} (calls go to fallbacks)",
                w.open_breakers.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_s: u64, accounted: u64, spent_usd: f64) -> Reading {
        Reading {
            at: Duration::from_secs(at_s),
            accounted,
            spent: MicroUsd::from_usd_ceil(spent_usd),
        }
    }

    #[test]
    fn the_pace_is_the_change_per_hour_and_the_eta_what_remains_at_it() {
        // 6 samples and $1.50 in 10 minutes: 36 an hour, $9 an hour; 18 left take 30 min.
        let p = pace(reading(60, 4, 2.0), reading(660, 10, 3.5), 18).expect("a pace");
        assert!((p.samples_per_hour - 36.0).abs() < 1e-9);
        assert!((p.usd_per_hour - 9.0).abs() < 1e-9);
        assert_eq!(p.eta, Some(Duration::from_secs(30 * 60)));
        // $4.50 left at $9 an hour.
        assert_eq!(
            p.lasts(MicroUsd::from_usd_ceil(4.5)),
            Some(Duration::from_secs(30 * 60))
        );

        // Nothing accounted: no ETA while samples remain; none remain: done.
        let idle = pace(reading(0, 5, 1.0), reading(300, 5, 1.0), 3).expect("a pace");
        assert_eq!((idle.samples_per_hour, idle.eta), (0.0, None));
        assert_eq!(
            idle.lasts(MicroUsd(1)),
            None,
            "nothing spent, nothing runs out"
        );
        let done = pace(reading(0, 5, 1.0), reading(300, 8, 1.0), 0).expect("a pace");
        assert_eq!(done.eta, Some(Duration::ZERO));

        // No time passed (or readings out of order): no pace yet.
        assert_eq!(pace(reading(60, 1, 0.0), reading(60, 2, 0.0), 1), None);
        assert_eq!(pace(reading(60, 1, 0.0), reading(30, 2, 0.0), 1), None);
        // Counts that went down (a redrive) are no negative rate.
        let back = pace(reading(0, 5, 1.0), reading(60, 3, 1.0), 5).expect("a pace");
        assert_eq!(back.samples_per_hour, 0.0);
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short(Duration::from_secs(35)), "35s");
        assert_eq!(short(Duration::from_secs(250)), "4m10s");
        assert_eq!(short(Duration::from_secs(2 * 3600 + 5 * 60 + 59)), "2h05m");
    }

    #[test]
    fn dead_letters_are_classed_by_the_exit_status_they_name() {
        assert_eq!(
            error_class(
                "gave up after 3 attempts; last error: error:llm_unavailable: 503 from the provider"
            ),
            "error:llm_unavailable"
        );
        assert_eq!(
            error_class(
                "delivered 10 times to workers that never finished it (they crashed, were killed or lost the lease): a poison task?"
            ),
            "poison"
        );
        assert_eq!(error_class("sample 7 of `t1` is outside"), "other");
        let letter = |error: &str| DeadLetter {
            key: synthfleet_core::message::ResultKey {
                campaign: "c".into(),
                instance_id: "t".into(),
                sample_index: 0,
            },
            attempts: 1,
            error: error.into(),
            at: chrono::Utc::now(),
            history: Vec::new(),
        };
        let dead = [
            letter("last error: error:sandbox: no image"),
            letter("x"),
            letter("last error: error:sandbox: disk full"),
        ];
        assert_eq!(
            errors_by_class(&dead),
            [("error:sandbox".to_owned(), 2), ("other".to_owned(), 1)]
        );
    }
}
