package regate.authz_test

import data.regate.authz

_limits := {
	"callers": {"slow": {"timeout_s": 2, "memory_mb": 512, "note": "not a number, ignored"}},
	"tools": {
		"calculator": {"add": {"timeout_s": 3, "output_kb": 8}, "*": {"timeout_s": 1.5}},
		"*": {"*": {"cpu_s": 1}},
	},
}

_redact := {"tools": {"*": {"*": ["password", "token"]}, "calculator": {"add": ["b"]}}}

test_obligations[note] if {
	some note, [doc, obligations] in {
		"caps: the lowest of caller and tool caps, only when tighter": [
			_input("slow", "calculator", "add"),
			{"limits": {"timeout_s": 1.5, "output_kb": 8, "cpu_s": 1}},
		],
		"caps: another caller": [_input("quick", "calculator", "stats"), {"limits": {"timeout_s": 1.5, "cpu_s": 1}}],
		"caps: the tool's own limit is lower": [
			_call("quick", "calculator", "add", {"tool": {"limits": {"timeout_s": 1, "output_kb": 4}}}),
			{"limits": {"cpu_s": 1}},
		],
		"redact: present names only, sorted": [
			_call("quick", "other", "x", {"arguments": {"token": "t", "password": "p", "user": "u"}}),
			{"limits": {"cpu_s": 1}, "redact": ["password", "token"]},
		],
		"redact: per tool": [
			_call("quick", "calculator", "add", {"arguments": {"a": 1, "b": 2}}),
			{"limits": {"timeout_s": 1.5, "output_kb": 8, "cpu_s": 1}, "redact": ["b"]},
		],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants_for(["slow", "quick"], ["calculator", "other"]))
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as {}
		with data.regate.limits as _limits
		with data.regate.redact as _redact
	_well_formed(d)
	d.outcome == "allow"
	d.obligations == obligations
}

# A deny carries redact (its arguments are logged too) and retry_after_s, never limits.
test_obligations_on_deny[note] if {
	some note, [doc, obligations] in {
		"no grant": [_call("nobody", "calculator", "add", {"arguments": {"b": 2}}), {"redact": ["b"]}],
		"rate limited": [
			_call("slow", "calculator", "add", {"arguments": {"b": 2}, "usage": {"calls_last_minute": 1}}),
			{"redact": ["b"], "retry_after_s": 60},
		],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent([{"caller": "slow", "agent_id": "calculator", "tools": ["*"]}])
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as {"per_minute": 1, "retry_after_s": 60}
		with data.regate.limits as _limits
		with data.regate.redact as _redact
	d.outcome == "deny"
	d.obligations == obligations
}

test_shipped_obligations[note] if {
	acme := {"iss": "https://idp.acme.example"}
	some note, [doc, obligations] in {
		"backup-bot's caps": [
			_call("backup-bot", "files", "read", {
				"caller": {"claims": acme}, "arguments": {"path": "/srv/shared/a"},
				"request": {"time": "2026-11-24T23:00:00Z"}, "tool": {"limits": {"output_kb": 1024}},
			}),
			{"limits": {"timeout_s": 2, "memory_mb": 64, "output_kb": 256}},
		],
		"a password is masked": [
			_call("test-client", "calculator", "add", {"arguments": {"a": 1, "b": 2, "password": "p"}}),
			{"redact": ["password"]},
		],
	}
	d := authz.decision with input as doc
	d.outcome == "allow"
	d.obligations == obligations
}
