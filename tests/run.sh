#!/usr/bin/env bash
# The test suite: builds what the tests need (the test image, from Debian's packages, cached
# by tag), then runs every test of the workspace against real Docker.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

docker info >/dev/null 2>&1 || { echo "error: Docker is not reachable; start dockerd first" >&2; exit 1; }
# moto's server (S3, SQS, DynamoDB) for the AWS tests, each test starting its own;
# pyarrow and Hugging Face `datasets` read the exports back.
python3 -c "import moto.server, pyarrow, datasets" >/dev/null 2>&1 ||
  python3 -m pip install --quiet 'moto[server]' pyarrow datasets
# Headless Chromium renders the HTML dashboard in its test.
if ! command -v chromium-headless-shell >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null
  else
    echo "error: headless Chromium is missing: sudo apt-get install chromium-headless-shell" >&2; exit 1
  fi
fi

examples/quickstart/build-image.sh
tests/images/build-swe-fixture.sh
cargo test --workspace --locked "$@"
