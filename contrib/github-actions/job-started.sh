#!/usr/bin/env bash
# GitHub Actions self-hosted runner: ACTIONS_RUNNER_HOOK_JOB_STARTED.
# Makes the job's sandbox (README.md beside this file); every `run:` step
# then goes through `sandbox-step` into it.
set -euo pipefail
# shellcheck source=/dev/null
. "$(dirname "$0")/common.sh"
name=$(job_name)
# A job of this runner that ended without its completed hook.
sandbox destroy "$name" >/dev/null
sandbox create --name "$name" --creator none --ttl "${SANDBOX_TTL:-6h}" \
  --policy "${SANDBOX_POLICY:-default}" --dns "${SANDBOX_DNS:-host}" >/dev/null
echo "sandbox: job sandbox $name ready (policy ${SANDBOX_POLICY:-default})"
