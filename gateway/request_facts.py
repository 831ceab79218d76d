"""What the policy input says about the HTTP request that carried a call."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request

from gateway.policy_input import RequestFacts
from regate.middleware import request_id


def request_facts(request: Request) -> RequestFacts:
    return RequestFacts(
        id=request_id(request),
        time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        source_ip=request.client.host if request.client else "",
        method=request.method,
        path=request.url.path,
    )
