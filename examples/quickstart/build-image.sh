#!/usr/bin/env bash
# Builds the quick-start task image (synthfleet/quickstart:1) without any registry:
# first the Debian base from Debian's packages (cached by tag), then the task layer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
TAG="${QUICKSTART_IMAGE:-synthfleet/quickstart:1}"

"$root/tests/images/build-base.sh"
# The classic builder resolves FROM against local images only; BuildKit may try a registry.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$here" >/dev/null 2>"$here/.build.log" || {
  cat "$here/.build.log" >&2
  echo "error: building $TAG failed (log above)" >&2
  exit 1
}
rm -f "$here/.build.log"
echo "built $TAG"
