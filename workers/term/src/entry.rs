//! What both binaries do at their edge: the `--log-format` flag, the async runtime, and
//! printing an error chain as the one thing a user sees.

use crate::logging::LogFormat;
use clap::Args;
use std::future::Future;
use std::process::ExitCode;
// The one printer of an error chain, shared with the Lambda functions
// (`synthfleet_control::lambda`), so every binary says a failure the same way.
use synthfleet_core::error_chain;

#[derive(Args)]
pub struct LogArgs {
    /// Log format: `pretty` (the default: warnings and errors, readable, coloured on a
    /// terminal) or `json` (one object a line from `info` up, what the fleet writes).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// Runs `command` on a multi-threaded runtime; an error is printed with its whole chain.
pub fn run(command: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
