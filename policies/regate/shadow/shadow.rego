# METADATA
# title: Regate shadow policy (the candidate)
# description: >-
#   A candidate decision the gateway evaluates beside the enforced one
#   (data.regate.authz.decision) when [shadow] sample_rate > 0. It is never
#   enforced: the gateway records it in the decision record ("shadow") and
#   logs and counts where its outcome differs. As shipped, the candidate is
#   the enforced library run on candidate data: each document named in
#   data.regate.shadow.candidate (grants, risk, arguments, rate_limits,
#   limits, redact) replaces the enforced one; what is not named is shared.
#   With no candidate data it always agrees. To try a rule change instead,
#   define decision here with the new rules (docs/policy-guide.md).
# schemas:
#   - input: schema.input
package regate.shadow

import data.regate.authz

# METADATA
# title: Shadow decision
# description: >-
#   The same document as data.regate.authz.decision, decided with the
#   candidate data. The gateway reads it at /v1/data/regate/shadow/decision.
# entrypoint: true
# scope: document
# schemas:
#   - input: schema.input
decision := candidate if {
	candidate := authz.decision with data.regate.grants as _candidate("grants", data.regate.grants)
		with data.regate.risk as _candidate("risk", data.regate.risk)
		with data.regate.arguments as _candidate("arguments", data.regate.arguments)
		with data.regate.rate_limits as _candidate("rate_limits", data.regate.rate_limits)
		with data.regate.limits as _candidate("limits", data.regate.limits)
		with data.regate.redact as _candidate("redact", data.regate.redact)
}

# The candidate's version of a data document, else the enforced one. Without
# policies/regate/shadow/data.json the decision is undefined: the gateway
# records that as a shadow error, and the enforced decision stands.
_candidate(name, enforced) := object.get(data.regate.shadow.candidate, name, enforced)
