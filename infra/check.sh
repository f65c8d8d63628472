#!/usr/bin/env bash
# Offline checks of infra/ (the AWS provider cannot be downloaded on CI machines):
#   terraform fmt -check -recursive   (skipped with a message where terraform is missing)
#   checkov                           (PyPI, in its own cached virtualenv; zero failed
#                                      checks; each skip is inline, with its reason)
# The HCL is also parsed and compared with the code by `cargo test -p synthfleet-tests --test infra`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/infra"

if command -v terraform >/dev/null 2>&1; then
  echo "== terraform fmt -check -recursive infra/"
  terraform fmt -check -recursive -diff .
else
  echo "== terraform not found: skipping terraform fmt -check (install Terraform >= 1.6 to run it)"
fi

venv="${XDG_CACHE_HOME:-$HOME/.cache}/synthfleet/checkov-venv"
if [[ ! -x "$venv/bin/checkov" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'checkov>=3.2,<4'
fi
echo "== checkov infra/"
# --skip-download: no call to Prisma Cloud for guidelines (offline, and nothing leaves the machine).
"$venv/bin/checkov" --directory . --framework terraform --quiet --compact --skip-download
