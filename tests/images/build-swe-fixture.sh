#!/usr/bin/env bash
# Builds the SWE-style test images without any registry: the Debian base from Debian's
# packages (cached by tag), then tests/images/swe-fixture (synthfleet/swe-fixture:1) and,
# FROM it, tests/images/swe-history (synthfleet/swe-history:1: the same repository cloned
# with its history, the fix in later commits, tags, stashes and reflogs). Each is cached by
# tag; FORCE=1 rebuilds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
TAG="${SWE_FIXTURE_IMAGE:-synthfleet/swe-fixture:1}"
HISTORY_TAG="${SWE_HISTORY_IMAGE:-synthfleet/swe-history:1}"

"$here/build-base.sh"

# build TAG DIR [BUILD-ARG...]
build() {
  local tag="$1" dir="$2"
  shift 2
  if [[ -z "${FORCE:-}" ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "test image $tag already present"
    return 0
  fi
  local log
  log="$(mktemp)"
  # The classic builder resolves FROM against local images only; BuildKit may try a registry.
  DOCKER_BUILDKIT=0 docker build -q "$@" -t "$tag" "$dir" >/dev/null 2>"$log" || {
    cat "$log" >&2
    echo "error: building $tag failed (log above)" >&2
    exit 1
  }
  rm -f "$log"
  echo "built $tag"
}

build "$TAG" "$here/swe-fixture"
build "$HISTORY_TAG" "$here/swe-history" --build-arg "BASE=$TAG"
