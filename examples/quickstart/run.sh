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

first="$("$bin" status "$here/campaign.toml" --json | python3 -c '
import json, sys
print(next(iter(json.load(sys.stdin)), {}).get("campaign", {}).get("name", ""))')"
id="$(ls "$here/.synthfleet/objects/trajectories/$first/success"/*/ 2>/dev/null | head -1 | sed 's/\.json\.zst$//')"
if [[ -n "$id" ]]; then
  echo
  echo "one verified trajectory (synthfleet show $id --state-dir $here/.synthfleet):"
  "$bin" show "$id" --state-dir "$here/.synthfleet"
fi
exit "$status"
