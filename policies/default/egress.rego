# default: strict, plus DNS (UDP and TCP 53) to the resolvers given by
# --dns. The same allowlist as the sandbox's nftables rules (see
# policy.toml); `sandbox setup` writes the addresses and ports into
# data.json next to this file.
#
# input.destination: {"ip": "8.8.8.8", "protocol": "udp", "port": 53}
package defenseclaw.egress

import rego.v1

default allow := false

allow if sidecar

allow if dns

# The gateway API and (unless --no-guardrail) the guardrail proxy.
sidecar if {
	input.destination.ip == data.sandbox.host_ip
	input.destination.protocol == "tcp"
	input.destination.port in data.sandbox.sidecar_ports
}

dns if {
	input.destination.ip in data.sandbox.resolvers
	input.destination.protocol in {"udp", "tcp"}
	input.destination.port == 53
}

deny contains msg if {
	not allow
	msg := sprintf("egress to %v %v:%v is not in the %v policy", [
		input.destination.protocol,
		input.destination.ip,
		input.destination.port,
		data.sandbox.preset,
	])
}
