"""The dry run's input checks and the policy status when OPA cannot be reached."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import REPO, free_port

from gateway.errors import PolicyUnavailable
from gateway.policy import PolicyClient
from gateway.policy_dry_run import (
    MAX_INPUT_BYTES,
    DryRunUnavailable,
    InputSchema,
    InvalidPolicyInput,
    dry_run,
    parse_input,
)
from gateway.sidecar_http import sidecar_session
from regate.errors import BadRequest
from regate.settings import Address


def unreachable_opa() -> tuple[aiohttp.ClientSession, PolicyClient]:
    # A port nobody listens on: connections are refused at once.
    address = Address(host="127.0.0.1", port=free_port())
    session = sidecar_session(address)
    return session, PolicyClient(session, address.base_url, timeout_s=1.0)


def test_status_of_an_unreachable_opa_is_a_status_not_an_error() -> None:
    async def check() -> dict[str, Any]:
        client, policy = unreachable_opa()
        async with client:
            return (await policy.status()).as_json()

    status = asyncio.run(check())
    assert status["reachable"] is False
    assert status["bundle_active"] is False
    assert status["revision"] is None


def valid_input() -> dict[str, Any]:
    return {
        "input_version": 1,
        "caller": {"sub": "alice", "iss": "https://issuer", "claims": {}, "act": None},
        "target": {
            "agent_id": "calculator",
            "version": "1.0.0",
            "manifest_sha256": "0" * 64,
            "publisher": "publisher",
        },
        "tool": {
            "name": "add",
            "permissions": [],
            "limits": {"timeout_s": 5, "memory_mb": 64, "output_kb": 64, "pids": 8},
        },
        "arguments": {},
        "request": {
            "id": "r",
            "time": "2026-11-22T10:00:00Z",
            "source_ip": "127.0.0.1",
            "source_ip_from": "peer",
            "method": "POST",
            "path": "/v1/invoke/calculator/add",
        },
        "usage": {"calls_last_minute": 0},
    }


def test_a_valid_input_reaches_opa_and_opa_down_is_503() -> None:
    schema = InputSchema.load(REPO / "policies")
    assert schema is not None
    schema.check(valid_input())  # the schema accepts what the gateway sends

    async def attempt() -> None:
        client, policy = unreachable_opa()
        async with client:
            await dry_run(policy, schema, valid_input(), actor="alice")

    with pytest.raises(PolicyUnavailable) as caught:
        asyncio.run(attempt())
    assert caught.value.status == 503


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d.pop("caller"), "/"),
        (lambda d: d["caller"].update(sub=7), "/caller/sub"),
        (lambda d: d.update(input_version=2), "/input_version"),
        (lambda d: d.update(extra=True), "/"),
    ],
)
def test_inputs_off_the_schema_are_422_with_the_path(change: Any, path: str) -> None:
    schema = InputSchema.load(REPO / "policies")
    assert schema is not None
    document = valid_input()
    change(document)
    with pytest.raises(InvalidPolicyInput) as caught:
        schema.check(document)
    assert caught.value.status == 422
    assert caught.value.details["path"] == path


def test_without_a_schema_dry_runs_are_refused(tmp_path: Path) -> None:
    assert InputSchema.load(tmp_path) is None  # no schema/input.json there
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "input.json").write_text("{not json")
    assert InputSchema.load(tmp_path) is None

    async def attempt() -> None:
        client, policy = unreachable_opa()
        async with client:
            await dry_run(policy, None, valid_input(), actor="alice")

    with pytest.raises(DryRunUnavailable, match="could not be read"):
        asyncio.run(attempt())


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", InvalidPolicyInput, "paste a policy input"),
        ("   ", InvalidPolicyInput, "paste a policy input"),
        ("{", BadRequest, "not valid JSON"),
        ('{"a": 1, "a": 2}', BadRequest, "duplicate"),
        ('{"a": NaN}', BadRequest, "finite"),
        (json.dumps({"x": "y" * MAX_INPUT_BYTES}), InvalidPolicyInput, "KiB"),
    ],
)
def test_the_form_text_is_strict_json(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_input(text)
