#!/usr/bin/env bash
# The test command (README, "Test it"). Run as root on a Debian-like host:
#
#   sudo tests/run.sh
#
# It installs what the tests need (apt), then runs every tier: formatting
# and lints, unit tests, and the root integration tests, which run the real
# binary inside throwaway network+mount namespaces and never touch the
# host's network, /etc or /run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "tests/run.sh: the integration tests create namespaces, links and nft tables: run it as root (sudo tests/run.sh)" >&2
  exit 3
fi
# shellcheck source=/dev/null
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"

echo "== installing test dependencies (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  nftables iproute2 util-linux passwd shellcheck python3 iputils-ping \
  strace lintian minisign debootstrap jq >/dev/null
echo "== installing the real OpenClaw + Node 24 (npm, cached outside the clone)"
# The integration tests run the real OpenClaw from here; without it they fail
# in CI rather than skip.
SANDBOX_OPENCLAW_DIR=$(tests/openclaw/install.sh)
export SANDBOX_OPENCLAW_DIR

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy --all-targets --features fault-injection --quiet -- -D warnings
echo "== the DefenseClaw stand-in reads what the real gateway reads (python unittest, loopback only)"
python3 -m unittest discover -s tests/standin
# The fault-injection feature only adds hooks that SANDBOX_FAULT arms, so
# every ordinary test runs too.
echo "== ansible-test sanity on the Ansible collection (ansible-core from PyPI, venv cached in \${SANDBOX_TEST_CACHE:-/var/cache/sandbox-tests})"
# The integration playbook runs from cargo test (tests/fleets.rs), with the same venv.
contrib/ansible/tests/sanity.sh
echo "== cargo test (unit + root integration + fault matrix)"
cargo test --all-targets --features fault-injection
echo "== soak: SIGKILL setup and --disable at random moments (CI size)"
SANDBOX_BIN="${CARGO_TARGET_DIR:-target}/debug/sandbox" tests/bench/soak.sh 20
echo "== vm-tests: the real binary against a real systemd under qemu (image cached in vm-tests/cache/)"
VM_PROFILE=dev bash vm-tests/run.sh
echo "== vm-tests, container runner: the real OpenClaw gateway as the agent unit under a real systemd, natively (systemd-nspawn, same root)"
VM_PROFILE=dev VM_RUNNER=nspawn VM_AGENT=real bash vm-tests/run.sh
echo "== release bundle: packaging/release.sh (throwaway key), then packaging/check.sh"
# The vendored crates, cargo-auditable and the bookworm/bullseye roots are
# cached under SANDBOX_TEST_CACHE, so a warm run only builds: once in
# release.sh, once more in another directory for the reproducibility check.
export SANDBOX_TEST_CACHE=${SANDBOX_TEST_CACHE:-/var/cache/sandbox-tests}
RELEASE_TMP=$(mktemp -d)
trap 'rm -rf "$RELEASE_TMP"' EXIT
minisign -G -W -p "$RELEASE_TMP/key.pub" -s "$RELEASE_TMP/key.sec" >/dev/null
MINISIGN_KEY=$RELEASE_TMP/key.sec DIST=$RELEASE_TMP/dist ALLOW_DIRTY=1 \
  SANDBOX_VENDOR_DIR=$SANDBOX_TEST_CACHE/vendor packaging/release.sh
packaging/check.sh "$RELEASE_TMP/dist" "$RELEASE_TMP/key.pub"
echo "== shellcheck"
shellcheck -x tests/run.sh tests/openclaw/install.sh contrib/ansible/tests/*.sh tests/bench/*.sh .ci/run \
  contrib/gitlab-runner/sandbox-executor contrib/github-actions/*.sh contrib/github-actions/sandbox-step \
  vm-tests/run.sh vm-tests/guest/inside.sh vm-tests/guest/openclaw-wrapper packaging/*.sh tests/lib/*.sh
