package regate.authz_test

import data.regate.authz

_identity_grants := [
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

test_grants_by_identity[note] if {
	some note, [doc, outcome, code] in {
		"allowed": [_input("alice", "calculator", "add"), "allow", "granted"],
		"allowed second listed tool": [_input("alice", "calculator", "stats"), "allow", "granted"],
		"wildcard tools": [_input("alice", "sleepy", "anything"), "allow", "granted"],
		"tool not in grant": [_input("alice", "calculator", "shell"), "deny", "no_grant"],
		"wrong agent": [_input("alice", "ops", "add"), "deny", "no_grant"],
		"wildcard is per agent": [_input("alice", "ops", "shell"), "deny", "no_grant"],
		"unknown caller": [_input("mallory", "calculator", "add"), "deny", "no_grant"],
		"grant not yet expired": [_input("bob", "calculator", "add"), "allow", "granted"],
		"expired grant": [_input("carol", "calculator", "add"), "deny", "grant_expired"],
		"expired grant, other tool": [_input("carol", "calculator", "stats"), "deny", "no_grant"],
		"expired grant beside active one": [_input("dave", "calculator", "add"), "allow", "granted"],
		"two expired grants": [_input("erin", "calculator", "add"), "deny", "grant_expired"],
		"malformed expires never applies": [_input("frank", "calculator", "add"), "deny", "no_grant"],
		"delegated call is matched on caller.sub": [
			_call("alice", "calculator", "add", {"caller": {"act": {"sub": "agent-x"}}}),
			"allow", "granted",
		],
		"missing request time ignores expiring grants": [
			json.remove(_input("bob", "calculator", "add"), ["request/time"]),
			"deny", "no_grant",
		],
		"malformed request time ignores expiring grants": [
			_call("bob", "calculator", "add", {"request": {"time": "yesterday"}}),
			"deny", "no_grant",
		],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_identity_grants)
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as {}
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	d.outcome == outcome
	_codes(d) == [code]
	d.obligations == {}
}

test_grants_none if {
	d := authz.decision with input as _input("alice", "calculator", "add") with data.regate.grants as _by_agent([])
	_codes(d) == ["no_grant"]
}

test_grant_expired_message if {
	d := authz.decision with input as _input("erin", "calculator", "add") with data.regate.grants as _by_agent(_identity_grants)
	d.reasons[0].message == concat("", [
		`the grant for caller "erin" on tool "add" of agent "calculator" expired `,
		`(2026-11-01T00:00:00Z, 2026-11-02T00:00:00+01:00); ask a policy owner to renew it in policies/regate/data.json`,
	])
}

_claim_grants := [
	{"claims": {"org": "acme"}, "agent_id": "files", "tools": ["read"]},
	{"claims": {"org": "acme", "roles": "files-admin"}, "agent_id": "files", "tools": ["*"]},
	{"claims": {"org": ["acme", "globex"]}, "agent_id": "files", "tools": ["list"]},
	{"claims": {"level": 3}, "agent_id": "files", "tools": ["chmod"]},
	{"caller": "bot", "claims": {"iss": "https://idp.acme.example"}, "agent_id": "backup", "tools": ["run"]},
	{"claims": {}, "agent_id": "open", "tools": ["*"]},
	{"agent_id": "open", "tools": ["*"]},
	{"claims": ["org"], "agent_id": "open", "tools": ["*"]},
]

# _input for caller with these token claims (besides sub).
_claimed(caller, claims, agent, tool) := _call(caller, agent, tool, {"caller": {"claims": claims}})

test_grants_by_claims[note] if {
	some note, [doc, code] in {
		"claim matches": [_claimed("u", {"org": "acme"}, "files", "read"), "granted"],
		"claim differs": [_claimed("u", {"org": "globex"}, "files", "read"), "no_grant"],
		"claim missing": [_claimed("u", {}, "files", "read"), "no_grant"],
		"claim in different case": [_claimed("u", {"org": "ACME"}, "files", "read"), "no_grant"],
		"role in a roles list": [
			_claimed("u", {"org": "acme", "roles": ["viewer", "files-admin"]}, "files", "rm"),
			"granted",
		],
		"role as a single value": [_claimed("u", {"org": "acme", "roles": "files-admin"}, "files", "rm"), "granted"],
		"role missing from the list": [_claimed("u", {"org": "acme", "roles": ["viewer"]}, "files", "rm"), "no_grant"],
		"role right, org wrong": [_claimed("u", {"org": "globex", "roles": ["files-admin"]}, "files", "rm"), "no_grant"],
		"one of the alternatives": [_claimed("u", {"org": "globex"}, "files", "list"), "granted"],
		"alternative in a list claim": [_claimed("u", {"org": ["initech", "globex"]}, "files", "list"), "granted"],
		"no alternative": [_claimed("u", {"org": "initech"}, "files", "list"), "no_grant"],
		"number claim": [_claimed("u", {"level": 3}, "files", "chmod"), "granted"],
		"number claim as a string": [_claimed("u", {"level": "3"}, "files", "chmod"), "no_grant"],
		"caller and claim match": [_claimed("bot", {"iss": "https://idp.acme.example"}, "backup", "run"), "granted"],
		"caller right, claim wrong": [_claimed("bot", {"iss": "https://evil.example"}, "backup", "run"), "no_grant"],
		"claim right, caller wrong": [_claimed("bob", {"iss": "https://idp.acme.example"}, "backup", "run"), "no_grant"],
		"empty claims, no caller: for nobody": [_claimed("u", {"org": "acme"}, "open", "x"), "no_grant"],
		"no claims, no caller, no token claims": [_input("u", "open", "x"), "no_grant"],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_claim_grants)
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as {}
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	_codes(d) == [code]
}

# The shipped example grants by claim (no files agent is shipped).
test_shipped_claim_grants[note] if {
	acme := {"iss": "https://idp.acme.example", "org": "acme"}
	some note, [doc, code] in {
		"acme reads": [
			_call("u", "files", "read", {"caller": {"claims": acme}, "arguments": {"path": "/srv/shared/a"}}),
			"granted",
		],
		"acme may not write": [_claimed("u", acme, "files", "write"), "no_grant"],
		"acme from another issuer": [
			_claimed("u", {"iss": "https://idp.example", "org": "acme"}, "files", "list"),
			"no_grant",
		],
		"acme admin, Tuesday 10:00": [
			_call("u", "files", "write", {
				"caller": {"claims": object.union(acme, {"roles": ["files-admin"]})},
				"request": {"time": "2026-11-24T10:00:00Z"},
			}),
			"granted",
		],
	}
	d := authz.decision with input as doc
	_codes(d) == [code]
}

# What a grant in data.regate.grants may hold. `regate policy test` runs
# these over the data in the bundle, so a misspelt key or a bad value
# fails the check before it silently grants less (or nothing).
test_shipped_grants_well_formed[note] if {
	some agent_id, grants in data.regate.grants
	is_array(grants)
	some i, grant in grants
	note := sprintf("%s %d %s", [agent_id, i, object.get(grant, "note", "")])
	count(grant.tools) > 0
	every tool in grant.tools {
		is_string(tool)
	}
	every key in object.keys(grant) {
		key in {"caller", "claims", "tools", "expires", "hours_utc", "weekdays", "note"}
	}
	_names_someone(grant)
	_claims_well_formed(grant)
	_expires_well_formed(grant)
}

_names_someone(grant) if is_string(grant.caller)

_names_someone(grant) if "claims" in object.keys(grant)

_claims_well_formed(grant) if not "claims" in object.keys(grant)

_claims_well_formed(grant) if {
	is_object(grant.claims)
	count(grant.claims) > 0
}

_expires_well_formed(grant) if not "expires" in object.keys(grant)

_expires_well_formed(grant) if is_number(time.parse_rfc3339_ns(grant.expires))
