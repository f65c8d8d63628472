#!/usr/bin/env bash
# Build the Debian base image that synthfleet's sandboxes and tests use, with no registry.
#
#   tests/images/build-base.sh            # builds synthfleet/debian-base:bookworm-2 if absent
#   FORCE=1 tests/images/build-base.sh    # rebuild even if the tag exists
#
# The rootfs comes from Debian's own packages (debootstrap, minbase variant) and is
# imported with `docker import`, so nothing is pulled from a container registry. The image
# is cached by tag: a second run returns at once. Users with a registry do not need this:
# any image with `bash`, `git` and coreutils works as a task image (see docs/SANDBOX.md).
set -euo pipefail

TAG="${SYNTHFLEET_BASE_IMAGE:-synthfleet/debian-base:bookworm-2}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# pytest, pip and patch for the SWE-style test image (tests/images/swe-fixture). Bump the
# tag suffix (-2) with this list, or a cached image would lack the new packages.
PACKAGES="git,python3,ca-certificates,procps,patch,python3-pytest,python3-pip"

if [[ -z "${FORCE:-}" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG already present"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "debootstrap not found; installing it from Debian's packages" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: run as root or install debootstrap first (apt-get install debootstrap)" >&2
    exit 1
  fi
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "debootstrap $SUITE ($PACKAGES) into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  echo "error: debootstrap failed; see the log above (is $MIRROR reachable?)" >&2
  exit 1
}

# An unprivileged user for the agent: sandboxes run as uid 1000 when the image has it.
chroot "$rootfs" useradd --uid 1000 --create-home --shell /bin/bash agent
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/debconf/*-old

tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$TAG" >/dev/null
echo "built $TAG"
