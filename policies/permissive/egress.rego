# permissive: default, plus web (TCP 80 and 443) to public IPv4 addresses.
# "Public" never includes private, shared, loopback, link-local (the cloud
# metadata address among them), multicast or reserved ranges: they are
# listed in data.sandbox.not_public. The same allowlist as the sandbox's
# nftables rules (see policy.toml); `sandbox setup` writes data.json.
#
# input.destination: {"ip": "203.0.113.7", "protocol": "tcp", "port": 443}
package defenseclaw.egress

import rego.v1

default allow := false

allow if sidecar

allow if dns

allow if web

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

web if {
	input.destination.protocol == "tcp"
	input.destination.port in {80, 443}
	public(input.destination.ip)
}

# A valid IPv4 address outside every non-public range. An address that is
# not IPv4 makes cidr_contains fail, so it is never public.
public(ip) if {
	net.cidr_contains("0.0.0.0/0", ip)
	not non_public(ip)
}

non_public(ip) if {
	some cidr in data.sandbox.not_public
	net.cidr_contains(cidr, ip)
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
