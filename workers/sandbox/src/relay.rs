//! The command relay: one long-lived `bash` per sandbox user, started with `docker exec`
//! and fed over that exec's attached stdin, which spawns each command as a fresh
//! `bash -c` process. A step then costs one write and one read on an open connection
//! instead of an exec through the daemon (create, start, inspect: ~50 ms on an idle
//! engine, 200+ ms on a busy one). It needs nothing in the image but `bash` and
//! coreutils, and no network (the channel is the exec's own stdin and stdout).
//!
//! Request: `<nonce> <dir length> <length>\n`, then the directory the command runs in, then
//! `length` bytes: the command and one `.` (so that `$(head -c)` keeps the command's
//! trailing newlines). A short command is read by bash itself (no process); a long one by
//! `head`, which reads it in blocks. The directory comes with each command, so one relay
//! serves a sandbox whatever its workdir (a spare of the warm pool gets it when taken). Reply: the command's stdout and
//! stderr interleaved as produced, then `\0SFEND:<nonce>:<status>\n`. The relay waits
//! until every holder of the output pipe has closed it — background children included —
//! exactly as `docker exec` does. The nonce is random per command and never visible to
//! it, so no output can end a reply early.

use crate::capture::Capture;
use crate::container::ExecStream;
use futures_util::{FutureExt, StreamExt};
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use synthfleet_core::ports::SandboxError;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::warn;

/// The relay. Its own locale is C (lengths are bytes); each command gets back the `LC_ALL`
/// the image gave (or none), no `OLDPWD` and a fresh `SHLVL`, so commands see the
/// environment `docker exec` gives them.
/// Each command's stdin is /dev/null: it never reads the request channel.
pub(crate) const SCRIPT: &str = r#"sf_lc_set=${LC_ALL+set} sf_lc=${LC_ALL-}
LC_ALL=C
printf 'SFRELAY %s\n' "$$"
while read -r nonce dirlength length; do
  IFS= read -r -N "$dirlength" dir
  if [ "$length" -le 8192 ]; then
    IFS= read -r -N "$length" command
  else
    command=$(head -c "$length")
  fi
  (if [ "$sf_lc_set" ]; then LC_ALL=$sf_lc; else unset LC_ALL; fi
   cd -- "$dir" && unset OLDPWD && SHLVL=0 && exec bash -c "${command%.}") </dev/null 2>&1 | cat
  status=${PIPESTATUS[0]}
  printf '\0SFEND:%s:%s\n' "$nonce" "$status"
done
"#;

/// A running relay: its PID inside the container (spared by the timeout kill) and its
/// exec's attached stdin and output.
pub(crate) struct Relay {
    pub(crate) pid: u32,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: ExecStream,
}

/// What reading a reply came to.
pub(crate) enum Reply {
    /// The command finished with this status (`None`: the relay printed no number).
    Finished(Option<i64>),
    /// The relay's output ended: it was killed (say, by a command's `kill -1`).
    Lost,
}

impl Relay {
    /// Reads the relay's greeting: its PID.
    pub(crate) async fn greet(
        container: &str,
        input: Pin<Box<dyn AsyncWrite + Send>>,
        mut output: ExecStream,
    ) -> Result<Relay, SandboxError> {
        let pid = greeting(container, "SFRELAY ", "starting the relay", &mut output).await?;
        Ok(Relay { pid, input, output })
    }

    /// False once the relay's output has ended (it died between commands). Never waits.
    pub(crate) fn alive(&mut self) -> bool {
        still_open(&mut self.output, "relay")
    }

    /// Sends `command`, to run in `dir`; the reply is read with [`Relay::read_reply`] and
    /// `reader`.
    /// The command holds no NUL byte (bash would drop one without counting it).
    pub(crate) async fn send(&mut self, dir: &str, command: &str) -> std::io::Result<ReplyReader> {
        let nonce = nonce();
        let mut request = format!("{nonce} {} {}\n", dir.len(), command.len() + 1).into_bytes();
        request.extend_from_slice(dir.as_bytes());
        request.extend_from_slice(command.as_bytes());
        request.push(b'.');
        self.input.write_all(&request).await?;
        self.input.flush().await?;
        Ok(ReplyReader::new(&nonce))
    }

    /// Reads the reply into `capture` until the end marker or the end of the relay's
    /// output. Cancel-safe: what was read stays in `reader` and `capture`, so a caller may
    /// stop at a deadline and read on later (with another capture).
    pub(crate) async fn read_reply(
        &mut self,
        container: &str,
        reader: &mut ReplyReader,
        capture: &mut Capture,
    ) -> Result<Reply, SandboxError> {
        while let Some(chunk) = self.output.next().await {
            match chunk {
                Ok(bollard::container::LogOutput::StdOut { message }) => {
                    if let Some(status) = reader.push(&message, capture) {
                        return Ok(Reply::Finished(status));
                    }
                }
                Ok(other) => warn!(container, output = %other, "relay said on stderr"),
                Err(e) => return Err(crate::docker_error(container, "reading relay output", e)),
            }
        }
        Ok(Reply::Lost)
    }
}

/// False once an attached exec's output has ended (its process was killed); what it said
/// meanwhile is logged as stray output of `what`. Never waits.
pub(crate) fn still_open(output: &mut ExecStream, what: &str) -> bool {
    loop {
        match output.next().now_or_never() {
            None => return true,
            Some(None | Some(Err(_))) => return false,
            Some(Some(Ok(stray))) => warn!(output = %stray, "{what} output between requests"),
        }
    }
}

/// Reads an attached exec's greeting, `{prefix}{pid}` on a line of its own, and returns
/// the PID; `what` names the exec in errors.
pub(crate) async fn greeting(
    container: &str,
    prefix: &str,
    what: &str,
    output: &mut ExecStream,
) -> Result<u32, SandboxError> {
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        match output.next().await {
            Some(Ok(bollard::container::LogOutput::StdOut { message })) => {
                line.extend_from_slice(&message)
            }
            Some(Ok(other)) => warn!(container, output = %other, "{what}: said on stderr"),
            Some(Err(e)) => return Err(crate::docker_error(container, what, e)),
            None => break,
        }
    }
    let text = String::from_utf8_lossy(&line);
    text.trim()
        .strip_prefix(prefix)
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| {
            crate::docker_error(
                container,
                what,
                std::io::Error::other(format!("unexpected greeting {text:?}")),
            )
        })
}

/// Splits a reply stream into the command's output and its end marker.
pub(crate) struct ReplyReader {
    marker: Vec<u8>,
    /// Bytes that may be the start of the marker, held back from the capture.
    pending: Vec<u8>,
}

impl ReplyReader {
    fn new(nonce: &str) -> ReplyReader {
        ReplyReader {
            marker: format!("\0SFEND:{nonce}:").into_bytes(),
            pending: Vec::new(),
        }
    }

    /// Feeds `bytes`; returns the status once the whole marker line has arrived.
    fn push(&mut self, bytes: &[u8], capture: &mut Capture) -> Option<Option<i64>> {
        self.pending.extend_from_slice(bytes);
        if let Some(at) = find(&self.pending, &self.marker) {
            capture.push(&self.pending[..at]);
            self.pending.drain(..at);
            let rest = &self.pending[self.marker.len()..];
            let end = rest.iter().position(|&b| b == b'\n')?;
            let status = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|s| s.parse().ok());
            self.pending.clear();
            return Some(status);
        }
        let cut = self
            .pending
            .len()
            .saturating_sub(self.marker.len().saturating_sub(1));
        capture.push(&self.pending[..cut]);
        self.pending.drain(..cut);
        None
    }

    /// The output ended without a marker: what was held back is output too.
    pub(crate) fn finish(self, capture: &mut Capture) {
        capture.push(&self.pending);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// 64 random bits as hex: the process's random hasher keys, fed a counter.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> (Option<Option<i64>>, String) {
        let mut reader = ReplyReader::new("abc");
        let mut capture = Capture::new(1 << 20);
        let mut done = None;
        for chunk in chunks {
            if let Some(status) = reader.push(chunk, &mut capture) {
                done = Some(status);
                break;
            }
        }
        (done, capture.finish().0)
    }

    #[test]
    fn output_ends_at_the_marker_of_its_nonce() {
        assert_eq!(
            feed(&[b"hello\nwor", b"ld\0SFEND:abc:3\n"]),
            (Some(Some(3)), "hello\nworld".to_owned())
        );
    }

    #[test]
    fn a_marker_split_across_chunks_is_found_and_never_captured() {
        assert_eq!(
            feed(&[b"out\0SF", b"END:a", b"bc:0", b"\n"]),
            (Some(Some(0)), "out".to_owned())
        );
        // No newline at the end of the output, marker in one byte per chunk.
        let reply = b"x\0SFEND:abc:12\n";
        let chunks: Vec<&[u8]> = reply.chunks(1).collect();
        assert_eq!(feed(&chunks), (Some(Some(12)), "x".to_owned()));
    }

    #[test]
    fn another_nonce_is_output() {
        let (done, output) = feed(&[b"\0SFEND:xyz:0\n", b"tail and then some more"]);
        assert_eq!(done, None);
        assert!(output.starts_with("\0SFEND:xyz:0\ntail"), "{output:?}");
    }

    #[test]
    fn what_was_held_back_is_kept_when_the_relay_is_lost() {
        let mut reader = ReplyReader::new("abc");
        let mut capture = Capture::new(1 << 20);
        assert_eq!(reader.push(b"killed", &mut capture), None);
        reader.finish(&mut capture);
        assert_eq!(capture.finish().0, "killed");
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
