"""The OPA sidecar client: one question (the decision), one answer, or fail closed.

Everything that is not a well-formed decision document — OPA down, slow, erroring,
an undefined result, a malformed document — becomes `PolicyUnavailable`, which the
gateway answers as a 503 deny. Each request to OPA has one deadline for the whole
exchange (`timeout_s`), and goes through a circuit breaker (gateway/breaker.py): once
OPA has failed to answer several times in a row, calls are denied at once instead of
each waiting out its own timeout against a dead sidecar.

The client is aiohttp's (gateway/sidecar_http.py says why).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import aiohttp
import structlog

from gateway.breaker import BreakerOpen, CircuitBreaker
from gateway.errors import PolicyUnavailable

log = structlog.get_logger("regate.policy")

DECISION_PATH = "/v1/data/regate/authz/decision"
OUTCOMES = ("allow", "deny", "require_approval")
Outcome = Literal["allow", "deny", "require_approval"]
_JSON = {"Content-Type": "application/json"}
_UNAVAILABLE = "the policy engine could not decide, so the call was denied; retry later"


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reasons: tuple[Reason, ...]
    obligations: Mapping[str, Any] = field(default_factory=dict)
    policy_revision: str = ""

    def as_record(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "obligations": dict(self.obligations),
            "policy_revision": self.policy_revision,
        }


@dataclass(frozen=True)
class PolicyStatus:
    reachable: bool
    bundle_active: bool
    revision: str = ""
    decision_defined: bool = False
    opa_version: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "bundle_active": self.bundle_active,
            "revision": self.revision or None,
            "decision_defined": self.decision_defined,
            "decision_path": DECISION_PATH,
            "opa_version": self.opa_version or None,
        }


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class OpaUnanswered(Exception):
    """OPA gave no HTTP answer: refused, reset, hung up, or past the deadline."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause  # opa_unreachable | opa_timeout


class PolicyClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout_s: float,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._decision_url = f"{self._base_url}{DECISION_PATH}?provenance=true"
        self.breaker = breaker or CircuitBreaker("opa", failure_threshold=5, cooldown_s=5.0)

    async def decide(self, policy_input: Mapping[str, Any]) -> Decision:
        body = json.dumps({"input": policy_input}).encode()
        try:
            answer = await self._exchange("POST", self._decision_url, body)
        except BreakerOpen as exc:
            raise _breaker_open(exc) from exc
        except OpaUnanswered as exc:
            raise _unavailable(exc.cause, exc) from exc
        if answer.status != 200:
            detail = answer.body[:300].decode(errors="replace")
            raise _unavailable("opa_error", f"HTTP {answer.status}: {detail}")
        try:
            document = json.loads(answer.body)
        except ValueError as exc:  # UnicodeDecodeError too
            raise _unavailable("opa_bad_json", exc) from exc
        return parse_decision(document)

    async def healthy(self) -> bool:
        """OPA answers `/health`. While the breaker is open this is False without asking;
        after the cool-down this check is itself the breaker's probe, so a gateway that
        gets no traffic (e.g. out of a load balancer's rotation) still recovers."""
        try:
            answer = await self._exchange("GET", f"{self._base_url}/health")
        except (BreakerOpen, OpaUnanswered):
            return False
        return answer.status == 200

    async def status(self) -> PolicyStatus:
        """For admins: is OPA up with its bundle active, which revision does it serve,
        and is the decision document defined. Never raises: a fault is a status."""
        try:
            health = await self._exchange("GET", f"{self._base_url}/health?bundles=true")
            # Evaluated without input: the default decision, or undefined if it is broken.
            probe = await self._exchange("GET", self._decision_url)
            body = json.loads(probe.body) if probe.status == 200 else {}
        except (BreakerOpen, OpaUnanswered, ValueError) as exc:
            log.warning("policy_status_unavailable", error=f"{type(exc).__name__}: {exc}")
            return PolicyStatus(reachable=False, bundle_active=False)
        provenance = body.get("provenance") if isinstance(body, dict) else None
        return PolicyStatus(
            reachable=True,
            bundle_active=health.status == 200,
            revision=_revision(body) if isinstance(body, dict) else "",
            decision_defined=isinstance(body, dict) and isinstance(body.get("result"), dict),
            opa_version=str(provenance.get("version", "")) if isinstance(provenance, dict) else "",
        )

    async def _exchange(self, method: str, url: str, body: bytes | None = None) -> Answer:
        """One exchange with OPA, bounded by `timeout_s` as a whole, through the breaker.

        Only "OPA did not answer" (refused, reset, timed out) counts against the
        breaker: any HTTP answer proves OPA is alive, and one caller's input that
        makes the policy fail must not shut the gateway for everyone.
        """
        self.breaker.admit()
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._session.request(
                    method, url, data=body, headers=_JSON if body is not None else None
                ) as response:
                    answer = Answer(response.status, await response.read())
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            self.breaker.failed()
            raise OpaUnanswered("opa_timeout", f"no answer within {self._timeout_s} s") from exc
        except aiohttp.ClientError as exc:
            self.breaker.failed()
            raise OpaUnanswered("opa_unreachable", f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        return answer


def parse_decision(body: Any) -> Decision:
    """Turn OPA's response into a `Decision`, or raise `PolicyUnavailable`."""
    if not isinstance(body, dict):
        raise _unavailable("decision_malformed", "response is not a JSON object")
    if "result" not in body:
        # OPA answers 200 without `result` when the document is undefined: a deny.
        raise _unavailable("decision_undefined", "regate.authz.decision is undefined")
    result = body["result"]
    if not isinstance(result, dict):
        raise _unavailable("decision_malformed", "decision is not an object")
    outcome = result.get("outcome")
    if outcome not in OUTCOMES:
        raise _unavailable("decision_malformed", f"outcome {outcome!r} not in {OUTCOMES}")
    raw_reasons = result.get("reasons", [])
    if not isinstance(raw_reasons, list) or not all(
        isinstance(r, dict) and isinstance(r.get("code"), str) and isinstance(r.get("message"), str)
        for r in raw_reasons
    ):
        raise _unavailable("decision_malformed", "reasons must be [{code, message}]")
    obligations = result.get("obligations", {})
    if not isinstance(obligations, dict):
        raise _unavailable("decision_malformed", "obligations must be an object")
    return Decision(
        outcome=cast(Outcome, outcome),
        reasons=tuple(Reason(r["code"], r["message"]) for r in raw_reasons),
        obligations=obligations,
        policy_revision=_revision(body),
    )


def _revision(body: Mapping[str, Any]) -> str:
    bundles = (body.get("provenance") or {}).get("bundles") or {}
    revisions = sorted(
        str(b.get("revision"))
        for b in bundles.values()
        if isinstance(b, dict) and b.get("revision")
    )
    return ",".join(revisions) or "unversioned"


def _breaker_open(exc: BreakerOpen) -> PolicyUnavailable:
    retry_after = max(1, math.ceil(exc.retry_in_s))
    log.warning("policy_unavailable", code="breaker_open", retry_in_s=round(exc.retry_in_s, 3))
    return PolicyUnavailable(
        f"the policy engine is unavailable (it failed {exc.failures} times in a row, so the"
        f" gateway stopped asking it), so the call was denied; the gateway will try it again"
        f" in {retry_after} s: retry after that",
        headers={"Retry-After": str(retry_after)},
        cause="breaker_open",
        retry_after_s=retry_after,
    )


def _unavailable(code: str, detail: object) -> PolicyUnavailable:
    # The detail goes to the log; the caller gets the generic, actionable message.
    log.error("policy_unavailable", code=code, detail=str(detail))
    return PolicyUnavailable(_UNAVAILABLE, cause=code)
