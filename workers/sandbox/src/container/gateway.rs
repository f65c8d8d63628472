//! A sandbox's gateway: requests made inside it to `127.0.0.1:{port}` reach the worker
//! through an attached exec of [`GATEWAY_FORWARDER`](crate::scripts::GATEWAY_FORWARDER),
//! framed over its stdio — no network is opened — and are answered by a [`Gateway`].

use super::{DockerSandbox, ExecStream, HOUSEKEEPING_TIMEOUT, Input};
use crate::scripts::GATEWAY_FORWARDER;
use bollard::container::LogOutput;
use bollard::exec::CreateExecOptions;
use futures_util::StreamExt;
use std::time::Duration;
use synthfleet_core::ports::{ExecOutput, Gateway, GatewayRequest, GatewayResponse, SandboxError};
use tokio::io::AsyncWriteExt;
use tracing::warn;

impl DockerSandbox {
    /// Runs `command` while the forwarder hands the sandbox's gateway requests to `gateway`;
    /// the forwarder is stopped when the command ends.
    pub(super) async fn run_serving(
        &self,
        command: &str,
        timeout: Duration,
        port: u16,
        gateway: &dyn Gateway,
    ) -> Result<ExecOutput, SandboxError> {
        let port_arg = port.to_string();
        let (_, mut output, mut input) = self
            .start(
                CreateExecOptions {
                    cmd: Some(vec!["python3", "-c", GATEWAY_FORWARDER, &port_arg]),
                    user: Some(self.user.as_str()),
                    working_dir: Some("/"),
                    attach_stdin: Some(true),
                    ..Default::default()
                },
                "the gateway forwarder",
            )
            .await?;
        let pid = tokio::time::timeout(
            HOUSEKEEPING_TIMEOUT,
            crate::relay::greeting(
                &self.id,
                "SFGATEWAY ",
                "starting the gateway forwarder (python3 is needed in the image)",
                &mut output,
            ),
        )
        .await
        .map_err(|_| SandboxError::Unresponsive {
            container: self.id.clone(),
        })??;
        let run = self.run(command, &self.user, timeout);
        tokio::pin!(run);
        let ran = tokio::select! {
            ran = &mut run => ran,
            ended = serve(&self.id, &mut output, &mut input, gateway) => {
                warn!(container = %self.id, error = ?ended.err(), "the gateway forwarder stopped; the command runs on without it");
                run.await
            }
        };
        drop(input);
        if let Err(e) = self
            .run(
                &format!("kill {pid} 2>/dev/null"),
                &self.user,
                HOUSEKEEPING_TIMEOUT,
            )
            .await
        {
            warn!(container = %self.id, error = %synthfleet_core::error_chain(&e), "stopping the gateway forwarder failed");
        }
        ran
    }
}

/// Answers framed requests until the forwarder's output ends.
async fn serve(
    container: &str,
    output: &mut ExecStream,
    input: &mut Input,
    gateway: &dyn Gateway,
) -> Result<(), SandboxError> {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        while let Some(request) = take_frame(&mut buffer) {
            let response = match serde_json::from_slice::<GatewayRequest>(&request) {
                Ok(request) => gateway.handle(request).await,
                Err(e) => GatewayResponse {
                    status: 400,
                    body: serde_json::json!({"error": {"message": format!("unreadable request: {e}")}}).to_string(),
                },
            };
            let body = serde_json::to_vec(&response).unwrap_or_default();
            let mut frame = format!("{}\n", body.len()).into_bytes();
            frame.extend_from_slice(&body);
            let io = |e| crate::docker_error(container, "answering the gateway forwarder", e);
            input.write_all(&frame).await.map_err(io)?;
            input.flush().await.map_err(io)?;
        }
        match output.next().await {
            Some(Ok(LogOutput::StdOut { message })) => buffer.extend_from_slice(&message),
            Some(Ok(other)) => warn!(container, output = %other, "the gateway forwarder said"),
            Some(Err(e)) => {
                return Err(crate::docker_error(
                    container,
                    "reading the gateway forwarder",
                    e,
                ));
            }
            None => return Ok(()),
        }
    }
}

/// The next whole `<length>\n<bytes>` frame of `buffer`, removed from it.
fn take_frame(buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    let newline = buffer.iter().position(|&b| b == b'\n')?;
    let length: usize = std::str::from_utf8(&buffer[..newline])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let end = newline + 1 + length;
    if buffer.len() < end {
        return None;
    }
    let frame = buffer[newline + 1..end].to_vec();
    buffer.drain(..end);
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::take_frame;

    #[test]
    fn frames_are_taken_whole_and_in_order() {
        let mut buffer = b"3\nabc5\nhel".to_vec();
        assert_eq!(take_frame(&mut buffer), Some(b"abc".to_vec()));
        assert_eq!(take_frame(&mut buffer), None);
        buffer.extend_from_slice(b"lo");
        assert_eq!(take_frame(&mut buffer), Some(b"hello".to_vec()));
        assert!(buffer.is_empty());
    }
}
