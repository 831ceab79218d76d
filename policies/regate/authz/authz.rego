# METADATA
# title: Regate tool-call authorization
# description: >-
#   Decides whether a caller may call one tool of one registered agent.
#   Default deny: a call is allowed only by a grant in data.regate.grants.
#   The library around it is data-driven (policies/regate/*/data.json):
#   grants by identity or claims, expiry and time windows (grants.rego,
#   time_windows.rego), risk annotations that require approval (risk.rego),
#   argument constraints (arguments.rego), per-caller rate limits
#   (rate_limits.rego) and obligations (obligations.rego). Input:
#   policies/schema/input.json, documented in docs/policy-input.md.
# schemas:
#   - input: schema.input
package regate.authz

# METADATA
# title: Decision
# description: >-
#   The decision document for one tool call, always defined:
#   {"outcome": "allow"|"deny"|"require_approval", "reasons": [{"code", "message"}],
#   "obligations": {...}}. Deny wins over require_approval, which wins over
#   allow; the reasons are every reason for the outcome. The gateway adds
#   policy_revision from OPA's provenance. The default (reason invalid_input)
#   applies when the input lacks the names a grant is matched on.
# entrypoint: true
# scope: document
# schemas:
#   - input: schema.input
default decision := {
	"outcome": "deny",
	"reasons": [{
		"code": "invalid_input",
		# regal ignore:line-length
		"message": "the policy input lacks caller.sub, target.agent_id or tool.name; the gateway must send the input document of docs/policy-input.md",
	}],
	"obligations": {},
}

decision := {"outcome": "deny", "reasons": _denials, "obligations": _deny_obligations} if {
	_names_present
	count(_denials) > 0
} else := {"outcome": "require_approval", "reasons": _approvals, "obligations": _obligations} if {
	_names_present
	count(_approvals) > 0
} else := {"outcome": "allow", "reasons": [_granted], "obligations": _obligations} if {
	_names_present
	_granted
}

# Every deny reason, in a stable order: first why no grant applies (the
# 403 message quotes the first reason), then argument constraints, then
# the rate limit; each group sorted.
_denials := [reason |
	some group in [_grant_denials, _argument_denials, _rate_denials]
	some reason in sort(group)
]

_approvals := sort(_approval_reasons)

# The names a grant is matched on are all present: without them the
# decision is the default (invalid_input), never an allow.
_names_present if {
	is_string(input.caller.sub)
	is_string(input.target.agent_id)
	is_string(input.tool.name)
}

# Where per-tool data applies, most specific first: this tool of this
# agent, every tool of this agent, every tool of every agent.
_tool_scopes := [[_agent, _tool], [_agent, "*"], ["*", "*"]]

# MCP's tools/list asks whether to show a tool, with arguments {}: the call
# itself, if made, is asked about again with its real arguments.
_listing if input.request.method == "tools/list"

# Request time, not the OPA clock: decisions are reproducible from the log.
# Undefined when input.request.time is missing or malformed, so that a
# grant with "expires" or a time window then never applies.
_now_ns := time.parse_rfc3339_ns(input.request.time)

_caller := input.caller.sub

_agent := input.target.agent_id

_tool := input.tool.name
