"""Agent manifests: what an agent is and which tools it offers, signed by its publisher.

A manifest on disk is a compact JWS (`typ: regate-manifest+jws`) whose payload is
the RFC 8785 canonical JSON of the manifest document. It becomes a
`SignedManifest` only in `verify_manifest`, after the signature, the shape and
the expiry check.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator

from regate import crypto
from regate.canonical import canonical_json, sha256_hex
from regate.descriptions import Flag, check_tool_text

MANIFEST_TYP = "regate-manifest+jws"
MAX_MANIFEST_BYTES = 256 * 1024
NAME_PATTERN = "^[a-z][a-z0-9_-]{0,62}$"

DEFAULT_LIMITS: Mapping[str, int | float] = {
    "timeout_s": 10,
    "memory_mb": 256,
    "output_kb": 256,
    "pids": 32,
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["agent_id", "version", "tools"],
    "additionalProperties": False,
    "properties": {
        "agent_id": {"type": "string", "pattern": NAME_PATTERN},
        "version": {"type": "string", "minLength": 1, "maxLength": 64},
        "description": {"type": "string", "maxLength": 2000},
        "expires": {"type": "string", "format": "date-time"},
        "tools": {
            "type": "array",
            "minItems": 1,
            "maxItems": 256,
            "items": {
                "type": "object",
                "required": ["name", "description", "input_schema", "entrypoint"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": NAME_PATTERN},
                    "description": {"type": "string", "maxLength": 4000},
                    "input_schema": {"type": "object"},
                    "entrypoint": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 32,
                        "items": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                    "permissions": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": 128},
                        "uniqueItems": True,
                    },
                    "limits": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
                            "memory_mb": {"type": "integer", "minimum": 16, "maximum": 8192},
                            "output_kb": {"type": "integer", "minimum": 1, "maximum": 16384},
                            "pids": {"type": "integer", "minimum": 1, "maximum": 1024},
                        },
                    },
                },
            },
        },
    },
}
_MANIFEST_VALIDATOR = Draft202012Validator(
    MANIFEST_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
)


class ManifestError(Exception):
    """A manifest is unsigned, tampered, malformed or expired; the message says which."""


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input_schema: Mapping[str, Any]
    entrypoint: tuple[str, ...]
    limits: Mapping[str, int | float]
    permissions: tuple[str, ...]
    # Hidden-instruction findings in the description or input schema (regate/descriptions.py).
    flags: tuple[Flag, ...] = ()


@dataclass(frozen=True)
class SignedManifest:
    agent_id: str
    version: str
    publisher: str  # the `kid` of the trust-store key that signed it
    sha256: str  # of the canonical payload the signature covers
    tools: Mapping[str, ToolSpec]
    document: Mapping[str, Any]
    algorithm: str = ""  # the JWS `alg` that verified (ES256 or RS256)
    expires: datetime | None = None


def sign_manifest(document: Mapping[str, Any], private_key: crypto.Jwk) -> str:
    """Check the document's shape, then sign its canonical JSON."""
    _check_shape(document)
    return crypto.sign_jws(canonical_json(document), private_key, typ=MANIFEST_TYP)


def verify_manifest(
    token: str, publishers: crypto.KeySet, *, now: datetime | None = None
) -> SignedManifest:
    now = now or datetime.now(UTC)
    try:
        token = token.strip()
        payload = crypto.verify_jws(
            token, publishers, typ=MANIFEST_TYP, max_size=MAX_MANIFEST_BYTES
        )
        header = crypto.unverified_header(token, MAX_MANIFEST_BYTES)
    except crypto.CryptoError as exc:
        raise ManifestError(f"signature check failed: {exc}") from exc
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise ManifestError("signed payload is not JSON") from exc
    # Only the canonical form is accepted, so there is one byte string per manifest
    # (and no duplicate keys or other parser differentials hiding inside).
    if canonical_json(document) != payload:
        raise ManifestError("signed payload is not RFC 8785 canonical JSON")
    _check_shape(document)
    expires = document.get("expires")
    expiry = _parse_time(expires) if expires is not None else None
    if expiry is not None and expiry <= now:
        raise ManifestError(f"manifest expired at {expires}; ask the publisher to re-sign it")
    tools = {t["name"]: _tool(t) for t in document["tools"]}
    return SignedManifest(
        agent_id=document["agent_id"],
        version=document["version"],
        publisher=str(header["kid"]),
        sha256=sha256_hex(payload),
        tools=tools,
        document=document,
        algorithm=str(header.get("alg", "")),
        expires=expiry,
    )


def _check_shape(document: Mapping[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(_MANIFEST_VALIDATOR.iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ManifestError(f"manifest field {where}: {error.message}")
    names = [tool["name"] for tool in document["tools"]]
    if len(set(names)) != len(names):
        raise ManifestError(f"tool names must be unique; got {names}")
    for tool in document["tools"]:
        try:
            Draft202012Validator.check_schema(tool["input_schema"])
        except jsonschema.SchemaError as exc:
            raise ManifestError(
                f"tool {tool['name']!r} input_schema is not a valid JSON Schema: {exc.message}"
            ) from exc
        for where, ref in _references(tool["input_schema"], "input_schema"):
            if not ref.startswith("#"):
                raise ManifestError(
                    f"tool {tool['name']!r} {where} = {ref!r}: only references inside the"
                    " schema ('#/...') are allowed; Regate never fetches a schema from elsewhere"
                )


def _references(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every `$ref` and `$dynamicRef` in a JSON Schema, with where it is."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in ("$ref", "$dynamicRef") and isinstance(item, str):
                yield f"{where}/{key}", item
            else:
                yield from _references(item, f"{where}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _references(item, f"{where}/{index}")


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ManifestError(f"expires {value!r} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise ManifestError(f"expires {value!r} needs a time zone, e.g. 'Z'")
    return parsed


def _tool(raw: Mapping[str, Any]) -> ToolSpec:
    return ToolSpec(
        name=raw["name"],
        description=raw["description"],
        input_schema=raw["input_schema"],
        entrypoint=tuple(raw["entrypoint"]),
        limits={**DEFAULT_LIMITS, **raw.get("limits", {})},
        permissions=tuple(raw.get("permissions", ["net:none"])),
        flags=check_tool_text(raw["description"], raw["input_schema"]),
    )


@dataclass(frozen=True)
class UnverifiedManifest:
    """What a manifest file claims, read without checking its signature. Never trust it.

    For `regate manifest inspect`: an operator looking at a file the gateway refused
    wants to see which key it names and what it says, whatever is wrong with it.
    """

    header: Mapping[str, Any] | None
    document: Any  # the payload parsed as JSON, or None
    payload_sha256: str | None  # of the payload bytes, as the gateway would pin them
    problems: tuple[str, ...]  # what is visibly wrong, without any key


def read_unverified(token: str) -> UnverifiedManifest:
    problems: list[str] = []
    token = token.strip()
    if len(token) > MAX_MANIFEST_BYTES:
        problems.append(f"larger than {MAX_MANIFEST_BYTES} bytes: the gateway refuses it")
    parts = token.split(".")
    if len(parts) != 3:
        problems.append(f"a compact JWS has 3 dot-separated parts; this has {len(parts)}")
        parts += [""] * (3 - len(parts))
    header = _decoded_json(parts[0], "header", problems)
    payload = _b64(parts[1], "payload", problems)
    document = _decoded_json(parts[1], "payload", problems) if payload is not None else None
    if not parts[2]:
        problems.append("no signature")
    if isinstance(header, dict):
        if header.get("alg") not in crypto.SUPPORTED_ALGORITHMS:
            problems.append(f"alg {header.get('alg')!r} is not one Regate accepts (ES256, RS256)")
        if not header.get("kid"):
            problems.append("no 'kid': the gateway cannot pick a publisher key")
        if header.get("typ") != MANIFEST_TYP:
            problems.append(f"typ {header.get('typ')!r} is not {MANIFEST_TYP!r}")
    elif header is not None:
        problems.append("the header is not a JSON object")
    return UnverifiedManifest(
        header=header if isinstance(header, dict) else None,
        document=document,
        payload_sha256=sha256_hex(payload) if payload is not None else None,
        problems=tuple(problems),
    )


def _b64(part: str, name: str, problems: list[str]) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        problems.append(f"the {name} is not base64url")
        return None


def _decoded_json(part: str, name: str, problems: list[str]) -> Any:
    raw = _b64(part, name, problems) if name == "header" else _b64(part, "payload", [])
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        problems.append(f"the {name} is not JSON")
        return None
