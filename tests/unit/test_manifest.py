"""Signed agent manifests (`regate.manifest`) and the registry built from them (`gateway.agents`)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.agents import AgentRegistry
from gateway.errors import AgentNotFound, ToolNotFound
from regate import crypto
from regate.canonical import canonical_json, sha256_hex
from regate.manifest import (
    DEFAULT_LIMITS,
    MANIFEST_TYP,
    ManifestError,
    read_unverified,
    sign_manifest,
    verify_manifest,
)
from regate.manifest_dir import MAX_MANIFEST_BYTES, load_manifest_dir

Document = dict[str, Any]


def calc_document() -> Document:
    return {
        "agent_id": "calc",
        "version": "1.0.0",
        "description": "Arithmetic.",
        "tools": [
            {
                "name": "add",
                "description": "Add two numbers.",
                "input_schema": {
                    "type": "object",
                    "required": ["a", "b"],
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                },
                "entrypoint": ["python3", "add.py"],
                "limits": {"timeout_s": 2, "pids": 4},
                "permissions": ["net:none", "fs:read"],
            },
            {
                "name": "stats",
                "description": "Mean of numbers.",
                "input_schema": {"type": "object"},
                "entrypoint": ["python3", "stats.py"],
            },
        ],
    }


@dataclass(frozen=True)
class Publisher:
    key: crypto.Jwk
    trusted: crypto.KeySet


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    private, public = crypto.generate_ec_key("publisher-1")
    jwks = tmp_path / "publishers.jwks.json"
    crypto.write_jwks(jwks, [public])
    return Publisher(private, crypto.load_jwks(jwks))


def b64url_json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


# --- round trip ------------------------------------------------------------


def test_round_trip(publisher: Publisher) -> None:
    document = calc_document()
    manifest = verify_manifest(sign_manifest(document, publisher.key), publisher.trusted)

    assert (manifest.agent_id, manifest.version) == ("calc", "1.0.0")
    assert manifest.publisher == "publisher-1"
    assert manifest.sha256 == sha256_hex(canonical_json(document))
    assert manifest.document == document
    assert sorted(manifest.tools) == ["add", "stats"]

    add, stats = manifest.tools["add"], manifest.tools["stats"]
    assert add.entrypoint == ("python3", "add.py")
    assert add.permissions == ("net:none", "fs:read")
    assert add.limits == {**DEFAULT_LIMITS, "timeout_s": 2, "pids": 4}
    assert stats.limits == DEFAULT_LIMITS
    assert stats.permissions == ("net:none",)


def test_surrounding_whitespace_is_ignored(publisher: Publisher) -> None:
    token = f"\n {sign_manifest(calc_document(), publisher.key)}\n"
    assert verify_manifest(token, publisher.trusted).agent_id == "calc"


# --- signature, header and payload form -------------------------------------


def tampered(p: Publisher) -> str:
    header, _, signature = sign_manifest(calc_document(), p.key).split(".")
    document = calc_document()
    document["tools"][0]["entrypoint"] = ["sh", "-c", "id"]
    return f"{header}.{b64url_json(document)}.{signature}"


def untrusted_key_same_kid(p: Publisher) -> str:
    impostor, _ = crypto.generate_ec_key("publisher-1")
    return sign_manifest(calc_document(), impostor)


def unknown_kid(p: Publisher) -> str:
    return sign_manifest(calc_document(), crypto.generate_ec_key("someone")[0])


def raw_signed(payload: bytes, typ: str = MANIFEST_TYP) -> Callable[[Publisher], str]:
    """Sign arbitrary bytes with the trusted key, skipping sign_manifest's checks."""
    return lambda p: crypto.sign_jws(payload, p.key, typ=typ)


CANONICAL = canonical_json(calc_document())
SPACED = json.dumps(calc_document(), indent=1).encode()
DUPLICATE_KEY = b'{"agent_id":"evil",' + CANONICAL[1:]  # JSON parsers keep the last value

REFUSED: list[Any] = [
    pytest.param(tampered, "signature check failed", id="tampered-payload"),
    pytest.param(untrusted_key_same_kid, "signature check failed", id="untrusted-key-same-kid"),
    pytest.param(unknown_kid, "'someone' is not in the trusted key set", id="unknown-kid"),
    pytest.param(raw_signed(CANONICAL, typ="JWT"), "JWS type is 'JWT'", id="wrong-typ"),
    pytest.param(raw_signed(SPACED), "not RFC 8785 canonical JSON", id="non-canonical-whitespace"),
    pytest.param(raw_signed(DUPLICATE_KEY), "not RFC 8785 canonical JSON", id="duplicate-key"),
    pytest.param(raw_signed(b"calc 1.0.0"), "signed payload is not JSON", id="payload-not-json"),
    pytest.param(lambda p: "not.a-manifest", "signature check failed", id="not-a-jws"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "fragment"), REFUSED)
def test_refused(publisher: Publisher, build: Callable[[Publisher], str], fragment: str) -> None:
    with pytest.raises(ManifestError) as caught:
        verify_manifest(build(publisher), publisher.trusted)
    assert fragment in str(caught.value)


# --- expiry -----------------------------------------------------------------

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def signed_with(publisher: Publisher, **fields: Any) -> str:
    """Canonical payload signed by the trusted key, bypassing sign_manifest's shape check."""
    return crypto.sign_jws(
        canonical_json({**calc_document(), **fields}), publisher.key, MANIFEST_TYP
    )


@pytest.mark.parametrize(
    ("expires", "fragment"),
    [
        pytest.param("2030-06-01T11:59:59Z", "manifest expired at", id="expired"),
        pytest.param("2030-06-01T12:00:00+00:00", "manifest expired at", id="expires-now"),
        pytest.param("2030-06-01T14:00:00+02:00", "manifest expired at", id="expired-other-zone"),
        pytest.param("2031-01-01T00:00:00", "needs a time zone", id="no-time-zone"),
        pytest.param("next tuesday", "is not an RFC 3339 time", id="not-a-time"),
    ],
)
def test_expiry_refused(publisher: Publisher, expires: str, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        verify_manifest(signed_with(publisher, expires=expires), publisher.trusted, now=NOW)


def test_not_yet_expired_is_accepted(publisher: Publisher) -> None:
    token = sign_manifest({**calc_document(), "expires": "2030-06-01T12:00:01Z"}, publisher.key)
    assert verify_manifest(token, publisher.trusted, now=NOW).agent_id == "calc"


# --- shape --------------------------------------------------------------------


def changed(edit: Callable[[Document], None]) -> Document:
    document = copy.deepcopy(calc_document())
    edit(document)
    return document


SHAPE_ERRORS: list[Any] = [
    pytest.param(changed(lambda d: d["tools"][0].pop("entrypoint")), "tools/0", "'entrypoint' is a required property", id="missing-entrypoint"),
    pytest.param(changed(lambda d: d["tools"][1].update(entrypoint=[])), "tools/1/entrypoint", "", id="empty-entrypoint"),
    pytest.param(changed(lambda d: d["tools"][0].update(name="Add Numbers")), "tools/0/name", "does not match", id="bad-tool-name"),
    pytest.param(changed(lambda d: d["tools"][0].update(name="../add")), "tools/0/name", "does not match", id="path-tool-name"),
    pytest.param(changed(lambda d: d.update(agent_id="Calc!")), "agent_id", "does not match", id="bad-agent-id"),
    pytest.param(changed(lambda d: d["tools"][0].update(input_schema={"type": 5})), "input_schema", "'add' input_schema is not a valid JSON Schema", id="invalid-input-schema"),
    pytest.param(changed(lambda d: d.update(owner="mallory")), "(top level)", "'owner' was unexpected", id="unknown-top-level-field"),
    pytest.param(changed(lambda d: d["tools"][0].update(run_as="root")), "tools/0", "'run_as' was unexpected", id="unknown-tool-field"),
    pytest.param(changed(lambda d: d["tools"][0]["limits"].update(memory_mb=1 << 20)), "tools/0/limits/memory_mb", "", id="limit-too-high"),
    pytest.param(changed(lambda d: d.update(tools=[])), "tools", "", id="no-tools"),
    pytest.param(changed(lambda d: d.pop("version")), "(top level)", "'version' is a required property", id="missing-version"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "field", "fragment"), SHAPE_ERRORS)
def test_verify_refuses_bad_shape(
    publisher: Publisher, document: Document, field: str, fragment: str
) -> None:
    # Signed by the trusted key: the shape check is what stands between it and use.
    token = crypto.sign_jws(canonical_json(document), publisher.key, MANIFEST_TYP)
    with pytest.raises(ManifestError) as caught:
        verify_manifest(token, publisher.trusted)
    assert field in str(caught.value)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(("document", "field", "fragment"), SHAPE_ERRORS)
def test_sign_refuses_bad_shape(
    publisher: Publisher, document: Document, field: str, fragment: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        sign_manifest(document, publisher.key)
    assert field in str(caught.value)
    assert fragment in str(caught.value)


def test_duplicate_tool_names_are_refused_at_sign_and_verify(publisher: Publisher) -> None:
    document = changed(lambda d: d["tools"][1].update(name="add"))
    with pytest.raises(ManifestError, match="tool names must be unique"):
        sign_manifest(document, publisher.key)
    token = crypto.sign_jws(canonical_json(document), publisher.key, MANIFEST_TYP)
    with pytest.raises(ManifestError, match="tool names must be unique"):
        verify_manifest(token, publisher.trusted)


# --- the registry ---------------------------------------------------------------


def write_manifest(directory: Path, name: str, token: str) -> None:
    (directory / name).write_text(token + "\n")


@pytest.fixture
def registry(tmp_path: Path, publisher: Publisher) -> AgentRegistry:
    directory = tmp_path / "manifests"
    directory.mkdir()
    good = sign_manifest(calc_document(), publisher.key)
    write_manifest(directory, "calc.jws", good)
    # The same, validly signed manifest served under another agent's name.
    write_manifest(directory, "other.jws", good)
    write_manifest(directory, "forged.jws", untrusted_key_same_kid(publisher))
    (directory / "huge.jws").write_text("a" * (MAX_MANIFEST_BYTES + 1))
    (directory / "notes.txt").write_text(good)  # not a *.jws file: never read
    agents, refused = load_manifest_dir(directory, publisher.trusted)
    # Every verified manifest callable, as if approved (tests/unit/test_lifecycle.py
    # covers approval).
    return AgentRegistry(agents=agents, rejected=refused)


def test_load_agents_keeps_good_manifests(registry: AgentRegistry) -> None:
    assert sorted(registry.agents) == ["calc"]
    assert registry.agents["calc"].publisher == "publisher-1"


@pytest.mark.parametrize(
    ("file", "fragment"),
    [
        pytest.param("other.jws", "manifest is for agent 'calc' but is stored as 'other.jws'", id="bound-to-file-name"),
        pytest.param("forged.jws", "signature check failed", id="forged"),
        pytest.param("huge.jws", f"larger than {MAX_MANIFEST_BYTES} bytes", id="oversized"),
    ],
)  # fmt: skip
def test_load_agents_records_refusals(registry: AgentRegistry, file: str, fragment: str) -> None:
    assert sorted(registry.rejected) == ["forged.jws", "huge.jws", "other.jws"]
    assert fragment in registry.rejected[file]


def test_resolve(registry: AgentRegistry) -> None:
    agent, tool = registry.resolve("calc", "stats")
    assert (agent.agent_id, tool.name) == ("calc", "stats")


def test_resolve_unknown_agent(registry: AgentRegistry) -> None:
    # "other" was refused, so it is as absent as an agent that never existed.
    for name in ("other", "nobody"):
        with pytest.raises(AgentNotFound, match=f"no callable agent '{name}'") as caught:
            registry.resolve(name, "add")
        assert caught.value.details == {"agent_id": name}
        assert caught.value.status == 404


def test_resolve_unknown_tool_lists_offered_tools(registry: AgentRegistry) -> None:
    with pytest.raises(ToolNotFound) as caught:
        registry.resolve("calc", "shell")
    assert "agent 'calc' has no tool 'shell'; it offers ['add', 'stats']" in caught.value.message
    assert caught.value.details == {"agent_id": "calc", "tool": "shell"}


# --- references in input schemas ----------------------------------------------------


def with_schema(schema: Any) -> Document:
    document = calc_document()
    document["tools"][1]["input_schema"] = schema
    return document


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"$ref": "http://127.0.0.1:9/x.json"}, id="remote-at-the-top"),
        pytest.param({"type": "object", "properties": {"a": {"$ref": "https://example.com/s"}}}, id="remote-in-a-property"),
        pytest.param({"$defs": {"x": {"$ref": "file:///etc/passwd"}}}, id="file-url"),
        pytest.param({"allOf": [{"$ref": "other.json#/x"}]}, id="relative-document"),
        pytest.param({"$dynamicRef": "http://127.0.0.1:9/meta#node"}, id="dynamic-ref"),
    ],
)  # fmt: skip
def test_schema_references_outside_the_schema_are_refused(
    publisher: Publisher, schema: Any
) -> None:
    token = crypto.sign_jws(canonical_json(with_schema(schema)), publisher.key, MANIFEST_TYP)
    with pytest.raises(ManifestError, match="only references inside the schema"):
        verify_manifest(token, publisher.trusted)
    with pytest.raises(ManifestError, match="only references inside the schema"):
        sign_manifest(with_schema(schema), publisher.key)


def test_references_inside_the_schema_are_fine(publisher: Publisher) -> None:
    schema = {
        "type": "object",
        "$defs": {"n": {"type": "number"}},
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    manifest = verify_manifest(sign_manifest(with_schema(schema), publisher.key), publisher.trusted)
    assert manifest.tools["stats"].input_schema == schema


# --- reading a manifest without trusting it ----------------------------------------


def test_read_unverified_shows_what_the_file_claims(publisher: Publisher) -> None:
    seen = read_unverified(sign_manifest(calc_document(), publisher.key))
    assert seen.header == {"alg": "ES256", "kid": "publisher-1", "typ": MANIFEST_TYP}
    assert seen.document == calc_document()
    assert seen.payload_sha256 == sha256_hex(canonical_json(calc_document()))
    assert seen.problems == ()


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "3 dot-separated parts"),
        ("a.b", "3 dot-separated parts"),
        (f"{b64url_json({'alg': 'none'})}.{b64url_json({})}.", "no signature"),
        (f"{b64url_json({'alg': 'none'})}.{b64url_json({})}.", "alg 'none' is not one"),
        (f"{b64url_json({'alg': 'ES256'})}.{b64url_json({})}.sig", "no 'kid'"),
        (f"{b64url_json([1])}.{b64url_json({})}.sig", "header is not a JSON object"),
        ("!!!.e30.sig", "header is not"),
        (f"{b64url_json({'alg': 'ES256', 'kid': 'k'})}.bm90IGpzb24.sig", "payload is not JSON"),
    ],
)
def test_read_unverified_names_what_is_wrong(token: str, problem: str) -> None:
    seen = read_unverified(token)
    assert any(problem in p for p in seen.problems), seen.problems
