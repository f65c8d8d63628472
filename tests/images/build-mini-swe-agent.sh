#!/usr/bin/env bash
# Builds synthfleet/mini-swe-agent:1 without any registry: the quick start's image
# (examples/quickstart/build-image.sh) with mini-swe-agent installed from PyPI wheels
# downloaded here (the image's Python is Debian bookworm's 3.11). The external scaffold's
# end-to-end test runs it. Cached by tag; FORCE=1 rebuilds.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
TAG="${MINI_SWE_AGENT_IMAGE:-synthfleet/mini-swe-agent:1}"
VERSION="2.4.6"

if [[ -z "${FORCE:-}" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "test image $TAG already present"
  exit 0
fi
"$root/examples/quickstart/build-image.sh" >/dev/null
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
python3 -m pip download --quiet --only-binary=:all: --python-version 3.11 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any "mini-swe-agent==$VERSION" -d "$dir/wheels"
cat >"$dir/Dockerfile" <<DOCKERFILE
FROM synthfleet/quickstart:1
USER root
COPY wheels /tmp/wheels
RUN python3 -m pip install --quiet --no-index --find-links /tmp/wheels --break-system-packages "mini-swe-agent==$VERSION" && rm -rf /tmp/wheels
USER $(docker image inspect synthfleet/quickstart:1 --format '{{.Config.User}}')
DOCKERFILE
log="$(mktemp)"
# The classic builder resolves FROM against local images only; BuildKit may try a registry.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$dir" >/dev/null 2>"$log" || {
  cat "$log" >&2
  echo "error: building $TAG failed (log above)" >&2
  exit 1
}
rm -f "$log"
echo "built $TAG"
