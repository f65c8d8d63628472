#!/usr/bin/env bash
# Sandbox throughput beside mini-swe-agent: installs mini-swe-agent 2.4.6 from PyPI into a
# cached venv, builds the quick start's image, then runs the benchmark (release build).
# The tables land in target/bench/sandbox.md; docs/benchmarks.md keeps a measured copy.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
venv="${SYNTHFLEET_BENCH_VENV:-$HOME/.cache/synthfleet/bench-venv}"
if ! "$venv/bin/python" -c "import minisweagent" >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet mini-swe-agent==2.4.6
fi
examples/quickstart/build-image.sh
cargo bench -p synthfleet-cli --bench sandbox -- --mini "$venv/bin/python" "$@"
