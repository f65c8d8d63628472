#!/usr/bin/env bash
# The test suite: builds what the tests need (the test image, from Debian's packages, cached
# by tag), then runs every test of the workspace against real Docker.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

docker info >/dev/null 2>&1 || { echo "error: Docker is not reachable; start dockerd first" >&2; exit 1; }
examples/quickstart/build-image.sh
cargo test --workspace --locked "$@"
