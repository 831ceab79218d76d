# Obligations.
#
# What the gateway must do with a decision besides its outcome. "limits":
# tighter tool limits (data.regate.limits, by caller and by tool; the
# gateway applies the minimum of these and the manifest's). "redact": names
# of arguments the gateway masks in the decision log (data.regate.redact).
# "retry_after_s": on a rate_limited deny, the seconds the gateway puts in
# Retry-After. "rate_cost": how many units of the caller's rate limits the
# call uses (data.regate.rate_limits.costs; present only when not 1).
#
# Package annotations (title, input schema) are in authz.rego.
package regate.authz

_obligations := object.union(object.union(_limits_obligation, _redact_obligation), _cost_obligation)

_deny_obligations := object.union(_redact_obligation, _retry_obligation)

default _limits_obligation := {}

_limits_obligation := {"limits": _limits} if count(_limits) > 0

default _redact_obligation := {}

_redact_obligation := {"redact": sort(_redacted)} if count(_redacted) > 0

default _cost_obligation := {}

_cost_obligation := {"rate_cost": _rate_cost} if _rate_cost != 1

default _retry_obligation := {}

_retry_obligation := {"retry_after_s": data.regate.rate_limits.retry_after_s} if count(_rate_denials) > 0

# The lowest cap on each limit, kept only when it is tighter than the tool's own.
_limits[name] := cap if {
	some [name, _] in _caps
	cap := min({value | some [capped, value] in _caps; capped == name})
	_tightens(name, cap)
}

# [limit name, cap] from the caller's caps and the tool's.
_caps contains [name, value] if {
	some name, value in data.regate.limits.callers[_caller]
	is_number(value)
}

_caps contains [name, value] if {
	some [agent, tool] in _tool_scopes
	some name, value in data.regate.limits.tools[agent][tool]
	is_number(value)
}

_tightens(name, cap) if cap < input.tool.limits[name]

_tightens(name, _) if not name in object.keys(input.tool.limits)

# Arguments of this call whose values the decision log must mask.
_redacted contains name if {
	some [agent, tool] in _tool_scopes
	some name in data.regate.redact.tools[agent][tool]
	name in object.keys(input.arguments)
}
