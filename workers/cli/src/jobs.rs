//! `synthfleet assess | report | export | review` run the DuckDB jobs binary,
//! `synthfleet-jobs`: it ships separately so that workers and Lambdas never carry DuckDB.

use anyhow::Context;
use clap::Args;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use synthfleet_term::logging::LogFormat;

pub const JOBS_BIN: &str = "synthfleet-jobs";

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct JobArgs {
    /// Arguments for `synthfleet-jobs <command>`; `--help` lists them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

/// `synthfleet-jobs` beside this executable, else on PATH.
fn locate() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(JOBS_BIN)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(JOBS_BIN))
                .find(|p| p.is_file())
        })
    })
}

/// Runs `synthfleet-jobs <command> <args>` in the foreground and returns its exit code.
pub fn forward(command: &str, args: JobArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let bin = locate().with_context(|| {
        format!(
            "`synthfleet {command}` needs the {JOBS_BIN} binary (the DuckDB jobs, built apart so workers stay small), beside synthfleet or on PATH: build it with `cargo build --release -p synthfleet-jobs`"
        )
    })?;
    let status = std::process::Command::new(&bin)
        .arg("--log-format")
        .arg(log_format.as_arg())
        .arg(command)
        .args(&args.args)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
