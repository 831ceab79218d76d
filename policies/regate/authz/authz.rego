# METADATA
# title: Regate tool-call authorization
# description: >-
#   Decides whether a caller may call one tool of one registered agent.
#   Default deny: a call is allowed only by a grant in data.regate.grants
#   (policies/regate/data.json). Input: policies/schema/input.json,
#   documented in docs/policy-input.md.
# schemas:
#   - input: schema.input
package regate.authz

# METADATA
# title: Decision
# description: >-
#   The decision document for one tool call, always defined:
#   {"outcome": "allow"|"deny", "reasons": [{"code", "message"}], "obligations": {}}.
#   The gateway adds policy_revision from OPA's provenance. The default
#   (reason invalid_input) applies when the input lacks the names a grant
#   is matched on.
# entrypoint: true
# scope: document
# schemas:
#   - input: schema.input
default decision := {
	"outcome": "deny",
	"reasons": [{
		"code": "invalid_input",
		"message": "the policy input lacks caller.sub, target.agent_id or tool.name; the gateway must send the input document of docs/policy-input.md",
	}],
	"obligations": {},
}

decision := {"outcome": "allow", "reasons": [_granted], "obligations": {}} if {
	_granted
} else := {"outcome": "deny", "reasons": [_grant_expired], "obligations": {}} if {
	_grant_expired
} else := {"outcome": "deny", "reasons": [_no_grant], "obligations": {}} if {
	_no_grant
}

# METADATA
# description: A grant matches caller, agent and tool and has not expired.
# custom:
#   code: granted
_granted := {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf("caller %q has a grant for tool %q of agent %q", [_caller, _tool, _agent]),
} if {
	some grant in _matching_grants
	_active(grant)
}

# METADATA
# description: >-
#   A grant matches caller, agent and tool but has expired, and no other
#   matching grant is active.
# custom:
#   code: grant_expired
_grant_expired := {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf(
		"the grant for caller %q on tool %q of agent %q expired (%s); ask a policy owner to renew it in policies/regate/data.json",
		[_caller, _tool, _agent, concat(", ", _expiries)],
	),
} if {
	count(_expiries) > 0
}

_expiries contains grant.expires if {
	some grant in _matching_grants
	_expired(grant)
}

# METADATA
# description: No grant matches caller, agent and tool.
# custom:
#   code: no_grant
_no_grant := {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf(
		"caller %q has no grant for tool %q of agent %q; ask a policy owner to add one in policies/regate/data.json",
		[_caller, _tool, _agent],
	),
} if {
	_names_present
}

# The names a grant is matched on are all present: without them the
# decision is the default (invalid_input), never an allow.
_names_present if {
	is_string(input.caller.sub)
	is_string(input.target.agent_id)
	is_string(input.tool.name)
}

# Grants naming this caller, agent and tool, whether or not they expired.
_matching_grants contains grant if {
	some grant in data.regate.grants
	grant.caller == input.caller.sub
	grant.agent_id == input.target.agent_id
	_covers(grant.tools, input.tool.name)
}

_covers(tools, name) if name in tools

_covers(tools, _) if "*" in tools

# A grant without "expires" never expires.
_active(grant) if not "expires" in object.keys(grant)

_active(grant) if time.parse_rfc3339_ns(grant.expires) > _now_ns

_expired(grant) if time.parse_rfc3339_ns(grant.expires) <= _now_ns

# Request time, not the OPA clock: decisions are reproducible from the log.
# Undefined when input.request.time is missing or malformed, so that a
# grant with "expires" then neither applies nor reports grant_expired.
_now_ns := time.parse_rfc3339_ns(input.request.time)

_caller := input.caller.sub

_agent := input.target.agent_id

_tool := input.tool.name
