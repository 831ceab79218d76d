# Tool risk annotations.
#
# data.regate.risk (policies/regate/risk/data.json) rates tools by name
# ("tools": agent -> tool or "*" -> level) and by the permissions their
# manifest declares ("permissions": pattern -> level; a pattern ending in
# "*" matches by prefix). A call to a tool with a level listed in
# "approval_levels", or with a level not declared in "levels", needs an
# admin's approval, even when it is granted.
#
# Package annotations (title, input schema) are in authz.rego.
package regate.authz

# METADATA
# description: The tool carries a risk annotation whose level needs an admin's approval.
# custom:
#   code: approval_required
_approval_reasons contains {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf(
		"tool %q of agent %q is rated %q by the risk annotation %q%s; a call needs an admin's approval",
		[_tool, _agent, level, source, _undeclared_note(level)],
	),
} if {
	some [source, level] in _risk_annotations
	_needs_approval(level)
}

# [where the rating comes from, level] for each annotation of this tool.
_risk_annotations contains [concat("/", [agent, tool]), level] if {
	some [agent, tool] in _tool_scopes
	level := data.regate.risk.tools[agent][tool]
}

_risk_annotations contains [sprintf("permission %s", [pattern]), level] if {
	some pattern, level in data.regate.risk.permissions
	some permission in input.tool.permissions
	_permission_matches(pattern, permission)
}

_permission_matches(pattern, permission) if permission == pattern

_permission_matches(pattern, permission) if {
	endswith(pattern, "*")
	startswith(permission, trim_suffix(pattern, "*"))
}

_needs_approval(level) if level in data.regate.risk.approval_levels

# A misspelt level fails closed: it needs approval rather than none.
_needs_approval(level) if not level in data.regate.risk.levels

_undeclared_note(level) := "" if level in data.regate.risk.levels

_undeclared_note(level) := ", a level not declared in policies/regate/risk/data.json" if {
	not level in data.regate.risk.levels
}
