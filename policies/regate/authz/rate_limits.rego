# Rate limits.
#
# data.regate.rate_limits (policies/regate/rate_limits/data.json) gives
# every caller "per_minute" calls, unless "callers" names its own
# {"per_minute": n}. input.usage.calls_last_minute counts the caller's calls
# in the 60 s before this one, so a limit of n lets n calls a minute
# through. Over the limit the call is denied with obligations.retry_after_s,
# which the gateway answers as 429 with Retry-After.
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

_per_minute := object.get(
	data.regate.rate_limits,
	["callers", _caller, "per_minute"],
	data.regate.rate_limits.per_minute,
)
