# shellcheck shell=bash
# The Debian mirror debootstrap should use, for the scripts that build
# cached Debian roots (vm-tests/run.sh, packaging/roots.sh). Source it:
#
#   . tests/lib/debian-mirror.sh
#   MIRROR=$(debian_mirror) || exit 1
#
# DEBIAN_MIRROR if set; else the first non-security Debian mirror this
# host's apt uses (one-line or deb822 sources). None is built in: a host
# without one gets an error naming the variable to set.
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local m
  m=$(grep -h -o -E 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
    grep -v -- -security | head -n 1 | tr -d ' ')
  if [[ -z $m ]]; then
    echo "no Debian mirror in /etc/apt/sources.list*: set DEBIAN_MIRROR to the one apt should use" >&2
    return 1
  fi
  echo "$m"
}
