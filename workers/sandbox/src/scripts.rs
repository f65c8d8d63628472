//! The shell scripts a sandbox runs for its own housekeeping: the sweep that kills what a
//! timed-out command left, and the commands that write a file.

/// `sweep SPARE...`: kills every process the caller may signal except init (PID 1), the
/// keeper (the container's main process, the tether: init's first child, so the lowest PID
/// whose parent is 1), the shell itself and the PIDs given (the relays and sweepers).
/// `kill -1` would do for an unprivileged user, who cannot signal the keeper (it runs as
/// root); as root — SWE-bench's images have no other user — it would kill the keeper too,
/// and the container with it. Only /proc and bash builtins: no procps, and no fork, so a
/// shell already running can sweep when a fork bomb holds every PID the sandbox may have.
///
/// One pass is not enough against a fork bomb: a process the pass has not reached yet
/// forks into a PID slot an earlier kill freed, after the pass listed /proc. So passes
/// repeat until one finds nothing alive to kill (zombies are already dead: their parent
/// or init reaps them), at most 50.
const SWEEP: &str = r#"sweep() {
  spare=" $* "
  keeper=
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = 1 ] && continue
    while read -r key value; do
      if [ "$key" = "PPid:" ]; then
        if [ "$value" = 1 ] && { [ -z "$keeper" ] || [ "$pid" -lt "$keeper" ]; }; then keeper=$pid; fi
        break
      fi
    done < "$d/status" 2>/dev/null
  done
  pass=0
  while [ "$pass" -lt 50 ]; do
    pass=$((pass + 1))
    found=
    for d in /proc/[0-9]*; do
      pid=${d#/proc/}
      case "$pid" in 1|"$$"|"$keeper") continue ;; esac
      case "$spare" in *" $pid "*) continue ;; esac
      state=
      while read -r key value rest; do
        if [ "$key" = "State:" ]; then state=$value; break; fi
      done < "$d/status" 2>/dev/null
      [ "$state" = Z ] && continue
      kill -KILL "$pid" 2>/dev/null && found=1
    done
    [ -z "$found" ] && break
  done
  return 0
}"#;

/// The sweep, run once by an exec of its own: `bash -c SCRIPT kill SPARE...` (when the
/// user has no sweeper running).
pub(crate) fn sweep_once() -> String {
    format!("{SWEEP}\nsweep \"$@\"\n")
}

/// A sweeper: a shell started with a sandbox user's first command that waits on its stdin;
/// each line of spare PIDs makes it sweep, then it says `SFSWEPT`. It greets with
/// `SFSWEEPER <pid>`.
pub(crate) fn sweeper() -> String {
    format!(
        "{SWEEP}\nprintf 'SFSWEEPER %s\\n' \"$$\"\nwhile read -r pids; do sweep $pids; printf 'SFSWEPT\\n'; done\n"
    )
}

/// The environment of every command (and of the relay that spawns them).
pub(crate) const COMMAND_ENV: [&str; 4] = ["HOME=/tmp", "PAGER=cat", "GIT_PAGER=cat", "TERM=dumb"];

/// Bytes of a file per command that writes it (base64 in one argument; an argument may
/// hold 128 KiB).
const WRITE_CHUNK: usize = 48 * 1024;

/// The commands that write `contents` to `path` as the sandbox user, creating its
/// directory: base64 chunks decoded by coreutils, so any bytes go, through either channel,
/// and a file lands where the sandbox sees it (an upload through the engine into a tmpfs
/// mount would land under it, unseen).
pub(crate) fn write_commands(path: &str, contents: &[u8]) -> Vec<String> {
    use base64::Engine;
    let quote = synthfleet_core::task::shell_quote;
    let dir = match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    };
    let mut commands = vec![format!(
        "{{ [ -d {dir} ] || mkdir -p {dir}; }} && : > {path}",
        dir = quote(dir),
        path = quote(path)
    )];
    commands.extend(contents.chunks(WRITE_CHUNK).map(|chunk| {
        format!(
            "printf '%s' '{}' | base64 -d >> {}",
            base64::engine::general_purpose::STANDARD.encode(chunk),
            quote(path)
        )
    }));
    commands
}

/// The in-sandbox end of a gateway ([`synthfleet_core::ports::Sandbox::exec_serving`]): an
/// HTTP server on `127.0.0.1:PORT` (Python's standard library) that hands each request to
/// the worker over its own stdout — `<length>\n<JSON {method, path, body}>` — and answers
/// with what the worker writes back on its stdin (`<length>\n<JSON {status, body}>`), one
/// request at a time. It greets with `SFGATEWAY <pid>`.
pub(crate) const GATEWAY_FORWARDER: &str = r#"
import http.server, json, os, socketserver, sys, threading
port = int(sys.argv[1])
lock = threading.Lock()
out, inp = sys.stdout.buffer, sys.stdin.buffer

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        request = json.dumps({"method": self.command, "path": self.path, "body": body}).encode()
        with lock:
            out.write(b"%d\n" % len(request) + request)
            out.flush()
            line = inp.readline()
            answer = json.loads(inp.read(int(line))) if line.strip() else None
        if answer is None:
            self.send_error(502, "the synthfleet gateway is gone")
            return
        data = answer["body"].encode()
        self.send_response(answer["status"])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = relay

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

server = Server(("127.0.0.1", port), Handler)
out.write(b"SFGATEWAY %d\n" % os.getpid())
out.flush()
server.serve_forever()
"#;
