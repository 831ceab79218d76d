package regate.authz_test

import data.regate.authz

_risk := {
	"levels": ["low", "high", "destructive"],
	"approval_levels": ["destructive"],
	"tools": {
		"store": {"read": "low", "write": "high", "delete": "destructive"},
		"vault": {"*": "destructive"},
		"legacy": {"wipe": "catastrophic"},
	},
	"permissions": {"fs:write:*": "high", "fs:delete:*": "destructive", "db:drop": "destructive"},
}

# _input for a call to agent/tool declaring these permissions.
_permitted(agent, tool, permissions) := _call("ops-bot", agent, tool, {"tool": {"permissions": permissions}})

test_risk[note] if {
	some note, [doc, outcome, codes] in {
		"low": [_input("ops-bot", "store", "read"), "allow", ["granted"]],
		"high is not an approval level": [_input("ops-bot", "store", "write"), "allow", ["granted"]],
		"destructive tool": [_input("ops-bot", "store", "delete"), "require_approval", ["approval_required"]],
		"every tool of an agent": [_input("ops-bot", "vault", "rotate"), "require_approval", ["approval_required"]],
		"permission prefix, high": [_permitted("misc", "x", ["fs:write:/srv"]), "allow", ["granted"]],
		"permission prefix, destructive": [
			_permitted("misc", "x", ["net:none", "fs:delete:/srv/a"]),
			"require_approval", ["approval_required"],
		],
		"exact permission": [_permitted("misc", "x", ["db:drop"]), "require_approval", ["approval_required"]],
		"exact permission is not a prefix": [_permitted("misc", "x", ["db:drop:all"]), "allow", ["granted"]],
		"tool and permission": [
			_permitted("store", "delete", ["fs:delete:/srv"]),
			"require_approval", ["approval_required", "approval_required"],
		],
		"undeclared level fails closed": [_input("ops-bot", "legacy", "wipe"), "require_approval", ["approval_required"]],
		"not granted: deny, not approval": [_input("stranger", "store", "delete"), "deny", ["no_grant"]],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants_for(["ops-bot"], ["store", "vault", "legacy", "misc"]))
		with data.regate.risk as _risk
		with data.regate.arguments as {}
		with data.regate.rate_limits as {}
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	d.outcome == outcome
	_codes(d) == codes
}

test_risk_messages[note] if {
	some note, [doc, want] in {
		"tool": [
			_input("ops-bot", "store", "delete"),
			concat("", [
				`tool "delete" of agent "store" is rated "destructive" by the risk annotation "store/delete"; `,
				`a call needs an admin's approval`,
			]),
		],
		"permission": [
			_permitted("misc", "x", ["fs:delete:/srv"]),
			concat("", [
				`tool "x" of agent "misc" is rated "destructive" by the risk annotation "permission fs:delete:*"; `,
				`a call needs an admin's approval`,
			]),
		],
		"undeclared": [_input("ops-bot", "legacy", "wipe"), concat("", [
			`tool "wipe" of agent "legacy" is rated "catastrophic" by the risk annotation "legacy/wipe", a level not declared `,
			`in policies/regate/risk/data.json; a call needs an admin's approval`,
		])],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants_for(["ops-bot"], ["store", "legacy", "misc"]))
		with data.regate.risk as _risk
	[reason] := d.reasons
	reason.message == want
}

# Approval keeps the allow's obligations (the call runs once approved).
test_risk_obligations if {
	d := authz.decision with input as _call("ops-bot", "store", "delete", {"arguments": {"token": "t"}})
		with data.regate.grants as _by_agent([{"caller": "ops-bot", "agent_id": "store", "tools": ["*"]}])
		with data.regate.risk as _risk
		with data.regate.limits as {"callers": {"ops-bot": {"timeout_s": 1}}}
		with data.regate.redact as {"tools": {"*": {"*": ["token"]}}}
	d.outcome == "require_approval"
	d.obligations == {"limits": {"timeout_s": 1}, "redact": ["token"]}
}

# The shipped example: files.delete is destructive, for acme's file admins too.
test_shipped_risk if {
	claims := {"iss": "https://idp.acme.example", "org": "acme", "roles": ["files-admin"]}
	doc := _call("u", "files", "delete", {
		"caller": {"claims": claims},
		"arguments": {"path": "/srv/shared/trash/old.txt"},
		"request": {"time": "2026-11-24T10:00:00Z"},
	})
	d := authz.decision with input as doc
	d.outcome == "require_approval"
	_codes(d) == ["approval_required"]
}

test_shipped_risk_levels_declared[source] if {
	some source, level in object.union(
		{sprintf("%s/%s", [agent, tool]): rating |
			some agent, tools in data.regate.risk.tools
			some tool, rating in tools
		},
		data.regate.risk.permissions,
	)
	level in data.regate.risk.levels
}

test_shipped_approval_levels_declared[level] if {
	some level in data.regate.risk.approval_levels
	level in data.regate.risk.levels
}
