#!/usr/bin/env bash
# Offline checks of infra/ (the AWS provider cannot be downloaded on CI machines):
#   terraform fmt -check -recursive   (skipped with a message where terraform is missing)
#   checkov                           (PyPI, in its own cached virtualenv; zero failed
#                                      checks; each skip is inline, with its reason)
#   the worker boot scripts (templatefile, no provider) render, parse and end every here-document
# The HCL is also parsed and compared with the code by `cargo test -p synthfleet-tests --test infra`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/infra"
# No version check against HashiCorp's servers: nothing leaves the machine.
export CHECKPOINT_DISABLE=1

if command -v terraform >/dev/null 2>&1; then
  echo "== terraform fmt -check -recursive infra/"
  terraform fmt -check -recursive -diff .
else
  echo "== terraform not found: skipping terraform fmt -check (install Terraform >= 1.6 to run it)"
fi

if command -v terraform >/dev/null 2>&1; then
  # The worker hosts' boot scripts, rendered as the launch template renders them (no provider
  # is needed for templatefile), must parse, and each here-document must end.
  echo "== worker boot scripts render and parse"
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  cat > "$scratch/main.tf" <<HCL
locals {
  vars = {
    region        = "us-east-1"
    registry      = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    task_images   = { "synthfleet/quickstart:1" = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sf/tasks:q1" }
    bucket_name   = "sf-trajectories"
    binary_key    = "artifacts/synthfleet"
    worker_env    = { SYNTHFLEET_BACKEND = "aws", SYNTHFLEET_BUCKET = "sf-trajectories" }
    model_secrets = { OPENAI_API_KEY = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sf/OPENAI_API_KEY" }
    log_group     = "/synthfleet/sf/worker"
    cluster       = "sf-workers"
  }
}
output "asg" { value = templatefile("$PWD/modules/fleet/templates/asg-boot.sh.tftpl", local.vars) }
output "ecs" { value = templatefile("$PWD/modules/fleet/templates/ecs-boot.sh.tftpl", local.vars) }
HCL
  (
    cd "$scratch"
    terraform init -input=false >/dev/null 2>&1
    terraform apply -auto-approve -input=false >/dev/null 2>&1
    for script in asg ecs; do
      terraform output -raw "$script" > "$script.sh" 2>/dev/null
      bash -n "$script.sh"
      for delimiter in $(grep -o "<<'[A-Z]*'" "$script.sh" | tr -d "<'"); do
        grep -qx "$delimiter" "$script.sh" || { echo "error: $script boot script: here-document $delimiter never ends" >&2; exit 1; }
      done
    done
    if grep -q '^OPENAI_API_KEY=' asg.sh; then echo "error: a model key would be written in plain text" >&2; exit 1; fi
    grep -qx 'SYNTHFLEET_BUCKET=sf-trajectories' asg.sh || { echo "error: the asg boot script lost the worker's environment" >&2; exit 1; }
  )
fi

venv="${XDG_CACHE_HOME:-$HOME/.cache}/synthfleet/checkov-venv"
if [[ ! -x "$venv/bin/checkov" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'checkov>=3.2,<4'
fi
echo "== checkov infra/"
# --skip-download: no call to Prisma Cloud for guidelines (offline, and nothing leaves the machine).
"$venv/bin/checkov" --directory . --framework terraform --quiet --compact --skip-download
