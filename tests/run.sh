#!/usr/bin/env bash
# The test suite: builds what the tests need (the test image, from Debian's packages, cached
# by tag), then runs every test of the workspace against real Docker.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

docker info >/dev/null 2>&1 || { echo "error: Docker is not reachable; start dockerd first" >&2; exit 1; }
# moto's server (S3, SQS, DynamoDB) for the AWS tests; each test starts its own.
python3 -c "import moto.server" >/dev/null 2>&1 || python3 -m pip install --quiet 'moto[server]'

examples/quickstart/build-image.sh
cargo test --workspace --locked "$@"
