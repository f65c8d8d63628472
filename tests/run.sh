#!/usr/bin/env bash
# The test suite: builds what the tests need (the test images, from Debian's packages, cached
# by tag; moto's server and the Python readers from PyPI; headless Chromium) while the
# workspace compiles, then runs every test of the workspace against real Docker.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

docker info >/dev/null 2>&1 || { echo "error: Docker is not reachable; start dockerd first" >&2; exit 1; }
if ! command -v chromium-headless-shell >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1 &&
  ! { [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; }; then
  echo "error: headless Chromium is missing: sudo apt-get install chromium-headless-shell" >&2; exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1 && [[ "$(id -u)" != 0 ]]; then
  echo "error: debootstrap is missing (it builds the test images' base): sudo apt-get install debootstrap" >&2; exit 1
fi

# What the tests need besides the build, prepared beside the compile (it is mostly waiting
# on the network and the disk; the compile is what takes the cores). Each step logs to a
# file that is shown if it fails.
logs="$(mktemp -d)"
preparing=""
# On any exit (Ctrl-C, a failed compile) the preparation stops too: it runs in a process
# group of its own, killed whole.
trap '[[ -n "$preparing" ]] && kill -- -"$preparing" 2>/dev/null; rm -rf "$logs"' EXIT
prepare() {
  # moto's server (S3, SQS, DynamoDB, …) for the AWS tests, each test starting its own;
  # pyarrow and Hugging Face `datasets` read the exports back.
  python3 -c "import moto.server, pyarrow, datasets" >/dev/null 2>&1 ||
    python3 -m pip install --quiet 'moto[server]' pyarrow datasets
  # Headless Chromium renders the HTML dashboard in its test.
  if ! command -v chromium-headless-shell >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null
  fi
  examples/quickstart/build-image.sh
  tests/images/build-swe-fixture.sh
  # mini-swe-agent from PyPI, in an image of its own: the external scaffold's real agent.
  tests/images/build-mini-swe-agent.sh
}
set -m
prepare >"$logs/prepare" 2>&1 &
preparing=$!
set +m

# DuckDB's C++ is most of a cold build: clang compiles it about a third faster than gcc.
# (The compiler is part of the build's fingerprint: builds by hand with the other one
# rebuild DuckDB once; set CC/CXX yourself to choose.)
if [[ -z "${CC:-}${CXX:-}" ]] && command -v clang >/dev/null 2>&1 && command -v clang++ >/dev/null 2>&1; then
  export CC=clang CXX=clang++
fi
# `--tests`: every target with a test harness (`test = false` marks those without tests),
# no doctests (the crates have none; rustdoc would compile each crate once more).
targets=(--workspace --locked --tests)
# Arguments go to the last command (e.g. `tests/run.sh -- campaign::` runs those tests).
cargo test "${targets[@]}" --no-run
prepared=0
wait "$preparing" || prepared=$?
preparing=""
if [[ $prepared != 0 ]]; then
  cat "$logs/prepare" >&2
  echo "error: preparing the test images and tools failed (log above)" >&2
  exit "$prepared"
fi
cat "$logs/prepare"
cargo test "${targets[@]}" "$@"
