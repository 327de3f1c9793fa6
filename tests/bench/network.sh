#!/usr/bin/env bash
# Benchmark (not a test): time of the network steps' setup and teardown by
# `sandbox` against an iproute2 + nft shell script doing the same work
# (netns, veth with the peer in the netns, addresses, routes, both nft
# tables, ip_forward, the DNS files), in one run, as a ratio.
# Target: sandbox <= 0.5x the script.
#
#   sudo tests/bench/network.sh [ROUNDS]      (default 20)
#
# Everything happens inside a throwaway network+mount namespace; the real
# host's network, /etc and /run are never touched.
set -euo pipefail
rounds=${1:-20}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${SANDBOX_BIN:-$here/target/release/sandbox}
if [[ ! -x $bin ]]; then
  (cd "$here" && cargo build --release --quiet)
fi
command -v nft >/dev/null || { echo "nft missing: apt-get install nftables" >&2; exit 3;
  }

if [[ ${1:-} != --inside && -z ${BENCH_INSIDE:-} ]]; then
  exec env BENCH_INSIDE=1 SANDBOX_BIN="$bin" unshare --net --mount --propagation private "$0" "$rounds"
fi

# A private /run: `ip netns add` must not leave files in the host's /run.
mount -t tmpfs -o mode=0755 sandbox-bench /run
ip link set lo up
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc"

# The same tables `sandbox setup --policy default --dns 203.0.113.53` makes.
rules_netns='table inet bench {
  chain input { type filter hook input priority 0; policy drop;
    iifname "lo" accept
    ct state established,related accept
    meta nfproto ipv6 meta l4proto tcp counter reject with tcp reset
    meta nfproto ipv6 counter reject with icmpx admin-prohibited
    ip saddr 10.200.0.1 tcp dport 18789 accept
    meta l4proto tcp counter reject with tcp reset
    counter reject with icmpx admin-prohibited
  }
  chain output { type filter hook output priority 0; policy drop;
    oifname "lo" accept
    ct state established,related accept
    meta nfproto ipv6 meta l4proto tcp counter reject with tcp reset
    meta nfproto ipv6 counter reject with icmpx admin-prohibited
    ip daddr 10.200.0.1 tcp dport { 18970, 4000 } accept
    ip daddr 203.0.113.53 udp dport 53 accept
    ip daddr 203.0.113.53 tcp dport 53 accept
    meta l4proto tcp counter reject with tcp reset
    counter reject with icmpx admin-prohibited
  }
}'
rules_host='table inet bench {
  chain input { type filter hook input priority 0; policy accept;
    iifname "bench0" ct state established,related accept
    iifname "bench0" meta nfproto ipv6 meta l4proto tcp counter reject with tcp reset
    iifname "bench0" meta nfproto ipv6 counter reject with icmpx admin-prohibited
    iifname "bench0" ip saddr 10.200.0.2 ip daddr 10.200.0.1 tcp dport { 18970, 4000 } accept
    iifname "bench0" meta l4proto tcp counter reject with tcp reset
    iifname "bench0" counter reject with icmpx admin-prohibited
  }
  chain forward { type filter hook forward priority 0; policy accept;
    oifname "bench0" ct state established,related accept
    oifname "bench0" drop
    iifname "bench0" meta nfproto ipv6 meta l4proto tcp counter reject with tcp reset
    iifname "bench0" meta nfproto ipv6 counter reject with icmpx admin-prohibited
    iifname "bench0" ip saddr 10.200.0.2 ip daddr 203.0.113.53 udp dport 53 accept
    iifname "bench0" ip saddr 10.200.0.2 ip daddr 203.0.113.53 tcp dport 53 accept
    iifname "bench0" meta l4proto tcp counter reject with tcp reset
    iifname "bench0" counter reject with icmpx admin-prohibited
  }
  chain postrouting { type nat hook postrouting priority 100; policy accept;
    ip saddr 10.200.0.2 oifname != "bench0" masquerade
  }
}'

script_up() {
  ip netns add bench0
  ip link add bench0 type veth peer name eth0 netns bench0
  ip addr add 10.200.0.1/30 dev bench0
  ip link set bench0 up
  ip -n bench0 link set lo up
  ip -n bench0 addr add 10.200.0.2/30 dev eth0
  ip -n bench0 link set eth0 up
  ip -n bench0 route replace default via 10.200.0.1
  ip netns exec bench0 nft -f - <<<"$rules_netns"
  nft -f - <<<"$rules_host"
  old_forward=$(cat /proc/sys/net/ipv4/ip_forward)
  echo 1 >/proc/sys/net/ipv4/ip_forward
  mkdir -p "$root/etc/netns/bench0"
  printf 'nameserver 203.0.113.53\n' >"$root/etc/netns/bench0/resolv.conf"
  printf 'hosts: files dns\n' >"$root/etc/netns/bench0/nsswitch.conf"
}

script_down() {
  rm -rf "$root/etc/netns/bench0"
  echo "$old_forward" >/proc/sys/net/ipv4/ip_forward
  ip link del bench0
  nft delete table inet bench
  ip netns del bench0
}

sandbox_up() {
  "$SANDBOX_BIN" setup --root "$root" --policy default --dns 203.0.113.53 --no-systemd --non-interactive >/dev/null
}

sandbox_down() {
  "$SANDBOX_BIN" setup --root "$root" --disable --non-interactive >/dev/null
}

now() { date +%s%N; }

# One warm-up of each, so page cache and module loading count for neither.
script_up; script_down; sandbox_up; sandbox_down

t_script_up=0 t_script_down=0 t_sb_up=0 t_sb_down=0
for _ in $(seq "$rounds"); do
  a=$(now); script_up; b=$(now); script_down; c=$(now)
  t_script_up=$((t_script_up + b - a)); t_script_down=$((t_script_down + c - b))
  a=$(now); sandbox_up; b=$(now); sandbox_down; c=$(now)
  t_sb_up=$((t_sb_up + b - a)); t_sb_down=$((t_sb_down + c - b))
done

ms() { awk -v n="$1" -v r="$rounds" 'BEGIN { printf "%.2f", n / r / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '%-10s %14s %14s %8s\n' "" "sandbox (ms)" "script (ms)" "ratio"
printf '%-10s %14s %14s %8s\n' setup "$(ms $t_sb_up)" "$(ms $t_script_up)" "$(ratio $t_sb_up $t_script_up)"
printf '%-10s %14s %14s %8s\n' teardown "$(ms $t_sb_down)" "$(ms $t_script_down)" "$(ratio $t_sb_down $t_script_down)"
total_sb=$((t_sb_up + t_sb_down)) total_script=$((t_script_up + t_script_down))
printf '%-10s %14s %14s %8s\n' total "$(ms $total_sb)" "$(ms $total_script)" "$(ratio $total_sb $total_script)"
echo "rounds: $rounds; target: total ratio <= 0.50"
