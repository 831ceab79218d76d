package regate.authz_test

import data.regate.authz

_argument_rules := {"tools": {
	"files": {
		"read": {
			"path": {"path_under": ["/srv/shared", "/tmp/regate/"]},
			"max_bytes": {"min": 1, "max": 1024, "optional": true},
		},
		"*": {"encoding": {"one_of": ["utf-8", "base64"], "optional": true}},
	},
	"http": {"fetch": {"url": {"startswith": ["https://api.example.com/"]}}},
	"odd": {
		"typo": {"path": {"starts_with": ["/srv/"]}},
		"scalar": {"path": "/srv/"},
	},
	"*": {"*": {"trace": {"one_of": [false], "optional": true}}},
}}

# _input for ops-bot calling agent/tool with these arguments.
_with_args(agent, tool, arguments) := _call("ops-bot", agent, tool, {"arguments": arguments})

test_arguments[note] if {
	some note, [doc, problems] in {
		"path under a dir": [_with_args("files", "read", {"path": "/srv/shared/a.txt"}), []],
		"the dir itself": [_with_args("files", "read", {"path": "/srv/shared"}), []],
		"dir given with a slash": [_with_args("files", "read", {"path": "/tmp/regate/x"}), []],
		"outside": [_with_args("files", "read", {"path": "/etc/passwd"}), ["path"]],
		"a sibling with the same prefix": [_with_args("files", "read", {"path": "/srv/shared-not/a"}), ["path"]],
		"dot-dot": [_with_args("files", "read", {"path": "/srv/shared/../../etc/passwd"}), ["path"]],
		"dot": [_with_args("files", "read", {"path": "/srv/shared/./a"}), ["path"]],
		"double slash": [_with_args("files", "read", {"path": "/srv/shared//a"}), ["path"]],
		"trailing slash": [_with_args("files", "read", {"path": "/srv/shared/a/"}), ["path"]],
		"relative": [_with_args("files", "read", {"path": "srv/shared/a"}), ["path"]],
		"not a string": [_with_args("files", "read", {"path": ["/srv/shared/a"]}), ["path"]],
		"null": [_with_args("files", "read", {"path": null}), ["path"]],
		"required and missing": [_with_args("files", "read", {}), ["path"]],
		"number in range": [_with_args("files", "read", {"path": "/srv/shared/a", "max_bytes": 1024}), []],
		"number over the max": [_with_args("files", "read", {"path": "/srv/shared/a", "max_bytes": 1025}), ["max_bytes"]],
		"number under the min": [_with_args("files", "read", {"path": "/srv/shared/a", "max_bytes": 0}), ["max_bytes"]],
		"number as a string": [
			_with_args("files", "read", {"path": "/srv/shared/a", "max_bytes": "9"}),
			["max_bytes", "max_bytes"],
		],
		"one of, agent-wide": [_with_args("files", "read", {"path": "/srv/shared/a", "encoding": "utf-8"}), []],
		"not one of": [_with_args("files", "stat", {"encoding": "latin-1"}), ["encoding"]],
		"every tool of every agent": [_with_args("calculator", "add", {"trace": true}), ["trace"]],
		"two problems": [_with_args("files", "read", {"path": "/etc", "encoding": "utf-7"}), ["encoding", "path"]],
		"url prefix": [_with_args("http", "fetch", {"url": "https://api.example.com/v1/x"}), []],
		"url prefix, other host": [_with_args("http", "fetch", {"url": "https://api.example.com.evil.test/"}), ["url"]],
		"url not a string": [_with_args("http", "fetch", {"url": 7}), ["url"]],
		"unknown constraint fails closed": [_with_args("odd", "typo", {"path": "/srv/x"}), ["path"]],
		"malformed constraint fails closed": [_with_args("odd", "scalar", {"path": "/srv/x"}), ["path"]],
		"unconstrained tool": [_with_args("calculator", "add", {"a": 1}), []],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants_for(["ops-bot"], ["files", "http", "odd", "calculator"]))
		with data.regate.risk as {}
		with data.regate.arguments as _argument_rules
		with data.regate.rate_limits as {}
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	d.outcome == {true: "allow", false: "deny"}[problems == []]
	[split(reason.message, `"`)[1] | some reason in d.reasons; reason.code == "argument_constraint"] == problems
}

# The message names the argument and the rule, never the value (it may be a secret).
test_arguments_messages[note] if {
	some note, [arguments, want] in {
		"path": [
			{"path": "/etc/secret-name"},
			concat("", [
				`argument "path" of tool "read" of agent "files" must be a normalized absolute path `,
				`under one of ["/srv/shared", "/tmp/regate/"]`,
			]),
		],
		"missing": [{}, `argument "path" of tool "read" of agent "files" is required by policy but missing`],
		"max": [
			{"path": "/srv/shared/a", "max_bytes": 5000},
			`argument "max_bytes" of tool "read" of agent "files" must be a number no greater than 1024`,
		],
	}
	d := authz.decision with input as _with_args("files", "read", arguments)
		with data.regate.grants as _by_agent([{"caller": "ops-bot", "agent_id": "files", "tools": ["*"]}])
		with data.regate.arguments as _argument_rules
	[reason] := d.reasons
	reason.message == want
}

test_arguments_other_messages[note] if {
	some note, [doc, want] in {
		"prefix": [
			_with_args("http", "fetch", {"url": "http://x"}),
			`argument "url" of tool "fetch" of agent "http" must start with one of ["https://api.example.com/"]`,
		],
		"one of": [
			_with_args("files", "stat", {"encoding": "x"}),
			`argument "encoding" of tool "stat" of agent "files" must be one of ["utf-8", "base64"]`,
		],
		"unknown": [
			_with_args("odd", "typo", {"path": "/srv/x"}),
			concat("", [
				`argument "path" of tool "typo" of agent "odd" has a constraint this policy does not know `,
				`({"starts_with": ["/srv/"]})`,
			]),
		],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_grants_for(["ops-bot"], ["files", "http", "odd"]))
		with data.regate.arguments as _argument_rules
	[reason] := d.reasons
	reason.message == want
}

# MCP's tools/list asks with arguments {}: constraints do not hide the tool.
test_arguments_not_checked_for_listing if {
	doc := _call("ops-bot", "files", "read", {"request": {"method": "tools/list", "path": "/mcp"}})
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent([{"caller": "ops-bot", "agent_id": "files", "tools": ["*"]}])
		with data.regate.arguments as _argument_rules
	_codes(d) == ["granted"]
}

# The shipped examples, for acme's file readers (the files agent is not shipped).
test_shipped_arguments[note] if {
	acme := {"iss": "https://idp.acme.example", "org": "acme"}
	some note, [arguments, codes] in {
		"shared file": [{"path": "/srv/shared/report.csv"}, ["granted"]],
		"host file": [{"path": "/etc/shadow"}, ["argument_constraint"]],
		"traversal": [{"path": "/srv/shared/../../etc/shadow"}, ["argument_constraint"]],
		"too many bytes": [{"path": "/srv/shared/a", "max_bytes": 2097152}, ["argument_constraint"]],
		"bad encoding": [{"path": "/srv/shared/a", "encoding": "rot13"}, ["argument_constraint"]],
	}
	d := authz.decision with input as _call("u", "files", "read", {"caller": {"claims": acme}, "arguments": arguments})
	_codes(d) == codes
}

# What a constraint may hold: a misspelt kind would deny every call.
test_shipped_constraints_well_formed[note] if {
	some agent, tools in data.regate.arguments.tools
	some tool, arguments in tools
	some name, constraint in arguments
	note := sprintf("%s/%s %s", [agent, tool, name])
	every kind in object.keys(constraint) {
		kind in {"startswith", "path_under", "max", "min", "one_of", "optional", "note"}
	}
	every dir in object.get(constraint, "path_under", []) {
		startswith(dir, "/")
	}
}
