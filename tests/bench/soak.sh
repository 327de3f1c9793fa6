#!/usr/bin/env bash
# Soak (crash safety from the outside): kill `sandbox setup` and
# `sandbox setup --disable` with SIGKILL at random moments, run `--disable`
# to completion after each kill, and count what is left behind. The figure
# that matters is "residue", which must be 0.
#
#   sudo tests/bench/soak.sh [RUNS]      (default 200; CI runs 20)
#
# Odd runs kill a `setup` started on a clean host; even runs set up fully,
# then kill the `--disable`. The kill lands after a random delay within the
# command's measured runtime. Residue is any difference from the snapshot
# taken before the first run: links, addresses, routes, rules, the nft
# ruleset, the forwarding sysctls, mounts, and every file under --root
# (type, mode, owner, contents), except what --disable keeps by design
# (the audit log, the policy directory, the device key and ~/.env).
#
# Everything happens inside a throwaway network+mount namespace with a
# private /run; the real host's network, /etc and /run are never touched.
# SANDBOX_BIN picks the binary (default target/release/sandbox, built if
# missing); a debug build works too.
set -euo pipefail
runs=${1:-200}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${SANDBOX_BIN:-$here/target/release/sandbox}
if [[ ! -x $bin ]]; then
  (cd "$here" && cargo build --release --quiet)
fi
command -v nft >/dev/null || {
  echo "nft missing: apt-get install nftables" >&2
  exit 3
}

if [[ -z ${SOAK_INSIDE:-} ]]; then
  exec env SOAK_INSIDE=1 SANDBOX_BIN="$bin" unshare --net --mount --propagation private "$0" "$runs"
fi

mount -t tmpfs -o mode=0755 sandbox-soak /run
ip link set lo up
root=$(mktemp -d /tmp/sandbox-soak-XXXXXX)
trap 'umount -R "$root/run/netns" 2>/dev/null || true; rm -rf "$root"' EXIT

# A small host under --root: the sandbox user exists and OpenClaw ran once.
mkdir -p "$root/etc" "$root/home/sandbox/.openclaw" "$root/var/lib" "$root/var/log" "$root/run"
printf 'nameserver 203.0.113.53\n' >"$root/etc/resolv.conf"
printf 'root:x:0:0:root:/root:/bin/bash\nsandbox:x:990:990:OpenClaw sandbox:/home/sandbox:/bin/bash\n' >"$root/etc/passwd"
printf 'root:x:0:\nsandbox:x:990:\n' >"$root/etc/group"
printf 'root:*:19000:0:99999:7:::\nsandbox:!:19000::::::\n' >"$root/etc/shadow"
printf 'root:*::\nsandbox:!::\n' >"$root/etc/gshadow"
chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
printf '{\n    "master_key": "mk-soak",\n    "gateway": {\n        "mode": "local"\n    }\n}\n' \
  >"$root/home/sandbox/.openclaw/openclaw.json"
chmod 0600 "$root/home/sandbox/.openclaw/openclaw.json"
chmod 0700 "$root/home/sandbox/.openclaw"
chmod 0750 "$root/home/sandbox"
chown -R 990:990 "$root/home/sandbox"
# An uplink and a table of the operator's, which must come through untouched.
ip link add up0 type dummy 2>/dev/null || ip link add up0 type veth peer name up1
ip addr add 198.51.100.1/24 dev up0
ip link set up0 up
ip route add default via 198.51.100.2
nft add table inet operator
nft add chain inet operator input '{ type filter hook input priority -10; policy accept; }'

setup=("$SANDBOX_BIN" setup --root "$root" --policy default --dns 203.0.113.53 --no-systemd --non-interactive)
disable=("$SANDBOX_BIN" setup --root "$root" --disable --non-interactive)

kept='^(var/log|home/sandbox/\.defenseclaw|home/sandbox/\.env)(/|$)'
snapshot() {
  echo "## links"
  ip -d link show
  echo "## addresses"
  ip addr show
  echo "## routes"
  ip -4 route show table all
  ip -6 route show table all
  ip rule show
  echo "## nft"
  nft list ruleset
  echo "## sysctl"
  for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv6/conf/all/forwarding; do
    echo "$f=$(cat "$f")"
  done
  echo "## mounts"
  awk -v r="$root" '$5 == r || index($5, r "/") == 1 || index($5, "/run/") == 1 { print $5, $9 }' /proc/self/mountinfo
  echo "## files"
  (cd "$root" && find . -mindepth 1 -printf '%P %y %m %U:%G\n' | grep -Ev "$kept" | sort)
  (cd "$root" && find . -type f -printf '%P\n' | grep -Ev "$kept" | sort | while read -r f; do
    echo "$f $(sha256sum <"$f" | cut -c1-16)"
  done)
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Warm up: one setup and disable, so the kept files exist (a first setup
# makes the device key; every later one reuses it) and runtimes are known.
"${setup[@]}" >/dev/null
"${disable[@]}" >/dev/null
before=$(snapshot)
a=$(now_ms)
"${setup[@]}" >/dev/null
b=$(now_ms)
"${disable[@]}" >/dev/null
c=$(now_ms)
t_setup=$((b - a)) t_disable=$((c - b))
[[ $(snapshot) == "$before" ]] || {
  echo "soak: a clean setup + --disable already leaves residue" >&2
  diff <(echo "$before") <(snapshot) >&2 || true
  exit 1
}

landed=0 missed=0 residue=0 failed=0
delay() { # a random delay in [0, $1] ms, as seconds for sleep
  awk -v ms="$((RANDOM * 32768 + RANDOM))" -v max="$1" 'BEGIN { printf "%.3f", (ms % (max + 1)) / 1000 }'
}
for i in $(seq "$runs"); do
  if ((i % 2)); then
    what=setup cmd=("${setup[@]}") max=$t_setup
  else
    "${setup[@]}" >/dev/null
    what=disable cmd=("${disable[@]}") max=$t_disable
  fi
  "${cmd[@]}" >/dev/null 2>&1 &
  pid=$!
  sleep "$(delay "$max")"
  kill -KILL "$pid" 2>/dev/null || true
  status=0
  { wait "$pid"; } 2>/dev/null || status=$?
  if ((status == 137)); then landed=$((landed + 1)); else missed=$((missed + 1)); fi
  if ! out=$("${disable[@]}" 2>&1); then
    failed=$((failed + 1))
    echo "run $i ($what, status $status): --disable failed:" >&2
    echo "$out" >&2
  fi
  after=$(snapshot)
  if [[ $after != "$before" ]]; then
    residue=$((residue + 1))
    echo "run $i ($what, killed: $((status == 137))): residue (< before, > after):" >&2
    diff <(echo "$before") <(echo "$after") | head -20 >&2 || true
    # What the host record still holds, if it is what stayed.
    cat "$root/var/lib/sandbox/host.json" >&2 2>/dev/null || true
    before=$after
  fi
done

echo "soak: $runs runs (setup ${t_setup} ms, --disable ${t_disable} ms typical)"
echo "kills that landed mid-run: $landed (the other $missed runs had finished first)"
echo "--disable failures after a kill: $failed"
echo "residue found: $residue"
((residue == 0 && failed == 0))
