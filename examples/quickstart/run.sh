#!/usr/bin/env bash
# The quick start, end to end: build the task image (no registry needed), build synthfleet,
# run the campaign in real Docker sandboxes, then show one verified trajectory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

"$here/build-image.sh"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p synthfleet-cli
bin="$root/target/debug/synthfleet"

"$bin" validate "$here/campaign.toml"
status=0
"$bin" run "$here/campaign.toml" --concurrency "${CONCURRENCY:-2}" || status=$?
"$bin" status "$here/campaign.toml"

id="$(find "$here/.synthfleet/objects/trajectories/quickstart/success" -name '*.json.zst' 2>/dev/null \
  | head -1 | xargs -r basename | sed 's/\.json\.zst$//')"
if [[ -n "$id" ]]; then
  echo
  echo "one verified trajectory (synthfleet show $id --state-dir $here/.synthfleet):"
  "$bin" show "$id" --state-dir "$here/.synthfleet"
fi
echo
if [[ -x "$root/target/debug/synthfleet-jobs" ]]; then
  "$bin" report "$here/campaign.toml"
else
  echo "quality report: build the DuckDB jobs once (about 15 min: cargo build -p synthfleet-jobs),"
  echo "then: $bin report $here/campaign.toml"
fi
exit "$status"
