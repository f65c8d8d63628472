#!/usr/bin/env bash
# Builds the release binaries and the worker and jobs images; with REGISTRY set, pushes
# them there (an ECR repository URL prefix, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/acme-synthfleet).
#
#   TAG=0.1.0 infra/images/build.sh
#   REGISTRY=$(terraform -chdir=infra output -json repositories | jq -r .worker | sed 's|/worker$||') TAG=0.1.0 infra/images/build.sh
#
# For the ASG fleet, the worker runs the `synthfleet` binary itself: upload it with
#   aws s3 cp target/release/synthfleet s3://<bucket>/artifacts/synthfleet
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
tag="${TAG:?set TAG, e.g. TAG=0.1.0}"
registry="${REGISTRY:-synthfleet}"

cargo build --release --locked -p synthfleet-cli -p synthfleet-jobs
# The build context holds the two binaries only.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp target/release/synthfleet target/release/synthfleet-jobs "$context/"
for target in worker jobs; do
  docker build ${BASE:+--build-arg BASE="$BASE"} --target "$target" \
    -t "$registry/$target:$tag" -f infra/images/Dockerfile "$context"
done
if [[ -n "${REGISTRY:-}" ]]; then
  aws ecr get-login-password | docker login --username AWS --password-stdin "${REGISTRY%%/*}"
  for target in worker jobs; do docker push "$registry/$target:$tag"; done
fi
echo "images: $registry/worker:$tag $registry/jobs:$tag"
