//! Running a sandbox's commands: through a relay per sandbox user, or one `docker exec`
//! each; a command that times out has what it left behind killed.

use super::{DockerSandbox, ExecStream, HOUSEKEEPING_TIMEOUT, Input, Relays};
use crate::capture::Capture;
use crate::docker_error;
use crate::relay::{self, Relay, Reply};
use crate::scripts::{self, COMMAND_ENV};
use crate::sweeper::Sweeper;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use synthfleet_core::campaign::SandboxChannel;
use synthfleet_core::ports::{ExecOutput, SandboxError};
use tracing::{debug, warn};

impl DockerSandbox {
    /// Runs `command` as `user`: through that user's relay (started on first use), or
    /// through `docker exec` when the campaign asks for it or the relay cannot start. NUL
    /// bytes, which no command line can hold, are left out.
    pub(super) async fn run(
        &self,
        command: &str,
        user: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, SandboxError> {
        let command = &command.replace('\0', "");
        let mut relays = self.relays.lock().await;
        self.sweeper_ready(&mut relays, user).await;
        let relayed = self.relay_ready(&mut relays, user).await;
        let spare: Vec<u32> = relays
            .by_user
            .values()
            .map(|r| r.pid)
            .chain(relays.sweepers.values().map(|s| s.pid))
            .collect();
        let Relays {
            by_user, sweepers, ..
        } = &mut *relays;
        let sweeper = sweepers.get_mut(user);
        if relayed && let Some(relay) = by_user.get_mut(user) {
            let ran = self
                .run_relayed(relay, sweeper, command, user, timeout, &spare)
                .await;
            // A relay that failed or lost its way mid-reply is not asked again.
            if !matches!(ran, Ok((_, true))) {
                by_user.remove(user);
            }
            return ran.map(|(output, _)| output);
        }
        self.run_exec(command, user, timeout, sweeper, &spare).await
    }

    /// Starts `user`'s sweeper unless it runs (one whose output ended is replaced). A
    /// sweeper that cannot start is logged: timed-out commands are then swept by an exec
    /// of their own.
    async fn sweeper_ready(&self, relays: &mut Relays, user: &str) {
        if relays.sweepers.get_mut(user).is_some_and(|s| !s.alive()) {
            relays.sweepers.remove(user);
        }
        if relays.sweepers.contains_key(user) {
            return;
        }
        let started = async {
            let (_, output, input) = self
                .start(
                    CreateExecOptions {
                        cmd: Some(vec!["bash", "-c", &scripts::sweeper()]),
                        user: Some(user),
                        working_dir: Some("/"),
                        attach_stdin: Some(true),
                        ..Default::default()
                    },
                    "the sweeper",
                )
                .await?;
            Sweeper::greet(&self.id, input, output).await
        };
        match tokio::time::timeout(HOUSEKEEPING_TIMEOUT, started).await {
            Ok(Ok(sweeper)) => {
                relays.sweepers.insert(user.to_owned(), sweeper);
            }
            Ok(Err(e)) => {
                warn!(container = %self.id, user, error = %synthfleet_core::error_chain(&e),
                "the sweeper could not start: timed-out commands are swept by an exec of their own")
            }
            Err(_) => warn!(container = %self.id, user, "the sweeper did not greet in time"),
        }
    }

    /// Whether `user` has a live relay now, starting one if needed. A relay whose output
    /// has ended (killed by a command's `kill -1`) is replaced.
    async fn relay_ready(&self, relays: &mut Relays, user: &str) -> bool {
        if self.channel != SandboxChannel::Relay || relays.exec_only {
            return false;
        }
        if relays.by_user.get_mut(user).is_some_and(|r| !r.alive()) {
            debug!(container = %self.id, user, "the relay was killed; starting another");
            relays.by_user.remove(user);
        }
        if relays.by_user.contains_key(user) {
            return true;
        }
        match self.start_relay(user).await {
            Ok(relay) => {
                relays.by_user.insert(user.to_owned(), relay);
                true
            }
            Err(e) => {
                warn!(container = %self.id, user, error = %synthfleet_core::error_chain(&e),
                    "the command relay could not start: this sandbox's commands go through docker exec");
                relays.exec_only = true;
                false
            }
        }
    }

    async fn start_relay(&self, user: &str) -> Result<Relay, SandboxError> {
        let (_, output, input) = self
            .start(
                CreateExecOptions {
                    cmd: Some(vec!["bash", "-c", relay::SCRIPT]),
                    user: Some(user),
                    // Each command says where it runs.
                    working_dir: Some("/"),
                    env: Some(COMMAND_ENV.to_vec()),
                    attach_stdin: Some(true),
                    ..Default::default()
                },
                "the relay",
            )
            .await?;
        tokio::time::timeout(HOUSEKEEPING_TIMEOUT, Relay::greet(&self.id, input, output))
            .await
            .map_err(|_| SandboxError::Unresponsive {
                container: self.id.clone(),
            })?
    }

    /// One command through `relay`; also says whether the relay is fit for the next one.
    /// At the timeout every process of `user` but the relays is killed, and the relay's
    /// end marker is awaited, so the next command starts on a quiet sandbox.
    async fn run_relayed(
        &self,
        relay: &mut Relay,
        sweeper: Option<&mut Sweeper>,
        command: &str,
        user: &str,
        timeout: Duration,
        spare: &[u32],
    ) -> Result<(ExecOutput, bool), SandboxError> {
        let started = Instant::now();
        let mut reader = relay
            .send(&self.workdir, command)
            .await
            .map_err(|e| docker_error(&self.id, "sending a command to the relay", e))?;
        let mut capture = Capture::new(self.max_output_bytes);
        let read = tokio::time::timeout(
            timeout,
            relay.read_reply(&self.id, &mut reader, &mut capture),
        )
        .await;
        let (exit_code, timed_out, healthy) = match read {
            Ok(Ok(Reply::Finished(status))) => (status, false, true),
            Ok(Ok(Reply::Lost)) => {
                warn!(container = %self.id, user, "the relay was killed during the command; its exit status is unknown");
                reader.finish(&mut capture);
                (None, false, false)
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                self.kill_user_processes(user, spare, sweeper).await?;
                let mut discard = Capture::new(0);
                let drained = tokio::time::timeout(
                    HOUSEKEEPING_TIMEOUT,
                    relay.read_reply(&self.id, &mut reader, &mut discard),
                )
                .await;
                (None, true, matches!(drained, Ok(Ok(Reply::Finished(_)))))
            }
        };
        let (output, truncated) = capture.finish();
        Ok((
            ExecOutput {
                exit_code,
                output,
                truncated,
                timed_out,
                duration: started.elapsed(),
            },
            healthy,
        ))
    }

    /// One command through its own `docker exec`.
    pub(super) async fn run_exec(
        &self,
        command: &str,
        user: &str,
        timeout: Duration,
        sweeper: Option<&mut Sweeper>,
        spare: &[u32],
    ) -> Result<ExecOutput, SandboxError> {
        let started = Instant::now();
        let (exec_id, mut output, _) = self
            .start(
                CreateExecOptions {
                    cmd: Some(vec!["bash", "-c", command]),
                    user: Some(user),
                    working_dir: Some(self.workdir.as_str()),
                    env: Some(COMMAND_ENV.to_vec()),
                    ..Default::default()
                },
                "an exec",
            )
            .await?;
        let mut capture = Capture::new(self.max_output_bytes);
        let drained = tokio::time::timeout(timeout, async {
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(log) => capture.push(&log.into_bytes()),
                    Err(e) => return Err(docker_error(&self.id, "reading exec output", e)),
                }
            }
            Ok(())
        })
        .await;
        drop(output);
        let timed_out = match drained {
            Ok(result) => {
                result?;
                false
            }
            Err(_) => {
                self.kill_user_processes(user, spare, sweeper).await?;
                self.wait_exited(&exec_id).await?;
                true
            }
        };
        let exit_code = if timed_out {
            None
        } else {
            self.docker
                .inspect_exec(&exec_id)
                .await
                .map_err(|e| docker_error(&self.id, "inspecting an exec", e))?
                .exit_code
        };
        let (output, truncated) = capture.finish();
        Ok(ExecOutput {
            exit_code,
            output,
            truncated,
            timed_out,
            duration: started.elapsed(),
        })
    }

    /// Kills every process of `user` but init, the keeper and `spare` (the relays and
    /// sweepers): what a timed-out command left running — by `user`'s sweeper, else by an
    /// exec of its own (without CAP_KILL a process may only signal its own uid, so this
    /// runs as that user). Returns once the kill has finished: a kill still sweeping /proc
    /// would also kill the next command's process while runc starts it ("write init-p:
    /// broken pipe").
    async fn kill_user_processes(
        &self,
        user: &str,
        spare: &[u32],
        sweeper: Option<&mut Sweeper>,
    ) -> Result<(), SandboxError> {
        if let Some(sweeper) = sweeper {
            match tokio::time::timeout(HOUSEKEEPING_TIMEOUT, sweeper.sweep(&self.id, spare)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    warn!(container = %self.id, user, error = %synthfleet_core::error_chain(&e),
                    "the sweeper failed; sweeping with an exec of its own")
                }
                Err(_) => warn!(container = %self.id, user,
                    "the sweeper did not finish in time; sweeping with an exec of its own"),
            }
        }
        let spare: Vec<String> = spare.iter().map(u32::to_string).collect();
        let script = scripts::sweep_once();
        let mut cmd = vec!["bash", "-c", script.as_str(), "kill"];
        cmd.extend(spare.iter().map(String::as_str));
        let (exec_id, mut output, _) = self
            .start(
                CreateExecOptions {
                    cmd: Some(cmd),
                    user: Some(user),
                    ..Default::default()
                },
                "a kill exec",
            )
            .await?;
        let drained = tokio::time::timeout(HOUSEKEEPING_TIMEOUT, async {
            while output.next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            return Err(SandboxError::Unresponsive {
                container: self.id.clone(),
            });
        }
        self.wait_exited(&exec_id).await
    }

    /// Creates and starts an exec with its output attached; returns its id, its output
    /// and its stdin (open only when `options` attach it).
    pub(super) async fn start(
        &self,
        options: CreateExecOptions<&str>,
        what: &str,
    ) -> Result<(String, ExecStream, Input), SandboxError> {
        let exec = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..options
                },
            )
            .await
            .map_err(|e| docker_error(&self.id, &format!("creating {what}"), e))?;
        match self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| docker_error(&self.id, &format!("starting {what}"), e))?
        {
            StartExecResults::Attached { output, input } => Ok((exec.id, output, input)),
            StartExecResults::Detached => Err(docker_error(
                &self.id,
                &format!("starting {what}"),
                std::io::Error::other("exec started detached"),
            )),
        }
    }

    /// Waits until Docker reports the exec finished (its output can close first).
    async fn wait_exited(&self, exec_id: &str) -> Result<(), SandboxError> {
        let deadline = Instant::now() + HOUSEKEEPING_TIMEOUT;
        loop {
            let running = self
                .docker
                .inspect_exec(exec_id)
                .await
                .map_err(|e| docker_error(&self.id, "inspecting an exec", e))?
                .running
                .unwrap_or(false);
            if !running {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Unresponsive {
                    container: self.id.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the relay of `user` ahead of the first command.
    pub(super) async fn warm_up(&self, user: &str) {
        let mut relays = self.relays.lock().await;
        self.relay_ready(&mut relays, user).await;
    }
}
