package regate.authz_test

import data.regate.authz

_now := "2026-11-22T12:00:00Z"

_input(caller, agent, tool) := {
	"input_version": 1,
	"caller": {"sub": caller, "iss": "https://idp.example", "claims": {"sub": caller}, "act": null},
	"target": {"agent_id": agent, "version": "1.0.0", "manifest_sha256": "0000", "publisher": "acme"},
	"tool": {
		"name": tool, "permissions": [],
		"limits": {"timeout_s": 5, "memory_mb": 128, "output_kb": 64, "pids": 16},
	},
	"arguments": {},
	"request": {"id": "req-1", "time": _now, "source_ip": "127.0.0.1", "method": "POST", "path": "/v1/invoke/x/y"},
	"usage": {"calls_last_minute": 0},
}

_grants := [
	{"caller": "alice", "agent_id": "calculator", "tools": ["add", "stats"]},
	{"caller": "alice", "agent_id": "sleepy", "tools": ["*"]},
	{"caller": "bob", "agent_id": "calculator", "tools": ["add"], "expires": "2026-11-23T00:00:00Z"},
	{"caller": "carol", "agent_id": "calculator", "tools": ["add"], "expires": "2026-11-22T11:59:59Z"},
	{"caller": "dave", "agent_id": "calculator", "tools": ["add"], "expires": "2026-01-01T00:00:00Z"},
	{"caller": "dave", "agent_id": "calculator", "tools": ["*"]},
	{"caller": "erin", "agent_id": "calculator", "tools": ["add"], "expires": "2026-11-01T00:00:00Z"},
	{"caller": "erin", "agent_id": "calculator", "tools": ["*"], "expires": "2026-11-02T00:00:00+01:00"},
	{"caller": "frank", "agent_id": "calculator", "tools": ["add"], "expires": "next week"},
]

# note -> input, expected outcome and reason code.
_cases := {
	"allowed": {"input": _input("alice", "calculator", "add"), "outcome": "allow", "code": "granted"},
	"allowed second listed tool": {"input": _input("alice", "calculator", "stats"), "outcome": "allow", "code": "granted"},
	"wildcard tools": {"input": _input("alice", "sleepy", "anything"), "outcome": "allow", "code": "granted"},
	"tool not in grant": {"input": _input("alice", "calculator", "shell"), "outcome": "deny", "code": "no_grant"},
	"wrong agent": {"input": _input("alice", "ops", "add"), "outcome": "deny", "code": "no_grant"},
	"wildcard is per agent": {"input": _input("alice", "ops", "shell"), "outcome": "deny", "code": "no_grant"},
	"unknown caller": {"input": _input("mallory", "calculator", "add"), "outcome": "deny", "code": "no_grant"},
	"grant not yet expired": {"input": _input("bob", "calculator", "add"), "outcome": "allow", "code": "granted"},
	"expired grant": {"input": _input("carol", "calculator", "add"), "outcome": "deny", "code": "grant_expired"},
	"expired grant, other tool": {"input": _input("carol", "calculator", "stats"), "outcome": "deny", "code": "no_grant"},
	"expired grant beside active one": {"input": _input("dave", "calculator", "add"), "outcome": "allow", "code": "granted"},
	"two expired grants": {"input": _input("erin", "calculator", "add"), "outcome": "deny", "code": "grant_expired"},
	"malformed expires never applies": {"input": _input("frank", "calculator", "add"), "outcome": "deny", "code": "no_grant"},
	"delegated call is matched on caller.sub": {
		"input": object.union(_input("alice", "calculator", "add"), {"caller": {"act": {"sub": "agent-x"}}}),
		"outcome": "allow", "code": "granted",
	},
	"missing caller": {
		"input": object.remove(_input("alice", "calculator", "add"), ["caller"]),
		"outcome": "deny", "code": "invalid_input",
	},
	"null caller": {
		"input": object.union(_input("alice", "calculator", "add"), {"caller": null}),
		"outcome": "deny", "code": "invalid_input",
	},
	"caller sub not a string": {
		"input": object.union(_input("alice", "calculator", "add"), {"caller": {"sub": ["alice"]}}),
		"outcome": "deny", "code": "invalid_input",
	},
	"missing agent": {
		"input": json.remove(_input("alice", "calculator", "add"), ["target/agent_id"]),
		"outcome": "deny", "code": "invalid_input",
	},
	"missing tool": {
		"input": object.remove(_input("alice", "calculator", "add"), ["tool"]),
		"outcome": "deny", "code": "invalid_input",
	},
	"missing tool, wildcard grant": {
		"input": object.remove(_input("alice", "sleepy", "anything"), ["tool"]),
		"outcome": "deny", "code": "invalid_input",
	},
	"empty input": {"input": {}, "outcome": "deny", "code": "invalid_input"},
	"no input": {"input": null, "outcome": "deny", "code": "invalid_input"},
	"missing request time ignores expiring grants": {
		"input": json.remove(_input("bob", "calculator", "add"), ["request/time"]),
		"outcome": "deny", "code": "no_grant",
	},
	"malformed request time ignores expiring grants": {
		"input": object.union(_input("bob", "calculator", "add"), {"request": {"time": "yesterday"}}),
		"outcome": "deny", "code": "no_grant",
	},
}

test_decision[note] if {
	some note, c in _cases
	d := authz.decision with input as c.input with data.regate.grants as _grants
	d.outcome == c.outcome
	[reason] := d.reasons
	reason.code == c.code
	d.obligations == {}
	object.keys(d) == {"outcome", "reasons", "obligations"}
}

test_decision_with_no_grants if {
	d := authz.decision with input as _input("alice", "calculator", "add") with data.regate.grants as []
	d.outcome == "deny"
	d.reasons[0].code == "no_grant"
}

# Messages are what a caller sees in a 403: they must name the parties and the fix.
_messages := {
	"granted": {
		"input": _input("alice", "calculator", "add"),
		"want": `caller "alice" has a grant for tool "add" of agent "calculator"`,
	},
	"no_grant": {
		"input": _input("demo-client", "ops", "shell"),
		"want": `caller "demo-client" has no grant for tool "shell" of agent "ops"; ask a policy owner to add one in policies/regate/data.json`,
	},
	"invalid_input": {
		"input": {},
		"want": "the policy input lacks caller.sub, target.agent_id or tool.name; the gateway must send the input document of docs/policy-input.md",
	},
	"grant_expired": {
		"input": _input("erin", "calculator", "add"),
		"want": `the grant for caller "erin" on tool "add" of agent "calculator" expired (2026-11-01T00:00:00Z, 2026-11-02T00:00:00+01:00); ask a policy owner to renew it in policies/regate/data.json`,
	},
}

test_message[note] if {
	some note, c in _messages
	d := authz.decision with input as c.input with data.regate.grants as _grants
	d.reasons[0].message == c.want
}

# The shipped data.json: the demo's allowed and denied calls, and the integration-test grants.
_shipped := {
	"demo calculator add": {"input": _input("demo-client", "calculator", "add"), "outcome": "allow"},
	"demo calculator stats": {"input": _input("demo-client", "calculator", "stats"), "outcome": "allow"},
	"demo ops shell": {"input": _input("demo-client", "ops", "shell"), "outcome": "deny"},
	"test-client calculator": {"input": _input("test-client", "calculator", "divide"), "outcome": "allow"},
	"test-client sleepy": {"input": _input("test-client", "sleepy", "sleep"), "outcome": "allow"},
	"test-client ops": {"input": _input("test-client", "ops", "shell"), "outcome": "deny"},
	"test-client sneaky": {"input": _input("test-client", "sneaky", "peek"), "outcome": "allow"},
	"demo sneaky": {"input": _input("demo-client", "sneaky", "echo"), "outcome": "deny"},
}

test_shipped_grants[note] if {
	some note, c in _shipped
	d := authz.decision with input as c.input
	d.outcome == c.outcome
}
