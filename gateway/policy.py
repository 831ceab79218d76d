"""The OPA sidecar client: one question (the decision), one answer, or fail closed.

Everything that is not a well-formed decision document — OPA down, slow, erroring,
an undefined result, a malformed document — becomes `PolicyUnavailable`, which the
gateway answers as a 503 deny. Each request to OPA has one deadline for the whole
exchange (`timeout_s`), and goes through a circuit breaker (gateway/breaker.py): once
OPA has failed to answer several times in a row, calls are denied at once instead of
each waiting out its own timeout against a dead sidecar.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx
import structlog

from gateway.breaker import BreakerOpen, CircuitBreaker
from gateway.errors import PolicyUnavailable

log = structlog.get_logger("regate.policy")

DECISION_PATH = "/v1/data/regate/authz/decision"
OUTCOMES = ("allow", "deny", "require_approval")
Outcome = Literal["allow", "deny", "require_approval"]
_JSON = {"content-type": "application/json"}
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


class PolicyClient:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        timeout_s: float,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        # Built once: merging the base URL and the query on every call was a
        # measurable share of the gateway's CPU per decision (docs/benchmarks.md).
        self._decision_url = client.base_url.join(DECISION_PATH).copy_with(
            params={"provenance": "true"}
        )
        self._extensions = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self.breaker = breaker or CircuitBreaker("opa", failure_threshold=5, cooldown_s=5.0)

    async def decide(self, policy_input: Mapping[str, Any]) -> Decision:
        try:
            request = httpx.Request(
                "POST",
                self._decision_url,
                content=json.dumps({"input": policy_input}).encode(),
                headers=_JSON,
                extensions=self._extensions,
            )
            response = await self._exchange(request)
        except BreakerOpen as exc:
            raise _breaker_open(exc) from exc
        except httpx.HTTPError as exc:
            raise _unavailable(
                "opa_timeout" if _timed_out(exc) else "opa_unreachable", exc
            ) from exc
        if response.status_code != 200:
            raise _unavailable("opa_error", f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise _unavailable("opa_bad_json", exc) from exc
        return parse_decision(body)

    async def healthy(self) -> bool:
        """OPA answers `/health`. While the breaker is open this is False without asking;
        after the cool-down this check is itself the breaker's probe, so a gateway that
        gets no traffic (e.g. out of a load balancer's rotation) still recovers."""
        try:
            response = await self._send("GET", "/health")
        except (BreakerOpen, httpx.HTTPError):
            return False
        return response.status_code == 200

    async def status(self) -> PolicyStatus:
        """For admins: is OPA up with its bundle active, which revision does it serve,
        and is the decision document defined. Never raises: a fault is a status."""
        try:
            health = await self._send("GET", "/health", params={"bundles": "true"})
            # Evaluated without input: the default decision, or undefined if it is broken.
            probe = await self._send("GET", DECISION_PATH, params={"provenance": "true"})
            body = probe.json() if probe.status_code == 200 else {}
        except (BreakerOpen, httpx.HTTPError, ValueError) as exc:
            log.warning("policy_status_unavailable", error=f"{type(exc).__name__}: {exc}")
            return PolicyStatus(reachable=False, bundle_active=False)
        provenance = body.get("provenance") if isinstance(body, dict) else None
        return PolicyStatus(
            reachable=True,
            bundle_active=health.status_code == 200,
            revision=_revision(body) if isinstance(body, dict) else "",
            decision_defined=isinstance(body, dict) and isinstance(body.get("result"), dict),
            opa_version=str(provenance.get("version", "")) if isinstance(provenance, dict) else "",
        )

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        timeout = httpx.Timeout(self._timeout_s)
        return await self._exchange(
            self._client.build_request(method, path, timeout=timeout, **kwargs)
        )

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        """One exchange with OPA, bounded by `timeout_s` as a whole, through the breaker.

        Only "OPA did not answer" (refused, reset, timed out) counts against the
        breaker: any HTTP answer proves OPA is alive, and one caller's input that
        makes the policy fail must not shut the gateway for everyone.
        """
        self.breaker.admit()
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.send(request)
        except TimeoutError as exc:
            self.breaker.failed()
            raise httpx.TimeoutException(f"no answer within {self._timeout_s} s") from exc
        except httpx.TransportError:
            self.breaker.failed()
            raise
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        return response


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


def _timed_out(exc: httpx.HTTPError) -> bool:
    if not isinstance(exc, httpx.TimeoutException):
        return False
    # httpx_aiohttp maps every aiohttp connection error, a refused connection too, to
    # ConnectTimeout: of aiohttp's errors, only its timeouts are timeouts.
    cause = exc.__cause__
    return not type(cause).__module__.startswith("aiohttp") or isinstance(cause, TimeoutError)


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
