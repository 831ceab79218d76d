# Grants.
#
# Who may call what: data.regate.grants (policies/regate/data.json), keyed by
# agent id: each agent's list of grants. A grant names the agent's tools and
# the callers it is for: a token subject ("caller"), token claims ("claims"),
# or both. It may expire ("expires") and may apply only in a time window
# (time_windows.rego). Keyed by agent so a decision reads only that agent's
# grants: OPA does not index a scan of one long list (docs/benchmarks.md).
#
# Package annotations (title, input schema) are in authz.rego.
package regate.authz

# METADATA
# description: A grant matches caller, agent and tool, has not expired and is in its time window.
# custom:
#   code: granted
_granted := {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf("caller %q has a grant for tool %q of agent %q", [_caller, _tool, _agent]),
} if {
	some grant in _matching_grants
	_unexpired(grant)
	_in_window(grant)
}

# Why no grant applies: each lapse that applied, or no_grant when none did.
_grant_denials contains _grant_expired if not _granted

_grant_denials contains _outside_time_window if not _granted

_grant_denials contains _no_grant if {
	not _granted
	count(_expiries) == 0
	count(_closed_windows) == 0
}

# METADATA
# description: >-
#   A grant matches caller, agent and tool but has expired, and no other
#   matching grant applies.
# custom:
#   code: grant_expired
_grant_expired := {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf(
		"the grant for caller %q on tool %q of agent %q expired (%s); ask a policy owner to renew it in %s",
		[_caller, _tool, _agent, concat(", ", _expiries), "policies/regate/data.json"],
	),
} if {
	count(_expiries) > 0
}

_expiries contains grant.expires if {
	some grant in _matching_grants
	_expired(grant)
}

# METADATA
# description: No grant matches caller, agent and tool.
# custom:
#   code: no_grant
_no_grant := {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf(
		"caller %q has no grant for tool %q of agent %q; ask a policy owner to add one in policies/regate/data.json",
		[_caller, _tool, _agent],
	),
} if {
	_names_present
}

# Grants for this caller, agent and tool, whether or not they expired or
# are in their time window.
_matching_grants contains grant if {
	some grant in data.regate.grants[_agent]
	_covers(grant.tools, _tool)
	_for_caller(grant)
}

_covers(tools, name) if name in tools

_covers(tools, _) if "*" in tools

# A grant names its callers by subject, by claims, or both (both must then
# match). A grant that names neither is for nobody, never for everybody.
_for_caller(grant) if {
	_names_callers(grant)
	_subject_matches(grant)
	_claims_match(grant)
}

_names_callers(grant) if "caller" in object.keys(grant)

_names_callers(grant) if "claims" in object.keys(grant)

_subject_matches(grant) if not "caller" in object.keys(grant)

_subject_matches(grant) if grant.caller == _caller

_claims_match(grant) if not "claims" in object.keys(grant)

# Every named claim matches, and at least one is named: "claims": {} is
# for nobody.
_claims_match(grant) if {
	count(grant.claims) > 0
	every name, wanted in grant.claims {
		_claim_matches(wanted, input.caller.claims[name])
	}
}

# A wanted value may be one value or a list of alternatives; the token's
# claim may be one value or a list (e.g. "roles"). They match when some
# alternative equals the claim or is one of its values.
_claim_matches(wanted, claim) if {
	some alternative in _as_list(wanted)
	alternative in _as_list(claim)
}

_as_list(value) := value if is_array(value)

_as_list(value) := [value] if not is_array(value)

# A grant without "expires" never expires. A malformed "expires" neither
# applies nor reports grant_expired.
_unexpired(grant) if not "expires" in object.keys(grant)

_unexpired(grant) if time.parse_rfc3339_ns(grant.expires) > _now_ns

_expired(grant) if time.parse_rfc3339_ns(grant.expires) <= _now_ns
