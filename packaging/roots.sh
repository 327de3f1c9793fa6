#!/usr/bin/env bash
# Debootstrapped Debian roots for packaging/check.sh, cached the way
# vm-tests caches its image: keyed by suite, mirror, package list and
# recipe, built once (about 80 s each) and reused afterwards.
#
#   packaging/roots.sh SUITE [PACKAGES]   # prints the cached root's path
#
# Environment: SANDBOX_TEST_CACHE (default /var/cache/sandbox-tests),
# DEBIAN_MIRROR (default: the mirror this host's apt uses). Needs root.
set -euo pipefail

SUITE=${1:?usage: packaging/roots.sh SUITE [PACKAGES]}
PACKAGES=${2:-}
CACHE=${SANDBOX_TEST_CACHE:-/var/cache/sandbox-tests}/roots
# Bump when the way a cached root is made changes.
ROOT_RECIPE=1

die() {
  printf 'roots.sh: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=tests/lib/debian-mirror.sh
. "$(dirname "$0")/../tests/lib/debian-mirror.sh"
MIRROR=$(debian_mirror) || exit 1
KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" "$ROOT_RECIPE" | sha256sum | cut -c1-12)
BASE=$CACHE/$SUITE-$KEY
if [[ ! -d $BASE ]]; then
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  mkdir -p "$CACHE"
  rm -rf "$BASE.tmp"
  include=()
  [[ -n $PACKAGES ]] && include=(--include="$PACKAGES")
  echo "roots.sh: debootstrap $SUITE from $MIRROR (1-3 minutes; cached in $BASE)" >&2
  if ! debootstrap --variant=minbase "${include[@]}" "$SUITE" "$BASE.tmp" "$MIRROR" >"$BASE.log" 2>&1; then
    tail -n 30 "$BASE.log" >&2
    die "debootstrap $SUITE failed (log: $BASE.log)"
  fi
  rm -rf "$BASE.tmp"/var/cache/apt/archives/*.deb "$BASE.tmp"/var/lib/apt/lists/*
  mv "$BASE.tmp" "$BASE"
fi
echo "$BASE"
