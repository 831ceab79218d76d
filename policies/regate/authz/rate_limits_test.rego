package regate.authz_test

import data.regate.authz

_rate_limits := {
	"per_minute": 10,
	"retry_after_s": 30,
	"callers": {"busy": {"per_minute": 100}, "blocked": {"per_minute": 0}, "noted": {"note": "no per_minute"}},
}

# _input for caller after n calls in the last minute.
_after(caller, n) := _call(caller, "calculator", "add", {"usage": {"calls_last_minute": n, "tool_calls_last_minute": 0}})

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
		with data.regate.grants as _by_agent(_grants_for(["alice", "busy", "blocked", "noted"], ["calculator"]))
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
		with data.regate.grants as _by_agent([{"caller": "alice", "agent_id": "calculator", "tools": ["*"]}])
		with data.regate.rate_limits as _rate_limits
	d.reasons[0].message == `caller "alice" made 12 calls in the last minute and may make 10 a minute; retry later`
}

# Without rate-limit data, no call is limited.
test_rate_limits_none if {
	d := authz.decision with input as _after("alice", 1000000)
		with data.regate.grants as _by_agent([{"caller": "alice", "agent_id": "calculator", "tools": ["*"]}])
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

# Per (caller, tool) limits: shared ones by tool scope, a caller's own first.
_tool_rate_limits := {
	"per_minute": 1000,
	"retry_after_s": 20,
	"tools": {
		"calculator": {"stats": {"per_minute": 5}, "*": {"per_minute": 50}},
		"*": {"*": {"per_minute": 500}},
	},
	"callers": {
		"carol": {"tools": {"calculator": {"stats": {"per_minute": 1}}}},
		"dave": {"per_minute": 2, "tools": {"*": {"*": {"per_minute": 100}}}},
	},
}

# _input for caller's call to agent/tool after n calls to that tool.
_tool_after(caller, agent, tool, n) := _call(caller, agent, tool, {"usage": {"calls_last_minute": 0, "tool_calls_last_minute": n}})

test_tool_rate_limits[note] if {
	some note, [doc, codes] in {
		"under the tool's limit": [_tool_after("alice", "calculator", "stats", 4), ["granted"]],
		"at the tool's limit": [_tool_after("alice", "calculator", "stats", 5), ["rate_limited"]],
		"agent-wide limit": [_tool_after("alice", "calculator", "add", 49), ["granted"]],
		"over the agent-wide limit": [_tool_after("alice", "calculator", "add", 50), ["rate_limited"]],
		"every agent's tools": [_tool_after("alice", "other", "x", 500), ["rate_limited"]],
		"caller's own, tighter": [_tool_after("carol", "calculator", "stats", 1), ["rate_limited"]],
		"caller's own wins over a tighter shared one": [_tool_after("dave", "calculator", "stats", 1), ["granted"]],
		"caller's own, looser": [_tool_after("dave", "calculator", "stats", 99), ["granted"]],
		"over both limits": [
			_call("dave", "calculator", "stats", {"usage": {"calls_last_minute": 2, "tool_calls_last_minute": 100}}),
			["rate_limited", "rate_limited"],
		],
		"uncounted is over": [
			_call("alice", "calculator", "stats", {"usage": {"calls_last_minute": 0, "tool_calls_last_minute": null}}),
			["rate_limited"],
		],
		"listing is not limited": [
			_call("alice", "calculator", "stats", {
				"usage": {"calls_last_minute": 0, "tool_calls_last_minute": 9},
				"request": {"method": "tools/list"},
			}),
			["granted"],
		],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants_for(["alice", "carol", "dave"], ["calculator", "other"]))
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as _tool_rate_limits
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	_codes(d) == codes
}

test_tool_rate_limits_message if {
	d := authz.decision with input as _tool_after("alice", "calculator", "stats", 7)
		with data.regate.grants as _by_agent([{"caller": "alice", "agent_id": "calculator", "tools": ["*"]}])
		with data.regate.rate_limits as _tool_rate_limits
	d.reasons[0].message == concat("", [
		`caller "alice" made 7 calls to tool "stats" of agent "calculator" in the last minute `,
		`and may make 5 a minute; retry later`,
	])
	d.obligations == {"retry_after_s": 20}
}

# No per-tool data: the tool count is not looked at, even when missing.
test_tool_rate_limits_none if {
	doc := json.remove(_input("alice", "calculator", "stats"), ["usage/tool_calls_last_minute"])
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent([{"caller": "alice", "agent_id": "calculator", "tools": ["*"]}])
		with data.regate.rate_limits as {"per_minute": 10}
	_codes(d) == ["granted"]
}

test_shipped_tool_rate_limits[note] if {
	some note, [doc, codes] in {
		"test-tool-limited, second stats": [_tool_after("test-tool-limited", "calculator", "stats", 1), ["granted"]],
		"test-tool-limited, third stats": [_tool_after("test-tool-limited", "calculator", "stats", 2), ["rate_limited"]],
		"test-tool-limited, add is not limited": [_tool_after("test-tool-limited", "calculator", "add", 50), ["granted"]],
		"test-burst, fourth call": [_after("test-burst", 3), ["rate_limited"]],
	}
	d := authz.decision with input as doc
	_codes(d) == codes
}

test_shipped_tool_rate_limits_well_formed[note] if {
	some note, limits in {
		"(shared)": object.get(data.regate.rate_limits, "tools", {}),
		"test-tool-limited": data.regate.rate_limits.callers["test-tool-limited"].tools,
	}
	every _, tools in limits {
		every _, limit in tools {
			is_number(limit.per_minute)
			limit.per_minute >= 0
		}
	}
}

# Rate costs: an obligation on allow and require_approval, the most specific entry.
_costs := {"costs": {"reports": {"build": 10, "*": 3}, "*": {"*": 2}, "cheap": {"*": 1}}}

test_rate_costs[note] if {
	some note, [doc, outcome, obligations] in {
		"this tool": [_input("alice", "reports", "build"), "allow", {"rate_cost": 10}],
		"every tool of the agent": [_input("alice", "reports", "list"), "allow", {"rate_cost": 3}],
		"every tool of every agent": [_input("alice", "calculator", "add"), "allow", {"rate_cost": 2}],
		"a cost of 1 is no obligation": [_input("alice", "cheap", "x"), "allow", {}],
		"with approval too": [_input("alice", "vault", "open"), "require_approval", {"rate_cost": 2}],
		"not on a deny": [_input("mallory", "reports", "build"), "deny", {}],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants_for(["alice"], ["reports", "calculator", "cheap", "vault"]))
		with data.regate.risk as {"levels": ["destructive"], "approval_levels": ["destructive"], "tools": {"vault": {"*": "destructive"}}}
		with data.regate.arguments as {}
		with data.regate.rate_limits as _costs
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	d.outcome == outcome
	d.obligations == obligations
}

# Without costs every call costs 1, and no obligation says so.
test_rate_costs_none if {
	d := authz.decision with input as _input("alice", "reports", "build")
		with data.regate.grants as _by_agent([{"caller": "alice", "agent_id": "reports", "tools": ["*"]}])
		with data.regate.rate_limits as {}
		with data.regate.limits as {}
		with data.regate.redact as {}
	d.obligations == {}
}

test_shipped_rate_costs[note] if {
	some note, [doc, obligations] in {
		"test-costly, janitor.sweep": [_input("test-costly", "janitor", "sweep"), {"rate_cost": 4}],
		"test-client, calculator.add": [_input("test-client", "calculator", "add"), {}],
	}
	d := authz.decision with input as doc
	d.obligations == obligations
}

test_shipped_rate_costs_well_formed[note] if {
	some agent, tools in object.get(data.regate.rate_limits, "costs", {})
	some tool, cost in tools
	note := sprintf("%s/%s", [agent, tool])
	is_number(cost)
	cost >= 1
}
