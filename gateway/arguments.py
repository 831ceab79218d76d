"""Tool arguments checked against the tool's JSON Schema from its signed manifest."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from jsonschema.validators import Draft202012Validator

from gateway.errors import InvalidArguments
from regate.canonical import canonical_json
from regate.errors import BadRequest, InternalError


def _never_retrieve(uri: str) -> referencing.Resource[Any]:
    # jsonschema's default registry fetches remote `$ref`s with urllib: a request to
    # wherever a manifest points. Manifests with them are refused at load
    # (regate/manifest.py); this makes sure nothing is ever fetched regardless.
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


# jsonschema adds the metaschemas to a registry it is given; nothing else resolves.
NO_REMOTE_REFS: referencing.Registry[Any] = referencing.Registry(
    retrieve=_never_retrieve  # type: ignore[call-arg]
)


def extract_arguments(body: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - {"arguments"})
    if unknown:
        raise BadRequest(f'unknown fields {unknown}; the body is {{"arguments": {{...}}}}')
    arguments = body.get("arguments", {})
    if not isinstance(arguments, dict):
        raise BadRequest("'arguments' must be a JSON object")
    return arguments


def validate_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    """Raise `InvalidArguments` naming the failing field's path, or return."""
    validator = _validator_for(schema)
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except referencing.exceptions.Unresolvable as exc:
        raise InternalError(
            "the tool's input schema has a reference that does not resolve; the publisher"
            " must fix the manifest"
        ) from exc
    if error is None:
        return
    path = "/" + "/".join(str(p) for p in error.absolute_path)
    raise InvalidArguments(
        f"argument {path} is invalid: {_describe(error)}", path=path, schema_rule=error.validator
    )


def _describe(error: jsonschema.ValidationError) -> str:
    # Name the rule, not the value: arguments may hold secrets, and this message
    # is logged and audited.
    if error.validator in ("required", "additionalProperties", "dependentRequired"):
        return error.message
    rule = repr(error.validator_value)
    if len(rule) > 80:
        rule = rule[:77] + "..."
    return f"must satisfy {error.validator}={rule}"


# Validators by the identity of the (immutable, manifest-owned) schema object: the
# hot path neither re-serializes nor recompiles a schema. Each entry keeps its
# schema alive, so an id is never reused for another schema while it is cached.
_BY_IDENTITY: dict[int, tuple[Mapping[str, Any], Draft202012Validator]] = {}
_MAX_CACHED = 1024


def _validator_for(schema: Mapping[str, Any]) -> Draft202012Validator:
    entry = _BY_IDENTITY.get(id(schema))
    if entry is not None and entry[0] is schema:
        return entry[1]
    validator = _validator(canonical_json(schema))
    if len(_BY_IDENTITY) >= _MAX_CACHED:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(schema)] = (schema, validator)
    return validator


@lru_cache(maxsize=1024)
def _validator(schema_json: bytes) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json), registry=NO_REMOTE_REFS)
