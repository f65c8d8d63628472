//! Logs: pretty for people (through the progress bar on a terminal, so lines do not tear
//! it), JSON in the fleet, where it is asked for (`--log-format json`), with the fleet's
//! metrics as EMF lines among them ([`EmfLines`]). `RUST_LOG` overrides the default level.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use synthfleet_core::metrics::{DataPoint, MetricSink};
use tracing::warn;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// A progress bar of `len` steps drawn on stderr with `template`, or a hidden one when
/// `visible` is false (not a terminal, or `--no-progress`).
pub fn progress_bar(len: Option<u64>, visible: bool, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        len,
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Writes log lines above the progress bar.
#[derive(Clone)]
struct AboveBar(ProgressBar);

struct LineWriter {
    bar: ProgressBar,
    buffer: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.bar.suspend(|| {
            let _ = std::io::stderr().write_all(&buffer);
        });
    }
}

impl<'a> MakeWriter<'a> for AboveBar {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            bar: self.0.clone(),
            buffer: Vec::new(),
        }
    }
}

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines from `warn` up; colours only on a terminal. What a person running a
    /// command sees, piped into a file or CI log or not.
    Pretty,
    /// One JSON object a line from `info` up, with the span list (campaign, task, step):
    /// what the fleet's workers and log pipelines read.
    Json,
}

impl LogFormat {
    /// The flag's value, to pass the same format on to a child process.
    pub fn as_arg(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
}

/// Publishes data points as EMF lines on stderr, among the JSON logs: CloudWatch Logs
/// takes the worker's output and makes each EMF event a metric of the deployment.
pub struct EmfLines {
    deployment: String,
}

impl EmfLines {
    /// The sink of a process whose logs are `format`: EMF lines of `deployment` when the
    /// logs are JSON (the fleet's) and a deployment is named, else none.
    pub fn sink(format: LogFormat, deployment: Option<&str>) -> Option<Arc<dyn MetricSink>> {
        match (format, deployment) {
            (LogFormat::Json, Some(deployment)) if !deployment.is_empty() => {
                Some(Arc::new(EmfLines {
                    deployment: deployment.to_owned(),
                }))
            }
            _ => None,
        }
    }
}

impl MetricSink for EmfLines {
    fn publish(&self, point: DataPoint) {
        match point.emf(&self.deployment) {
            Ok(document) => {
                // The whole event is the document: one line, written in one call on the
                // locked stream, so that no log line tears it.
                let line = format!("{document}\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Err(e) => warn!(error = %e, "a data point CloudWatch would drop was not published"),
        }
    }
}

/// Installs the global subscriber. With a progress bar, pretty logs go above it.
pub fn init(format: LogFormat, bar: Option<&ProgressBar>) {
    let json = format == LogFormat::Json;
    let default = if json { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!json && std::io::stderr().is_terminal());
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .try_init()
    } else if let Some(bar) = bar {
        builder.with_writer(AboveBar(bar.clone())).try_init()
    } else {
        builder.with_writer(std::io::stderr).try_init()
    };
}
