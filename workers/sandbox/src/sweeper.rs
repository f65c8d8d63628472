//! The sweeper: one idle shell per sandbox user, started with the user's first command,
//! that kills what a timed-out command left ([`crate::scripts::sweeper`]). It is already
//! running when it is needed and forks nothing, so it sweeps even when a fork bomb holds
//! every PID the sandbox may have — when a `docker exec` of a fresh sweep could not start.

use crate::container::ExecStream;
use futures_util::StreamExt;
use std::pin::Pin;
use synthfleet_core::ports::SandboxError;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::warn;

pub(crate) struct Sweeper {
    /// Its PID inside the container: spared by every sweep.
    pub(crate) pid: u32,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: ExecStream,
}

impl Sweeper {
    /// Reads the sweeper's greeting: its PID.
    pub(crate) async fn greet(
        container: &str,
        input: Pin<Box<dyn AsyncWrite + Send>>,
        mut output: ExecStream,
    ) -> Result<Sweeper, SandboxError> {
        let pid =
            crate::relay::greeting(container, "SFSWEEPER ", "starting the sweeper", &mut output)
                .await?;
        Ok(Sweeper { pid, input, output })
    }

    /// False once its output has ended (a command's `kill -1` killed it). Never waits.
    pub(crate) fn alive(&mut self) -> bool {
        crate::relay::still_open(&mut self.output, "sweeper")
    }

    /// Kills every process its user may signal but init, the keeper and `spare`; returns
    /// once the sweep is done. (The caller bounds the wait.)
    pub(crate) async fn sweep(
        &mut self,
        container: &str,
        spare: &[u32],
    ) -> Result<(), SandboxError> {
        let pids: Vec<String> = spare.iter().map(u32::to_string).collect();
        let request = format!("{}\n", pids.join(" "));
        let io = |e| crate::docker_error(container, "asking the sweeper to sweep", e);
        self.input.write_all(request.as_bytes()).await.map_err(io)?;
        self.input.flush().await.map_err(io)?;
        let mut said = Vec::new();
        while !said.ends_with(b"SFSWEPT\n") {
            match self.output.next().await {
                Some(Ok(bollard::container::LogOutput::StdOut { message })) => {
                    said.extend_from_slice(&message)
                }
                Some(Ok(other)) => warn!(container, output = %other, "the sweeper said on stderr"),
                Some(Err(e)) => {
                    return Err(crate::docker_error(container, "reading the sweeper", e));
                }
                None => {
                    return Err(crate::docker_error(
                        container,
                        "reading the sweeper",
                        std::io::Error::other("the sweeper's output ended (it was killed)"),
                    ));
                }
            }
        }
        Ok(())
    }
}
