package regate.authz_test

import data.regate.authz

_rate_limits := {
	"per_minute": 10,
	"retry_after_s": 30,
	"callers": {"busy": {"per_minute": 100}, "blocked": {"per_minute": 0}, "noted": {"note": "no per_minute"}},
}

# _input for caller after n calls in the last minute.
_after(caller, n) := _call(caller, "calculator", "add", {"usage": {"calls_last_minute": n}})

test_rate_limits[note] if {
	some note, [doc, codes, obligations] in {
		"first call": [_after("alice", 0), ["granted"], {}],
		"tenth call": [_after("alice", 9), ["granted"], {}],
		"eleventh call": [_after("alice", 10), ["rate_limited"], {"retry_after_s": 30}],
		"far over": [_after("alice", 5000), ["rate_limited"], {"retry_after_s": 30}],
		"caller's own limit": [_after("busy", 99), ["granted"], {}],
		"over caller's own limit": [_after("busy", 100), ["rate_limited"], {"retry_after_s": 30}],
		"limit zero": [_after("blocked", 0), ["rate_limited"], {"retry_after_s": 30}],
		"override without per_minute: default": [_after("noted", 10), ["rate_limited"], {"retry_after_s": 30}],
		"no grant and over": [_after("mallory", 10), ["no_grant", "rate_limited"], {"retry_after_s": 30}],
		"listing asks with no usage": [
			_call("alice", "calculator", "add", {"request": {"method": "tools/list"}}),
			["granted"], {},
		],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _grants_for(["alice", "busy", "blocked", "noted"], ["calculator"])
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as _rate_limits
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	_codes(d) == codes
	d.obligations == obligations
}

test_rate_limits_message if {
	d := authz.decision with input as _after("alice", 12)
		with data.regate.grants as [{"caller": "alice", "agent_id": "calculator", "tools": ["*"]}]
		with data.regate.rate_limits as _rate_limits
	d.reasons[0].message == `caller "alice" made 12 calls in the last minute and may make 10 a minute; retry later`
}

# Without rate-limit data, no call is limited.
test_rate_limits_none if {
	d := authz.decision with input as _after("alice", 1000000)
		with data.regate.grants as [{"caller": "alice", "agent_id": "calculator", "tools": ["*"]}]
		with data.regate.rate_limits as {}
	_codes(d) == ["granted"]
}

test_shipped_rate_limits[note] if {
	some note, [doc, codes] in {
		"test-limited, third call": [_after("test-limited", 2), ["granted"]],
		"test-limited, fourth call": [_after("test-limited", 3), ["rate_limited"]],
		"test-client, a burst": [_after("test-client", 5000), ["granted"]],
		"anyone else: the default": [_after("stranger", 600), ["no_grant", "rate_limited"]],
	}
	d := authz.decision with input as doc
	_codes(d) == codes
}

test_shipped_rate_limit_retry_after if {
	d := authz.decision with input as _after("test-limited", 3)
	d.obligations == {"retry_after_s": data.regate.rate_limits.retry_after_s}
	d.obligations.retry_after_s > 0
}

# The integration tests make bursts of calls as test-client, and bench/ drives
# demo-client hard: neither may be limited below 1000 calls a minute.
test_shipped_rate_limits_for_tests[caller] if {
	some caller in ["test-client", "demo-client"]
	data.regate.rate_limits.callers[caller].per_minute >= 1000
}

test_shipped_rate_limits_well_formed[caller] if {
	some caller, limit in object.union(data.regate.rate_limits.callers, {"(default)": data.regate.rate_limits})
	is_number(limit.per_minute)
	limit.per_minute >= 0
}
