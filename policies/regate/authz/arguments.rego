# Argument constraints.
#
# data.regate.arguments.tools (policies/regate/arguments/data.json) maps
# agent -> tool (or "*") -> argument -> constraint. A constraint holds one
# or more of: "startswith" (string prefixes), "path_under" (directories; the
# value must be a normalized absolute path inside one), "max", "min"
# (numbers), "one_of" (values); and "optional": true to let the argument be
# absent. A constraint this policy does not know fails closed. Constraints
# apply to calls, not to MCP tools/list questions.
#
# Package annotations (title, input schema) are in authz.rego.
package regate.authz

# METADATA
# description: An argument of the call breaks a constraint of data.regate.arguments.
# custom:
#   code: argument_constraint
_argument_denials contains {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf("argument %q of tool %q of agent %q %s", [name, _tool, _agent, problem]),
} if {
	not _listing
	some [name, problem] in _argument_problems
}

# [argument name, constraint] for each constraint on this tool.
_constraints contains [name, constraint] if {
	some [agent, tool] in _tool_scopes
	some name, constraint in data.regate.arguments.tools[agent][tool]
}

# [argument name, what is wrong]: the message never quotes the value,
# which may be a secret.
_argument_problems contains [name, "is required by policy but missing"] if {
	some [name, constraint] in _constraints
	not name in object.keys(input.arguments)
	not constraint.optional
}

_argument_problems contains [name, sprintf("must start with one of %v", [prefixes])] if {
	some [name, constraint] in _constraints
	prefixes := constraint.startswith
	value := input.arguments[name]
	not _starts_with_any(value, prefixes)
}

_argument_problems contains [name, sprintf("must be a normalized absolute path under one of %v", [dirs])] if {
	some [name, constraint] in _constraints
	dirs := constraint.path_under
	value := input.arguments[name]
	not _path_under_any(value, dirs)
}

_argument_problems contains [name, sprintf("must be a number no greater than %v", [limit])] if {
	some [name, constraint] in _constraints
	limit := constraint.max
	value := input.arguments[name]
	not _at_most(value, limit)
}

_argument_problems contains [name, sprintf("must be a number no less than %v", [limit])] if {
	some [name, constraint] in _constraints
	limit := constraint.min
	value := input.arguments[name]
	not _at_least(value, limit)
}

_argument_problems contains [name, sprintf("must be one of %v", [allowed])] if {
	some [name, constraint] in _constraints
	allowed := constraint.one_of
	value := input.arguments[name]
	not _one_of(value, allowed)
}

_argument_problems contains [name, sprintf("has a constraint this policy does not know (%v)", [constraint])] if {
	some [name, constraint] in _constraints
	not _known_constraint(constraint)
}

_known_constraint(constraint) if {
	is_object(constraint)
	every kind in object.keys(constraint) {
		kind in {"startswith", "path_under", "max", "min", "one_of", "optional", "note"}
	}
}

_starts_with_any(value, prefixes) if {
	is_string(value)
	some prefix in prefixes
	startswith(value, prefix)
}

# Segment-wise: "/srv/data" holds "/srv/data" and "/srv/data/x", not
# "/srv/database"; "/srv/data/../../etc" is refused as not normalized.
_path_under_any(path, dirs) if {
	_normalized_absolute(path)
	some dir in dirs
	_inside(path, trim_suffix(dir, "/"))
}

_normalized_absolute(path) if {
	is_string(path)
	startswith(path, "/")
	every segment in split(substring(path, 1, -1), "/") {
		not segment in {"", ".", ".."}
	}
}

_inside(path, dir) if path == dir

_inside(path, dir) if startswith(path, concat("", [dir, "/"]))

_at_most(value, limit) if {
	is_number(value)
	value <= limit
}

_at_least(value, limit) if {
	is_number(value)
	value >= limit
}

_one_of(value, allowed) if value in allowed
