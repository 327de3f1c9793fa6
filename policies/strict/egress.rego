# strict: the agent reaches the DefenseClaw sidecar on the host IP and
# nothing else. The same allowlist as the sandbox's nftables rules (see
# policy.toml); `sandbox setup` writes the addresses and ports into
# data.json next to this file.
#
# input.destination: {"ip": "10.200.0.1", "protocol": "tcp", "port": 18970}
package defenseclaw.egress

import rego.v1

default allow := false

allow if sidecar

# The gateway API and (unless --no-guardrail) the guardrail proxy.
sidecar if {
	input.destination.ip == data.sandbox.host_ip
	input.destination.protocol == "tcp"
	input.destination.port in data.sandbox.sidecar_ports
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
