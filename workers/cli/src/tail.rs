//! `synthfleet tail`: a campaign's committed trajectories as JSON lines, in commit order,
//! each with the cursor that resumes after it (docs/streaming.md).

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use synthfleet_backend::{BackendKind, CommitFeed};
use synthfleet_core::commits::{Commit, CommitCursor, settled};
use synthfleet_core::error_chain;
use synthfleet_core::ports::TrajectorySummary;
use synthfleet_core::trajectory::{ExitStatus, RecordStatus, TrajectoryRecord};
use synthfleet_term::BackendArgs;

/// Commits read per request.
const PAGE: usize = 500;
/// The settle lag on DynamoDB when none is given (see [`TailArgs::settle_s`]).
const AWS_SETTLE_S: f64 = 10.0;

#[derive(Args)]
pub struct TailArgs {
    /// The campaign's name.
    campaign: String,
    #[command(flatten)]
    backend: BackendArgs,
    /// Keep polling and print each commit as it lands, until Ctrl-C.
    #[arg(long)]
    follow: bool,
    /// Continue after this cursor (the `cursor` of the last line a consumer kept).
    #[arg(long, value_name = "CURSOR")]
    since: Option<String>,
    /// Also print each full trajectory record (read and checksum-verified) as `record`.
    #[arg(long)]
    records: bool,
    /// Seconds between polls with --follow.
    #[arg(long, default_value_t = 2.0)]
    interval_s: f64,
    /// Print only commits ordered more than this many seconds ago (default: 0 on the local
    /// store, whose order is exact; 10 on aws, where a commit's order key comes from its
    /// worker's clock and the index is read eventually: see docs/streaming.md).
    #[arg(long)]
    settle_s: Option<f64>,
}

/// One printed line: the commit's summary and where it stands.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    summary: &'a TrajectorySummary,
    status: RecordStatus,
    exit_status: &'a ExitStatus,
    resolved: Option<bool>,
    reward: Option<f64>,
    object_key: &'a str,
    sha256: &'a str,
    /// Pass it to `--since` to continue after this line.
    cursor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<TrajectoryRecord>,
}

pub async fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let config = args.backend.config()?;
    let mut after = args
        .since
        .as_deref()
        .map(|text| CommitCursor::decode_for(text, &args.campaign))
        .transpose()?;
    let settle = seconds(
        "--settle-s",
        args.settle_s.unwrap_or(match config.kind {
            BackendKind::Aws => AWS_SETTLE_S,
            BackendKind::Local => 0.0,
        }),
    )?;
    let interval = seconds("--interval-s", args.interval_s)?;
    // On the local store, the campaign's commit log: no poll ever opens the database, so
    // a follower reads a run's commits while it runs and never keeps one from starting.
    let mut feed = CommitFeed::open(&config, &args.campaign).await?;
    let mut waiting: Option<String> = None;
    loop {
        let read = tokio::select! {
            read = read_page(&mut feed, &args, after.as_ref(), settle) => read,
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        let more = match read {
            Ok(Page { lines, more }) => {
                waiting = None;
                let mut out = std::io::stdout().lock();
                for (cursor, line) in lines {
                    match writeln!(out, "{line}").and_then(|()| out.flush()) {
                        Ok(()) => after = Some(cursor),
                        // The consumer went away: nothing left to do.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            return Ok(ExitCode::SUCCESS);
                        }
                        Err(e) => return Err(e).context("writing to stdout"),
                    }
                }
                more
            }
            Err(e) if !args.follow => return Err(e),
            // Following, a state not there yet, or one from before the commit logs that a
            // run holds (it is opened once to write them), is read again at the next poll.
            Err(e) => {
                let message = error_chain(e.as_ref());
                if waiting.as_ref() != Some(&message) {
                    eprintln!("synthfleet tail: {message}; retrying every {interval:?}");
                    waiting = Some(message);
                }
                false
            }
        };
        if more {
            continue;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{flag} must be a number of seconds, 0 or more; got {value}"))
}

/// The lines of one read, each with its cursor; `more` when a full page settled (read
/// again at once).
struct Page {
    lines: Vec<(CommitCursor, String)>,
    more: bool,
}

/// One read of the commits after `after` that have settled.
async fn read_page(
    feed: &mut CommitFeed,
    args: &TailArgs,
    after: Option<&CommitCursor>,
    settle: Duration,
) -> anyhow::Result<Page> {
    let commits = feed.after(after, PAGE).await?;
    let read = commits.len();
    let commits = if settle.is_zero() {
        commits
    } else {
        let horizon = chrono::Utc::now()
            - chrono::Duration::from_std(settle).context("the settle lag is too long")?;
        settled(commits, horizon)
    };
    let more = read == PAGE && commits.len() == read;
    let mut lines = Vec::with_capacity(commits.len());
    for Commit { cursor, meta, .. } in commits {
        let record = if args.records {
            Some(feed.load(&meta).await.with_context(|| {
                format!(
                    "reading the record of trajectory {} ({}, {})",
                    meta.summary.trajectory_id,
                    meta.object_key,
                    feed.describe()
                )
            })?)
        } else {
            None
        };
        let line = Line {
            summary: &meta.summary,
            status: meta.status,
            exit_status: &meta.exit_status,
            resolved: meta.resolved,
            reward: meta.reward,
            object_key: &meta.object_key,
            sha256: &meta.sha256,
            cursor: cursor.encode(),
            record,
        };
        lines.push((cursor, serde_json::to_string(&line)?));
    }
    Ok(Page { lines, more })
}
