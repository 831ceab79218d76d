package regate.shadow_test

import data.regate.authz
import data.regate.shadow

_input(caller, calls, arguments) := {
	"input_version": 1,
	"caller": {"sub": caller, "iss": "https://idp.example", "claims": {"sub": caller}, "act": null},
	"target": {"agent_id": "calculator", "version": "1.0.0", "manifest_sha256": "0000", "publisher": "acme"},
	"tool": {
		"name": "add", "permissions": [],
		"limits": {"timeout_s": 5, "memory_mb": 128, "output_kb": 64, "pids": 16},
	},
	"arguments": arguments,
	"request": {
		"id": "req-1", "time": "2026-11-22T12:00:00Z", "source_ip": "127.0.0.1",
		"source_ip_from": "peer", "method": "POST", "path": "/v1/invoke/calculator/add",
	},
	"usage": {"calls_last_minute": calls},
}

# The enforced data every case starts from; each case's candidate replaces some of it.
_enforced := {
	"grants": {"calculator": [{"caller": "alice", "tools": ["add"]}]},
	"risk": {"levels": ["low", "destructive"], "approval_levels": ["destructive"], "tools": {}},
	"arguments": {},
	"rate_limits": {"per_minute": 10},
	"limits": {},
	"redact": {"tools": {"*": {"*": ["password"]}}},
}

test_candidate_outcomes[note] if {
	some note, [doc, candidate, want] in {
		"no candidate, agrees on allow": [_input("alice", 0, {}), {}, ["allow", "allow"]],
		"no candidate, agrees on deny": [_input("bob", 0, {}), {}, ["deny", "deny"]],
		"candidate grants revoke alice": [_input("alice", 0, {}), {"grants": {}}, ["allow", "deny"]],
		"candidate grants add bob": [
			_input("bob", 0, {}),
			{"grants": {"calculator": [{"caller": "bob", "tools": ["*"]}]}},
			["deny", "allow"],
		],
		"candidate risk needs approval": [
			_input("alice", 0, {}),
			{"risk": {"levels": ["destructive"], "approval_levels": ["destructive"], "tools": {"calculator": {"add": "destructive"}}}},
			["allow", "require_approval"],
		],
		"candidate rate limit is lower": [_input("alice", 5, {}), {"rate_limits": {"per_minute": 5}}, ["allow", "deny"]],
		"candidate argument constraint": [
			_input("alice", 0, {"a": 7}),
			{"arguments": {"tools": {"calculator": {"add": {"a": {"max": 5}}}}}},
			["allow", "deny"],
		],
	}
	enforced := authz.decision with input as doc
		with data.regate.grants as _enforced.grants
		with data.regate.risk as _enforced.risk
		with data.regate.arguments as _enforced.arguments
		with data.regate.rate_limits as _enforced.rate_limits
		with data.regate.limits as _enforced.limits
		with data.regate.redact as _enforced.redact
	candidate_decision := shadow.decision with input as doc
		with data.regate.grants as _enforced.grants
		with data.regate.risk as _enforced.risk
		with data.regate.arguments as _enforced.arguments
		with data.regate.rate_limits as _enforced.rate_limits
		with data.regate.limits as _enforced.limits
		with data.regate.redact as _enforced.redact
		with data.regate.shadow.candidate as candidate
	[enforced.outcome, candidate_decision.outcome] == want
}

test_candidate_obligations if {
	doc := _input("alice", 0, {"password": "x"})
	candidate_decision := shadow.decision with input as doc
		with data.regate.grants as _enforced.grants
		with data.regate.risk as _enforced.risk
		with data.regate.arguments as _enforced.arguments
		with data.regate.rate_limits as _enforced.rate_limits
		with data.regate.limits as _enforced.limits
		with data.regate.redact as _enforced.redact
		with data.regate.shadow.candidate as {"limits": {"tools": {"calculator": {"add": {"timeout_s": 2}}}}, "redact": {}}
	candidate_decision.outcome == "allow"
	candidate_decision.obligations.limits == {"timeout_s": 2}
	not candidate_decision.obligations.redact
}

# The shipped candidate is empty: turning the shadow on changes nothing until a
# security team puts a candidate in policies/regate/shadow/data.json.
test_shipped_candidate_agrees[caller] if {
	some caller in ["demo-client", "test-client", "nobody"]
	doc := _input(caller, 0, {"a": 1, "b": 2})
	shadow.decision == authz.decision with input as doc
}
