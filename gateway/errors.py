"""The gateway's domain errors, each with its HTTP status and stable code (DESIGN §3)."""

from __future__ import annotations

from typing import Any

from regate.errors import NotFound, RegateError


class InvalidToken(RegateError):
    status = 401
    code = "invalid_token"

    def __init__(self, message: str, **details: Any) -> None:
        # RFC 6750 §3: say why in the challenge, without echoing the token.
        challenge = (
            f'Bearer realm="regate", error="invalid_token", error_description="{_quote(message)}"'
        )
        super().__init__(message, headers={"WWW-Authenticate": challenge}, **details)


class MissingToken(InvalidToken):
    code = "missing_token"

    def __init__(self, message: str) -> None:
        RegateError.__init__(self, message, headers={"WWW-Authenticate": 'Bearer realm="regate"'})


class AgentNotFound(NotFound):
    code = "agent_not_found"


class ToolNotFound(NotFound):
    code = "tool_not_found"


class ToolFlagged(NotFound):
    """The tool's description hides something (regate/descriptions.py): not offered, not run."""

    code = "tool_flagged"


class InvalidArguments(RegateError):
    status = 422
    code = "invalid_arguments"


class PolicyDenied(RegateError):
    status = 403
    code = "policy_denied"


class RateLimited(RegateError):
    """Policy said the caller is over its rate limit (every reason `rate_limited`)."""

    status = 429
    code = "rate_limited"


class PolicyUnavailable(RegateError):
    """OPA could not give a usable decision: down, slow, erroring or undefined. Deny."""

    status = 503
    code = "policy_unavailable"


class AuditUnavailable(RegateError):
    """The decision could not be made durable: nothing proceeds unlogged."""

    status = 503
    code = "audit_unavailable"


class RunnerUnavailable(RegateError):
    status = 502
    code = "runner_unavailable"


def _quote(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')[:200]


class AgentNotApproved(NotFound):
    """The agent's manifest is valid but not approved: pending, quarantined or revoked."""

    code = "agent_not_approved"


# --- the admin API ---------------------------------------------------------


class AdminTokenInvalid(RegateError):
    status = 401
    code = "invalid_token"
    challenge = 'Bearer realm="regate-admin", error="invalid_token"'

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": self.challenge})


class AdminTokenMissing(AdminTokenInvalid):
    code = "missing_token"
    challenge = 'Bearer realm="regate-admin"'


class UnknownAgent(NotFound):
    code = "agent_not_found"


class NoVerifiedManifest(RegateError):
    """Approving needs a manifest that verifies now; this agent has none."""

    status = 409
    code = "no_verified_manifest"


class ManifestChanged(RegateError):
    """The manifest is not the one the admin looked at (`manifest_sha256` differs)."""

    status = 409
    code = "manifest_changed"


class PermissionsNotRequested(RegateError):
    """Approved permissions must be a subset of what each tool requested."""

    status = 422
    code = "permissions_not_requested"


# --- approvals of calls (gateway/call_approvals.py) --------------------------


class CallParked(RegateError):
    """Not a failure: policy requires an admin's approval, and the call now waits for one.

    Answered 202 by `/v1/invoke` (docs/api.md) and -32004 by MCP, with the approval id.
    """

    status = 202
    code = "approval_pending"


class TooManyPendingApprovals(RegateError):
    status = 429
    code = "too_many_pending_approvals"


class CallApprovalNotFound(NotFound):
    """No such approval, or it belongs to another caller (the same answer: no leak)."""

    code = "approval_not_found"


class CallApprovalMismatch(RegateError):
    """The replayed call is not the call that was approved (caller, target, tool, arguments)."""

    status = 403
    code = "approval_mismatch"


class CallApprovalDenied(RegateError):
    status = 403
    code = "approval_denied"


class CallApprovalExpired(RegateError):
    status = 403
    code = "approval_expired"


class CallApprovalUndecided(RegateError):
    """Replayed before an admin decided: poll `GET /v1/approvals/{id}` first."""

    status = 409
    code = "approval_pending"


class CallApprovalUsed(RegateError):
    """An approved call runs once; this approval already ran its call."""

    status = 409
    code = "approval_used"


class CallApprovalDecided(RegateError):
    """An admin tried to approve or deny an approval that is no longer pending."""

    status = 409
    code = "approval_not_pending"
