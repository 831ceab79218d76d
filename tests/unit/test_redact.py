"""Secret redaction of tool results (`sandbox_runner.redact.redact`)."""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

import pytest

from sandbox_runner.redact import redact

MARKER = re.compile(r"\[REDACTED:[0-9a-f]{12}\]")


def expected_marker(secret: str) -> str:
    """Computed here, independently of the module under test."""
    return f"[REDACTED:{hashlib.sha256(secret.encode()).hexdigest()[:12]}]"


# Built by concatenation so no scanner mistakes this file for a leak. Each value is
# exactly the text its pattern matches, so its marker is the hash of the whole value.
PEM_RSA = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n"
    "-----END RSA PRIVATE KEY-----"
)
PEM_OPENSSH = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
ALNUM36 = "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4"

SECRETS: list[Any] = [
    pytest.param(PEM_RSA, id="pem-rsa-private-key"),
    pytest.param(PEM_OPENSSH, id="pem-openssh-private-key"),
    pytest.param(JWT, id="jwt"),
    pytest.param("AKIA" + "IOSFODNN7EXAMPLE", id="aws-akia"),
    pytest.param("ASIA" + "Y34FZKBOKMUTVV7A", id="aws-asia"),
    pytest.param("ghp_" + ALNUM36, id="github-ghp"),
    pytest.param("gho_" + ALNUM36, id="github-gho"),
    pytest.param("github_pat_" + "11ABCDEFG0" + "a1B2c3D4e5_" * 6, id="github-pat"),
    pytest.param("xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOp", id="slack-xoxb"),
    pytest.param("xoxp-" + "123456789012-1234567890123-9876543210", id="slack-xoxp"),
    pytest.param("AIza" + "Sy" + "a1B2c3D4e5" * 3 + "-xY", id="google-aiza"),
    pytest.param("sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc", id="stripe-sk-live"),
    pytest.param("rk_" + "test_" + "51H8a2bCdEfGhIjKlMnOpQr", id="stripe-rk-test"),
    pytest.param("sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4", id="openai-sk"),
    pytest.param("sk-" + "proj-" + "Zx9_Yw8-Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0", id="openai-sk-proj"),
    pytest.param("glpat-" + "xYz12_AbC-34dEf56GhI", id="gitlab-glpat"),
    pytest.param("Bearer " + "0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d", id="bearer"),
    pytest.param("bearer " + "Zm9vYmFyYmF6cXV4cXV1eA==", id="bearer-lowercase-base64"),
]  # fmt: skip


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_alone_is_replaced(secret: str) -> None:
    out = redact(secret)
    assert out.value == expected_marker(secret)
    assert out.count == 1


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_inside_a_larger_string(secret: str) -> None:
    out = redact(f"found {secret} in config.txt; rotate it")
    assert out.value == f"found {expected_marker(secret)} in config.txt; rotate it"
    assert out.count == 1


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_nested_in_lists_and_dicts(secret: str) -> None:
    value = {
        "files": [
            {"path": "app/.env", "lines": ["DEBUG=1", f"KEY={secret}"], "size": 42},
            {"path": "README.md", "lines": ["nothing here"], "size": 7},
        ],
        "matches": [[secret]],
    }
    mark = expected_marker(secret)
    out = redact(value)
    assert out.value == {
        "files": [
            {"path": "app/.env", "lines": ["DEBUG=1", f"KEY={mark}"], "size": 42},
            {"path": "README.md", "lines": ["nothing here"], "size": 7},
        ],
        "matches": [[mark]],
    }
    assert out.count == 2


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_in_a_dict_key(secret: str) -> None:
    out = redact({"by_value": {secret: 1}, "plain": {"k": "v"}})
    assert out.value == {"by_value": {expected_marker(secret): 1}, "plain": {"k": "v"}}
    assert out.count == 1


def test_secret_key_and_secret_value_are_both_counted() -> None:
    key = "AKIA" + "IOSFODNN7EXAMPLE"
    value = "ghp_" + ALNUM36
    out = redact({key: value})
    assert out.value == {expected_marker(key): expected_marker(value)}
    assert out.count == 2


SECRET_FIELDS = [
    "password", "Password", "db_password", "passwd", "passphrase",
    "secret", "client_secret", "token", "access_token", "refresh-token",
    "api_key", "api-key", "apiKey", "APIKEY", "private_key", "privateKey",
    "credential", "credentials", "authorization", "Authorization", "auth",
    "cookie", "Set-Cookie", "session_id", "sessionId", "session-id",
    "access_key", "aws_access_key_id",
]  # fmt: skip


@pytest.mark.parametrize("field", SECRET_FIELDS)
@pytest.mark.parametrize("value", ["hunter2", "x", "1234", "plain words, nothing secret-looking"])
def test_secret_field_value_is_replaced_whatever_it_looks_like(field: str, value: str) -> None:
    out = redact({field: value, "user": "alice"})
    assert out.value == {field: expected_marker(value), "user": "alice"}
    assert out.count == 1


def test_secret_field_nested_in_list_of_dicts() -> None:
    value = {"services": [{"name": "db", "password": "s3cr3t"}, {"name": "cache", "port": 6379}]}
    out = redact(value)
    assert out.value == {
        "services": [
            {"name": "db", "password": expected_marker("s3cr3t")},
            {"name": "cache", "port": 6379},
        ]
    }
    assert out.count == 1


def test_secret_field_holding_a_pattern_secret_is_one_redaction_of_the_whole_value() -> None:
    value = f"Bearer {'0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d'}"
    out = redact({"authorization": value})
    assert out.value == {"authorization": expected_marker(value)}
    assert out.count == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"password": ""}, {"password": ""}, id="empty-string"),
        pytest.param({"token": None}, {"token": None}, id="null"),
        pytest.param({"max_tokens": 100}, {"max_tokens": 100}, id="int"),
        pytest.param({"token_count": 2.5}, {"token_count": 2.5}, id="float"),
        pytest.param({"has_password": True}, {"has_password": True}, id="bool"),
        pytest.param({"secrets": ["a", "b"]}, {"secrets": ["a", "b"]}, id="list-walked-not-replaced"),
        pytest.param({"credentials": {"user": "alice"}}, {"credentials": {"user": "alice"}}, id="dict-walked-not-replaced"),
    ],
)  # fmt: skip
def test_secret_field_with_a_non_string_or_empty_value_is_left_alone(
    value: dict[str, Any], expected: dict[str, Any]
) -> None:
    out = redact(value)
    assert out.value == expected
    assert out.count == 0


def test_secret_field_container_is_walked_for_pattern_secrets() -> None:
    key = "AKIA" + "IOSFODNN7EXAMPLE"
    out = redact({"credentials": {"user": "alice", "note": f"id {key}"}})
    assert out.value == {"credentials": {"user": "alice", "note": f"id {expected_marker(key)}"}}
    assert out.count == 1


def test_marker_shape() -> None:
    out = redact("ghp_" + ALNUM36)
    assert isinstance(out.value, str)
    assert MARKER.fullmatch(out.value)


def test_same_secret_gives_the_same_marker_everywhere() -> None:
    secret = "ghp_" + ALNUM36
    first = redact(f"{secret} and again {secret}")
    second = redact({"elsewhere": [secret]})
    mark = expected_marker(secret)
    assert first.value == f"{mark} and again {mark}"
    assert first.count == 2
    assert second.value == {"elsewhere": [mark]}


def test_same_value_in_a_secret_field_and_by_shape_gives_the_same_marker() -> None:
    secret = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4"
    out = redact({"api_key": secret, "log": secret})
    assert out.value["api_key"] == out.value["log"] == expected_marker(secret)
    assert out.count == 2


def test_different_secrets_give_different_markers() -> None:
    a, b = "ghp_" + ALNUM36, "ghp_" + ALNUM36[::-1]
    out = redact([a, b])
    assert out.value == [expected_marker(a), expected_marker(b)]
    assert out.value[0] != out.value[1]


def test_count_is_exact_over_a_mixed_document() -> None:
    aws = "AKIA" + "IOSFODNN7EXAMPLE"
    value = {
        "text": f"{JWT} then {aws}",  # 2
        "items": [PEM_RSA, "fine", 7, {"password": "pw"}],  # 2
        aws: {"token": "t"},  # key 1, field 1
        "max_tokens": 100,
        "empty": "",
    }
    out = redact(value)
    assert out.count == 6
    assert out.value == {
        "text": f"{expected_marker(JWT)} then {expected_marker(aws)}",
        "items": [expected_marker(PEM_RSA), "fine", 7, {"password": expected_marker("pw")}],
        expected_marker(aws): {"token": expected_marker("t")},
        "max_tokens": 100,
        "empty": "",
    }


NOT_SECRETS: list[Any] = [
    pytest.param("hello world, the quick brown fox", id="words"),
    pytest.param("deadbeef", id="short-hex"),
    pytest.param("0123456789abcdef0123456789abcdef", id="md5-hex"),
    pytest.param("123e4567-e89b-12d3-a456-426614174000", id="uuid"),
    pytest.param("https://example.com/a/b?q=1&page=2", id="url"),
    pytest.param("sk-short", id="sk-too-short"),
    pytest.param("task-" + "a1B2c3D4e5f6G7h8I9j0K1l2", id="sk-inside-a-word"),
    pytest.param("AKIA1234", id="akia-too-short"),
    pytest.param("ghp_short", id="ghp-too-short"),
    pytest.param("Bearer abc", id="bearer-short"),
    pytest.param("eyJhbGciOi.eyJ", id="jwt-fragment"),
    pytest.param("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZI\n-----END PUBLIC KEY-----", id="pem-public-key"),
    pytest.param("", id="empty-string"),
    pytest.param(0, id="zero"),
    pytest.param(123456789012345678901234567890, id="big-int"),
    pytest.param(3.14, id="float"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(None, id="null"),
    pytest.param([], id="empty-list"),
    pytest.param({}, id="empty-dict"),
    pytest.param({"max_tokens": 100, "temperature": 0.2, "model": "gpt-4o"}, id="llm-params"),
    pytest.param({"user": "alice", "path": "/tmp/x", "count": [1, 2, 3]}, id="plain-dict"),
]  # fmt: skip


@pytest.mark.parametrize("value", NOT_SECRETS)
def test_non_secrets_are_left_untouched(value: Any) -> None:
    out = redact(value)
    assert out.value == value
    assert type(out.value) is type(value)
    assert out.count == 0


def test_input_is_not_mutated() -> None:
    value = {
        "password": "pw",
        "list": ["ghp_" + ALNUM36, {"token": "t"}],
        "AKIA" + "IOSFODNN7EXAMPLE": [1, 2],
    }
    before = copy.deepcopy(value)
    out = redact(value)
    assert value == before
    assert out.value is not value
    assert out.value["list"] is not value["list"]
    assert out.value != before


# --- gaps found and fixed (regressions) -------------------------------------


def test_google_key_ending_in_a_dash_is_replaced() -> None:
    secret = "AIza" + "Sy" + "a1B2c3D4e5" * 3 + "xY-"
    assert redact(f"key {secret} end").value == f"key {expected_marker(secret)} end"


def test_gitlab_token_ending_in_a_dash_is_replaced() -> None:
    secret = "glpat-" + "xYz12_AbC-34dEf56Gh-"
    assert redact(f"{secret} end").value == f"{expected_marker(secret)} end"


def test_secret_field_holding_a_lone_surrogate_is_replaced() -> None:
    out = redact({"password": "\ud800"})
    assert MARKER.fullmatch(out.value["password"])
    assert out.count == 1


@pytest.mark.parametrize("field", ["author", "passage"])
def test_ordinary_fields_that_contain_a_secret_word_are_left_alone(field: str) -> None:
    assert redact({field: "Jane Doe"}).value == {field: "Jane Doe"}
