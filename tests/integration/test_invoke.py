"""POST /v1/invoke end to end: real gateway, real OPA, real runner with real bwrap."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import jsonschema
import pytest
from conftest import REPO, RunningStack, stack_in_mode

from regate import crypto

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["cold", "pooled"])
def stack(request: pytest.FixtureRequest, stack: RunningStack) -> RunningStack:
    """Each test here runs twice: sandboxes started per call, and taken from a pool."""
    return stack_in_mode(request, stack)


def only_decision(stack: RunningStack, decision_id: str) -> dict[str, Any]:
    """The one decision record for `decision_id` (and fail if there are more or none)."""
    rows = [r for r in stack.audit_rows(decision_id) if r["kind"] == "decision"]
    assert len(rows) == 1, rows
    return rows[0]


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return dict(error)


def test_allowed_call_returns_the_tools_result(stack: RunningStack) -> None:
    response = stack.invoke("calculator", "add", {"a": 2, "b": 40})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["result"] == {"sum": 42}
    assert body["metrics"]["sandbox"] == "bwrap"
    rows = stack.audit_rows(body["decision_id"])
    assert [r["kind"] for r in rows] == ["decision", "receipt"]
    decision, receipt = rows
    assert decision["outcome"] == "allow"
    assert decision["policy"]["reasons"][0]["code"] == "granted"
    assert decision["policy"]["policy_revision"]  # the bundle revision OPA reports
    assert decision["input"]["caller"]["sub"] == "test-client"
    # The input the gateway sent matches the schema policies are type-checked against.
    schema = json.loads((REPO / "policies" / "schema" / "input.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(decision["input"])
    assert receipt["ok"] is True
    assert receipt["output_sha256"]


def test_denied_call_is_403_with_policy_reasons(stack: RunningStack) -> None:
    before = stack.tool_counts("ops.shell")
    response = stack.invoke("ops", "shell", {"command": "id"})

    error = assert_envelope(response, 403, "policy_denied")
    assert error["reasons"][0]["code"] == "no_grant"
    assert "test-client" in error["reasons"][0]["message"]
    record = only_decision(stack, error["decision_id"])
    assert record["outcome"] == "deny"
    assert record["policy"]["outcome"] == "deny"
    assert stack.tool_counts("ops.shell") == before  # nothing ran


def test_schema_failure_is_422_with_the_failing_path(stack: RunningStack) -> None:
    response = stack.invoke("calculator", "add", {"a": "two", "b": 2})

    error = assert_envelope(response, 422, "invalid_arguments")
    assert error["path"] == "/a"
    assert only_decision(stack, error["decision_id"])["code"] == "invalid_arguments"


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'issuer'})}.{part(claims)}."


def _bad_tokens(stack: RunningStack) -> dict[str, str | None]:
    now = int(time.time())
    good = crypto.unverified_claims(stack.token())
    other_key, _ = crypto.generate_ec_key("issuer")
    return {
        "absent": None,
        "expired": stack.token(ttl_s=-120),
        "wrong_aud": crypto.sign_jwt({**good, "aud": "someone-else"}, _issuer_key(stack)),
        "alg_none": _unsigned({**good, "exp": now + 60}),
        "forged_signature": crypto.sign_jwt(good, other_key),
        "untrusted_issuer": crypto.sign_jwt({**good, "iss": "https://evil"}, _issuer_key(stack)),
        "garbage": "not-a-jwt",
    }


def _issuer_key(stack: RunningStack) -> crypto.Jwk:
    path = stack.settings.issuers[0].jwks_file.with_name("issuer.private.jwk")
    return crypto.load_private_key(path)


@pytest.mark.parametrize(
    "case",
    [
        "absent",
        "expired",
        "wrong_aud",
        "alg_none",
        "forged_signature",
        "untrusted_issuer",
        "garbage",
    ],
)
def test_bad_token_is_401_and_audited(stack: RunningStack, case: str) -> None:
    token = _bad_tokens(stack)[case]
    response = stack.invoke("calculator", "add", {"a": 1, "b": 1}, token=token)

    code = "missing_token" if case == "absent" else "invalid_token"
    error = assert_envelope(response, 401, code)
    assert response.headers["www-authenticate"].startswith("Bearer")
    record = only_decision(stack, error["decision_id"])
    assert record["status"] == 401
    assert record["caller"] is None
    if token:
        assert token not in json.dumps(record)  # tokens never reach the log


@pytest.mark.parametrize("agent", ["tampered", "foreign"])
def test_tampered_or_wrongly_signed_manifest_is_not_callable(
    stack: RunningStack, agent: str
) -> None:
    response = stack.invoke(agent, "add", {"a": 1, "b": 1})

    error = assert_envelope(response, 404, "agent_not_found")
    assert only_decision(stack, error["decision_id"])["status"] == 404
    log = (stack.root / "logs" / "gateway.log").read_text()
    refused = [json.loads(line) for line in log.splitlines() if "manifest_refused" in line]
    assert any(r["file"].endswith(f"{agent}.jws") for r in refused)


def test_unknown_tool_is_404(stack: RunningStack) -> None:
    error = assert_envelope(stack.invoke("calculator", "divide", {}), 404, "tool_not_found")
    assert "add" in error["message"]  # says what the agent does offer


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "bad_request"),
        (b'{"arguments": [1]}', {"content-type": "application/json"}, 400, "bad_request"),
        (b'{"arguments": {"a": NaN, "b": 1}}', {"content-type": "application/json"}, 400, "bad_request"),
        (b'{"arguments": {}, "arguments": {}}', {"content-type": "application/json"}, 400, "bad_request"),
        (b'{"arguments": {}}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"arguments": {"a": "' + b"x" * 5000 + b'"}}', {"content-type": "application/json"}, 413, "payload_too_large"),
    ],
    ids=["malformed", "not-object", "nan", "duplicate-key", "content-type", "too-large"],
)  # fmt: skip
def test_bad_bodies_are_refused_and_audited(
    stack: RunningStack, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    with stack.client() as client:
        response = client.post(
            "/v1/invoke/calculator/add",
            content=body,
            headers={**headers, "Authorization": f"Bearer {stack.token()}"},
        )
    error = assert_envelope(response, status, code)
    assert only_decision(stack, error["decision_id"])["status"] == status


def test_tool_timeout_kills_the_tool_and_reports_it(stack: RunningStack) -> None:
    started = time.monotonic()
    response = stack.invoke("sleepy", "nap", {"seconds": 30})
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["type"] == "timeout"
    assert elapsed < 10  # the 1 s limit, not the 30 s nap
    receipt = stack.audit_rows(body["decision_id"])[-1]
    assert receipt["kind"] == "receipt"
    assert receipt["error"]["type"] == "timeout"


def test_output_over_the_cap_is_an_output_limit_error(stack: RunningStack) -> None:
    body = stack.invoke("sleepy", "flood", {}).json()
    assert body["ok"] is False
    assert body["error"]["type"] == "output_limit"


def test_healthz_and_readyz(stack: RunningStack) -> None:
    with stack.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"opa": True, "runner": True, "audit": True}
    runner = ready.json()["runner"]
    assert runner["sandbox"]["backend"] == "bwrap"
    assert runner["tools"]["ready"] >= 3


def test_unknown_route_uses_the_error_envelope(stack: RunningStack) -> None:
    with stack.client() as client:
        assert_envelope(client.get("/v1/nothing"), 404, "not_found")
        assert_envelope(client.get("/v1/invoke/calculator/add"), 405, "method_not_allowed")


def test_audit_verify_passes_then_fails_after_an_edit(stack: RunningStack) -> None:
    # Make sure there is something to verify, then copy the store so the
    # session's own log stays intact for the other tests.
    stack.invoke("calculator", "add", {"a": 1, "b": 2})
    copy = stack.root / "audit-copy.sqlite3"
    import sqlite3

    src = sqlite3.connect(stack.settings.gateway.audit_db)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *[sys.executable, "-m", "regate", "audit", "verify", "--db", str(copy)],
                *["--jwks", str(stack.settings.gateway.gateway_jwks)],
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK:")

    # The store refuses edits through SQL; an attacker with the file drops the trigger.
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        dst.execute("UPDATE audit_log SET body = '{}' WHERE seq = 2")
    dst.execute("DROP TRIGGER audit_log_no_update")
    row = dst.execute("SELECT body FROM audit_log WHERE seq = 2").fetchone()
    edited = json.loads(row[0])
    edited["outcome"] = "allow" if edited.get("outcome") != "allow" else "deny"
    dst.execute("UPDATE audit_log SET body = ? WHERE seq = 2", (json.dumps(edited),))
    dst.commit()
    dst.close()

    bad = verify()
    assert bad.returncode == 1
    assert "record 2" in bad.stdout
