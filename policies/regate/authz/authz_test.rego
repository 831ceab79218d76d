package regate.authz_test

import data.regate.authz

# The tests of each file of the library are in the *_test.rego beside it.
# Each table test sets every data document the library reads (most to
# empty), so that it tests the rules, not the shipped data; the
# test_shipped_* tests check the shipped data.

_now := "2026-11-22T12:00:00Z" # a Sunday

_input(caller, agent, tool) := {
	"input_version": 1,
	"caller": {"sub": caller, "iss": "https://idp.example", "claims": {"sub": caller}, "act": null},
	"target": {"agent_id": agent, "version": "1.0.0", "manifest_sha256": "0000", "publisher": "acme"},
	"tool": {
		"name": tool, "permissions": [],
		"limits": {"timeout_s": 5, "memory_mb": 128, "output_kb": 64, "pids": 16},
	},
	"arguments": {},
	"request": {
		"id": "req-1", "time": _now, "source_ip": "127.0.0.1", "source_ip_from": "peer",
		"method": "POST", "path": "/v1/invoke/x/y",
	},
	"usage": {"calls_last_minute": 0, "tool_calls_last_minute": 0},
}

# _input with some fields replaced (a deep merge).
_call(caller, agent, tool, patch) := object.union(_input(caller, agent, tool), patch)

_codes(d) := [reason.code | some reason in d.reasons]

# Every decision has the three keys, a known outcome and at least one reason.
_well_formed(d) if {
	object.keys(d) == {"outcome", "reasons", "obligations"}
	d.outcome in {"allow", "deny", "require_approval"}
	count(d.reasons) > 0
	every reason in d.reasons {
		object.keys(reason) == {"code", "message"}
		is_string(reason.code)
		is_string(reason.message)
	}
	is_object(d.obligations)
}

_grants := [{"caller": "alice", "agent_id": "calculator", "tools": ["add", "stats"]}]

# Grants of every tool of each agent to each caller.
# Grants keyed by agent id, as data.json holds them, from a list whose grants
# each name their agent ("agent_id"): the tables below read better that way.
_by_agent(grants) := {agent: [object.remove(g, ["agent_id"]) | some g in grants; g.agent_id == agent] |
	some grant in grants
	agent := grant.agent_id
}

_grants_for(callers, agents) := [{"caller": caller, "agent_id": agent, "tools": ["*"]} |
	some caller in callers
	some agent in agents
]

test_invalid_input[note] if {
	some note, doc in {
		"missing caller": object.remove(_input("alice", "calculator", "add"), ["caller"]),
		"null caller": _call("alice", "calculator", "add", {"caller": null}),
		"caller sub not a string": _call("alice", "calculator", "add", {"caller": {"sub": ["alice"]}}),
		"missing agent": json.remove(_input("alice", "calculator", "add"), ["target/agent_id"]),
		"missing tool": object.remove(_input("alice", "calculator", "add"), ["tool"]),
		"tool name not a string": _call("alice", "calculator", "add", {"tool": {"name": 7}}),
		"empty input": {},
		"no input": null,
		# Names missing, yet over a rate limit: still invalid_input, not rate_limited.
		"missing tool, over the limit": object.remove(
			_call("alice", "calculator", "add", {"usage": {"calls_last_minute": 5}}),
			["tool"],
		),
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants)
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as {"per_minute": 1}
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	d.outcome == "deny"
	_codes(d) == ["invalid_input"]
	d.obligations == {}
}

# Deny wins over require_approval, which wins over allow; a deny lists every
# deny reason: grant first, then arguments (sorted by name), then rate.
test_precedence[note] if {
	some note, [doc, outcome, codes] in {
		"allow": [_input("alice", "calculator", "add"), "allow", ["granted"]],
		"approval": [_input("alice", "calculator", "stats"), "require_approval", ["approval_required"]],
		"approval, two annotations": [
			_call("alice", "calculator", "stats", {"tool": {"permissions": ["fs:delete:/x"]}}),
			"require_approval", ["approval_required", "approval_required"],
		],
		"argument beats approval": [
			_call("alice", "calculator", "stats", {"arguments": {"n": 9}}),
			"deny", ["argument_constraint"],
		],
		"rate beats approval": [
			_call("alice", "calculator", "stats", {"usage": {"calls_last_minute": 2}}),
			"deny", ["rate_limited"],
		],
		"no grant and all the rest": [
			_call("bob", "calculator", "shell", {"arguments": {"n": 9, "m": 0}, "usage": {"calls_last_minute": 2}}),
			"deny", ["no_grant", "argument_constraint", "argument_constraint", "rate_limited"],
		],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent([{"caller": "alice", "agent_id": "calculator", "tools": ["*"]}])
		with data.regate.risk as {
			"levels": ["destructive"], "approval_levels": ["destructive"],
			"tools": {"calculator": {"stats": "destructive"}}, "permissions": {"fs:delete:*": "destructive"},
		}
		with data.regate.arguments as {"tools": {"calculator": {"*": {
			"n": {"max": 5, "optional": true},
			"m": {"min": 1, "optional": true},
		}}}}
		with data.regate.rate_limits as {"per_minute": 2, "retry_after_s": 30}
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	d.outcome == outcome
	_codes(d) == codes
}

# Messages are what a caller sees in a 403: they must name the parties and the fix.
test_message[note] if {
	some note, [doc, want] in {
		"granted": [_input("alice", "calculator", "add"), `caller "alice" has a grant for tool "add" of agent "calculator"`],
		"no_grant": [
			_input("demo-client", "ops", "shell"),
			concat("", [
				`caller "demo-client" has no grant for tool "shell" of agent "ops"; `,
				"ask a policy owner to add one in policies/regate/data.json",
			]),
		],
		"invalid_input": [
			{},
			concat("", [
				"the policy input lacks caller.sub, target.agent_id or tool.name; ",
				"the gateway must send the input document of docs/policy-input.md",
			]),
		],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants)
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as {}
		with data.regate.limits as {}
		with data.regate.redact as {}
	d.reasons[0].message == want
}

# The shipped data keeps the demo and the integration tests as they were:
# the same outcomes, one reason, and no obligations.
test_shipped_demo_and_test_callers[note] if {
	some note, [doc, outcome, code] in {
		"demo calculator add": [_input("demo-client", "calculator", "add"), "allow", "granted"],
		"demo calculator stats": [_input("demo-client", "calculator", "stats"), "allow", "granted"],
		"demo ops shell": [_input("demo-client", "ops", "shell"), "deny", "no_grant"],
		"demo sneaky": [_input("demo-client", "sneaky", "echo"), "deny", "no_grant"],
		"test-client calculator": [_input("test-client", "calculator", "divide"), "allow", "granted"],
		"test-client sleepy": [_input("test-client", "sleepy", "nap"), "allow", "granted"],
		"test-client sneaky": [_input("test-client", "sneaky", "peek"), "allow", "granted"],
		"test-client ops": [_call("test-client", "ops", "shell", {"arguments": {"command": "id"}}), "deny", "no_grant"],
		"test-client, a thousand calls a minute": [
			_call("test-client", "calculator", "add", {"usage": {"calls_last_minute": 1000}}),
			"allow", "granted",
		],
		"demo-client, a thousand calls a minute": [
			_call("demo-client", "calculator", "add", {"usage": {"calls_last_minute": 1000}}),
			"allow", "granted",
		],
		"test-limited, third call": [
			_call("test-limited", "calculator", "add", {"usage": {"calls_last_minute": 2}}),
			"allow", "granted",
		],
	}
	d := authz.decision with input as doc
	_well_formed(d)
	d.outcome == outcome
	_codes(d) == [code]
	d.obligations == {}
}

# Every tool of the demo and test agents, through the shipped risk,
# argument and limit data: nothing needs approval, nothing is constrained.
test_shipped_demo_tools_unchanged[tool] if {
	some tool in ["calculator/add", "calculator/stats", "sleepy/nap", "sleepy/probe", "sleepy/flood", "sneaky/echo"]
	[agent, name] := split(tool, "/")
	d := authz.decision with input as _call("test-client", agent, name, {"tool": {"permissions": ["net:none"]}})
	d.outcome == "allow"
	d.obligations == {}
}
