# Every policy but `strict` (the `default` and `permissive` presets, and any
# custom file, `--policy ./mine.toml`): the allowlist is taken
# rule by rule from data.sandbox.allowlist, which `sandbox setup` writes
# from the same generator as the sandbox's nftables rules. Each rule:
#   {"to": [cidr...] (empty: any IPv4), "except": [cidr...],
#    "protocol": "tcp"|"udp", "ports": [n...], "why": "..."}
#
# input.destination: {"ip": "203.0.113.7", "protocol": "tcp", "port": 443}
package defenseclaw.egress

import rego.v1

default allow := false

allow if {
	some rule in data.sandbox.allowlist
	input.destination.protocol == rule.protocol
	input.destination.port in rule.ports
	to_matches(rule, input.destination.ip)
	not excepted(rule, input.destination.ip)
}

to_matches(rule, ip) if {
	count(rule.to) == 0
	net.cidr_contains("0.0.0.0/0", ip)
}

to_matches(rule, ip) if {
	some cidr in rule.to
	net.cidr_contains(cidr, ip)
}

excepted(rule, ip) if {
	some cidr in rule.except
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
