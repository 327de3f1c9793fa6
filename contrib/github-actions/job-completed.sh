#!/usr/bin/env bash
# GitHub Actions self-hosted runner: ACTIONS_RUNNER_HOOK_JOB_COMPLETED.
# Destroys the job's sandbox with everything in it.
set -euo pipefail
# shellcheck source=/dev/null
. "$(dirname "$0")/common.sh"
name=$(job_name)
sandbox destroy "$name"
echo "sandbox: job sandbox $name destroyed"
