#!/usr/bin/env bash
# Builds the SWE-style test image (synthfleet/swe-fixture:1) without any registry: the
# Debian base from Debian's packages (cached by tag), then tests/images/swe-fixture.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
TAG="${SWE_FIXTURE_IMAGE:-synthfleet/swe-fixture:1}"

"$here/build-base.sh"
if [[ -z "${FORCE:-}" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "test image $TAG already present"
  exit 0
fi
log="$(mktemp)"
# The classic builder resolves FROM against local images only; BuildKit may try a registry.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$here/swe-fixture" >/dev/null 2>"$log" || {
  cat "$log" >&2
  echo "error: building $TAG failed (log above)" >&2
  exit 1
}
rm -f "$log"
echo "built $TAG"
