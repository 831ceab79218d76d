"""The decision path's shortcuts (docs/benchmarks.md) give the same answers as the long way.

Each one skips repeated work: the audit hash reuses the body's canonical JSON, a
public or private key is parsed once, a schema is compiled once. (canonical_json's
fast path is compared with rfc8785 in test_canonical.py.) None of them may change a
result or weaken a check.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway import arguments
from gateway.audit import hash_with_body, record_hash
from gateway.errors import InvalidArguments
from regate import crypto
from regate.canonical import canonical_json, sha256_hex

BODIES: list[Any] = [
    {},
    {"outcome": "deny", "stages_ms": {"policy": 1.25, "audit": 0.5}, "status": 403},
    {"text": 'é \u2028 \x01 "quoted"', "\ufb01": [1, None, True, 2.5e-7], "nested": {"z": {}}},
    {"seq": 7, "body": "keys that collide with the record's own names"},
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("seq", [1, 42, 10**12])
def test_audit_hash_assembled_around_the_body_equals_the_whole_canonical_record(
    body: Any, seq: int
) -> None:
    whole = {
        "seq": seq,
        "kind": "decision",
        "decision_id": 'd-"1"',
        "recorded_at": "2026-11-22T12:00:00.000001+00:00",
        "body": body,
        "prev_hash": "ab" * 32,
    }
    expected = sha256_hex(canonical_json(whole))
    args = (seq, "decision", 'd-"1"', "2026-11-22T12:00:00.000001+00:00")
    assert hash_with_body(*args, canonical_json(body), "ab" * 32) == expected
    assert record_hash(*args, body, "ab" * 32) == expected


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "i", "aud": "a", "sub": "s", "iat": now, "exp": now + 60, **extra}


def verify(token: str, key: crypto.Jwk) -> dict[str, Any]:
    return crypto.verify_jwt_with_key(
        token, key, algorithms=["ES256"], audience="a", issuer="i", leeway_s=5
    )


def test_a_public_key_is_parsed_once_and_still_only_verifies_its_own_signatures() -> None:
    private, public = crypto.generate_ec_key("k1")
    other_private, _ = crypto.generate_ec_key("k1")  # same kid, different key
    assert crypto._public_key(public, "ES256") is crypto._public_key(dict(public), "ES256")
    assert verify(crypto.sign_jwt(claims(), private), public)["sub"] == "s"
    forged = crypto.sign_jwt(claims(), other_private)
    with pytest.raises(crypto.CryptoError, match="token rejected"):
        verify(forged, public)
    # The cache is keyed by the key material, not the kid: the other key verifies its own.
    _, other_public = crypto.generate_ec_key("k1")
    assert crypto._public_key(other_public, "ES256") is not crypto._public_key(public, "ES256")


def test_a_signing_key_is_parsed_once_and_each_key_signs_as_itself() -> None:
    private, public = crypto.generate_ec_key("k1")
    other_private, other_public = crypto.generate_ec_key("k1")  # same kid, different key
    assert crypto._signing_key(private, "ES256") is crypto._signing_key(dict(private), "ES256")
    assert crypto._signing_key(other_private, "ES256") is not crypto._signing_key(private, "ES256")
    for _ in range(2):  # the second signature uses the cached key
        assert verify(crypto.sign_jwt(claims(), private), public)["sub"] == "s"
        assert verify(crypto.sign_jwt(claims(), other_private), other_public)["sub"] == "s"
        with pytest.raises(crypto.CryptoError, match="token rejected"):
            verify(crypto.sign_jwt(claims(), other_private), public)


def test_a_schema_is_compiled_once_per_schema_object_and_each_keeps_its_own_rules() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    same_text = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    stricter = {"type": "object", "properties": {"a": {"maximum": 1}}, "required": ["a"]}
    first = arguments._validator_for(schema)
    assert arguments._validator_for(schema) is first
    assert arguments._validator_for(same_text) is first  # equal schemas share the compile
    arguments.validate_arguments(schema, {"a": 5})
    with pytest.raises(InvalidArguments, match="/a"):
        arguments.validate_arguments(stricter, {"a": 5})
    with pytest.raises(InvalidArguments, match="required"):
        arguments.validate_arguments(schema, {})
