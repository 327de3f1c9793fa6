#!/usr/bin/env bash
# The yardstick for benches/network: the same network work as sandbox's
# network steps (netns, veth with the peer made inside it, addresses,
# routes, both nft tables, ip_forward, the DNS files), done the usual way
# with iproute2 and nft. Prints "up_ns down_ns" summed over ROUNDS rounds.
# Run only inside a throwaway namespace with a private /run (the bench does).
set -euo pipefail
rounds=${1:?rounds}
root=${2:?scratch directory}

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

up() {
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

down() {
  rm -rf "$root/etc/netns/bench0"
  echo "$old_forward" >/proc/sys/net/ipv4/ip_forward
  ip link del bench0
  nft delete table inet bench
  ip netns del bench0
}

up; down # warm-up
t_up=0 t_down=0
for _ in $(seq "$rounds"); do
  a=$(date +%s%N); up; b=$(date +%s%N)
  sleep 0.1 # the bench's SETTLE, counted in neither phase
  c=$(date +%s%N); down; d=$(date +%s%N)
  t_up=$((t_up + b - a)); t_down=$((t_down + d - c))
done
echo "$t_up $t_down"
