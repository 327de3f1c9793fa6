# shellcheck shell=bash
# Shared by the hooks and sandbox-step. One runner runs one job at a time,
# so the sandbox is named after the runner: gh + 10 hex digits of a hash of
# RUNNER_NAME (names are 14 characters at most).
BIN=${SANDBOX_BIN:-/usr/local/sbin/sandbox}
# shellcheck disable=SC2206 # split on purpose: a command and its flags
SUDO_CMD=(${SANDBOX_SUDO-sudo -n})
# shellcheck disable=SC2206
HOST_ARGS=(${SANDBOX_HOST_ARGS:-})

job_name() {
  local runner=${RUNNER_NAME:?RUNNER_NAME is not set: run this from the runner}
  echo "gh$(printf '%s' "$runner" | sha256sum | cut -c1-10)"
}

sandbox() {
  local sub=$1
  shift
  "${SUDO_CMD[@]}" "$BIN" job "$sub" "${HOST_ARGS[@]}" "$@"
}
