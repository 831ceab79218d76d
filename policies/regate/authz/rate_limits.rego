# Rate limits.
#
# data.regate.rate_limits (policies/regate/rate_limits/data.json) gives
# every caller "per_minute" calls, unless "callers" names its own
# {"per_minute": n}. input.usage.calls_last_minute counts the caller's calls
# in the 60 s before this one, so a limit of n lets n calls a minute
# through. Over the limit the call is denied with obligations.retry_after_s,
# which the gateway answers as 429 with Retry-After.
#
# Per (caller, tool) limits: "tools" (agent -> tool or "*" -> {"per_minute"})
# limits every caller's calls to a tool, and a caller's own "tools" (same
# shape, under "callers") overrides it; the most specific entry applies, the
# caller's before the shared ones. "*" gives each tool of the agent that
# limit, counted per tool. input.usage.tool_calls_last_minute counts the
# caller's calls to this tool of this agent in the 60 s before this one.
#
# Costs: "costs" (agent -> tool or "*" -> n) makes a call of that tool use n
# units of both limits instead of 1 (an expensive tool, a budget); the most
# specific entry applies. The gateway charges the extra units once policy
# has answered allow or require_approval (obligations.rate_cost), so the
# counts above are units, not calls.
#
# Package annotations (title, input schema) are in authz.rego.
package regate.authz

# METADATA
# description: The caller made as many calls in the last minute as its limit allows.
# custom:
#   code: rate_limited
_rate_denials contains {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf(
		"caller %q made %v calls in the last minute and may make %v a minute; retry later",
		[_caller, input.usage.calls_last_minute, _per_minute],
	),
} if {
	input.usage.calls_last_minute >= _per_minute
}

# METADATA
# description: The caller made as many calls to this tool in the last minute as its limit for the tool allows.
# custom:
#   code: rate_limited
_rate_denials contains {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf(
		"caller %q made %v calls to tool %q of agent %q in the last minute and may make %v a minute; retry later",
		[_caller, object.get(input.usage, "tool_calls_last_minute", "uncounted"), _tool, _agent, _tool_per_minute],
	),
} if {
	not _listing
	is_number(_tool_per_minute)
	not _within_tool_limit
}

_per_minute := object.get(
	data.regate.rate_limits,
	["callers", _caller, "per_minute"],
	data.regate.rate_limits.per_minute,
)

# A count the gateway did not send is not within any limit (fails closed).
_within_tool_limit if {
	is_number(input.usage.tool_calls_last_minute)
	input.usage.tool_calls_last_minute < _tool_per_minute
}

# The first of the caller's own per-tool limits, then the shared ones, each
# most specific first; undefined (no per-tool limit) when there is none.
_tool_per_minute := array.concat(
	[n | some [agent, tool] in _tool_scopes; n := data.regate.rate_limits.callers[_caller].tools[agent][tool].per_minute],
	[n | some [agent, tool] in _tool_scopes; n := data.regate.rate_limits.tools[agent][tool].per_minute],
)[0]

# The call's rate cost: the most specific of data.regate.rate_limits.costs, else 1.
default _rate_cost := 1

_rate_cost := [n | some [agent, tool] in _tool_scopes; n := data.regate.rate_limits.costs[agent][tool]][0]
