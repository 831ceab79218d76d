"""Every use of JOSE in Regate: keys, JWTs and compact JWS.

This is the only module that imports python-jose, so the algorithm allow-lists,
the key choice and the claim checks can be read (and audited) in one place.
Callers get our own `CryptoError`, never a library exception.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jws, jwt
from jose.exceptions import JOSEError

from regate.errors import BadRequest
from regate.jsonbody import parse_json

Jwk = dict[str, Any]

# The only signature algorithms Regate accepts anywhere. `none` and the HMAC
# family are not here, so a token can never pick them, whatever its header says.
SUPPORTED_ALGORITHMS = frozenset({"ES256", "RS256"})
MAX_COMPACT_SIZE = 8 * 1024  # tokens and grants; manifests pass their own bound


class CryptoError(Exception):
    """A key, token or signature failed a check; the message says which and why."""


@dataclass(frozen=True)
class KeySet:
    """Public keys by `kid`, as loaded from one JWKS file."""

    keys: Mapping[str, Jwk]
    source: str

    def get(self, kid: object) -> Jwk:
        if not isinstance(kid, str) or not kid:
            raise CryptoError("the header has no 'kid'; every signature must name its key")
        try:
            return self.keys[kid]
        except KeyError:
            raise CryptoError(
                f"key id {kid!r} is not in the trusted key set {self.source}"
            ) from None


def generate_ec_key(kid: str) -> tuple[Jwk, Jwk]:
    """A new P-256 key pair as (private JWK, public JWK), both naming `kid`."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        encoding=_serialization().Encoding.PEM,
        format=_serialization().PrivateFormat.PKCS8,
        encryption_algorithm=_serialization().NoEncryption(),
    )
    private_jwk: Jwk = jwk.construct(pem, "ES256").to_dict()
    private_jwk.update({"kid": kid, "use": "sig", "alg": "ES256"})
    public_jwk = {k: v for k, v in private_jwk.items() if k != "d"}
    return private_jwk, public_jwk


def _serialization() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization


def load_private_key(path: Path) -> Jwk:
    data = _read_json(path)
    if not isinstance(data, dict) or "d" not in data or not data.get("kid"):
        raise CryptoError(f"{path} is not a private JWK with a 'kid'")
    _check_key_usable(data, SUPPORTED_ALGORITHMS, str(path))
    return data


def load_jwks(path: Path, algorithms: Sequence[str] = ("ES256", "RS256")) -> KeySet:
    """Load a JWKS file of public signing keys; an empty or malformed set is an error."""
    return parse_jwks(_read_json(path), algorithms, str(path))


def parse_jwks(data: Any, algorithms: Sequence[str], source: str) -> KeySet:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise CryptoError(f"{source} is not a JWKS document (expected {{'keys': [...]}})")
    keys: dict[str, Jwk] = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict) or not entry.get("kid"):
            raise CryptoError(f"{source}: every key needs a 'kid'")
        if "d" in entry:
            raise CryptoError(f"{source}: key {entry['kid']!r} is private; JWKS are public keys")
        if entry.get("use", "sig") != "sig":
            continue  # encryption keys never verify signatures
        _check_key_usable(entry, algorithms, source)
        keys[entry["kid"]] = entry
    if not keys:
        raise CryptoError(f"{source} holds no usable signing key")
    return KeySet(keys=keys, source=source)


def write_jwks(path: Path, public_keys: Sequence[Jwk]) -> None:
    path.write_text(json.dumps({"keys": list(public_keys)}, indent=2) + "\n")


def write_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.private.jwk (mode 0600) and NAME.jwks.json (public) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    private_jwk, public_jwk = generate_ec_key(name)
    private_path = directory / f"{name}.private.jwk"
    public_path = directory / f"{name}.jwks.json"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(private_jwk, fh, indent=2)
    write_jwks(public_path, [public_jwk])
    return private_path, public_path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise CryptoError(f"cannot read key file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise CryptoError(f"{path} is not valid JSON: {exc}") from exc


def _check_key_usable(key: Jwk, algorithms: Sequence[str] | frozenset[str], source: str) -> None:
    alg = key.get("alg")
    if alg is not None and alg not in algorithms:
        raise CryptoError(f"{source}: key {key.get('kid')!r} is for {alg}, not one of {algorithms}")
    if key.get("kty") not in ("EC", "RSA"):
        raise CryptoError(
            f"{source}: key {key.get('kid')!r} has unsupported kty {key.get('kty')!r}"
        )


def _algorithm_for(key: Jwk) -> str:
    return "ES256" if key["kty"] == "EC" else "RS256"


def _public_key(key: Jwk, alg: str) -> Any:
    """`key` parsed once for `alg`: building a key object from a JWK costs more than
    checking a signature with it, and the same few keys check every request."""
    fields = tuple(sorted((k, v) for k, v in key.items() if isinstance(v, str) and k != "d"))
    return _parsed_key(fields, alg)


def _signing_key(key: Jwk, alg: str) -> Any:
    """The private `key` parsed once: the gateway signs a grant for every call it lets
    run, always with the same key (~45 us of each signature was parsing it)."""
    return _parsed_key(tuple(sorted((k, v) for k, v in key.items() if isinstance(v, str))), alg)


@functools.lru_cache(maxsize=256)
def _parsed_key(fields: tuple[tuple[str, str], ...], alg: str) -> Any:
    return jwk.construct(dict(fields), alg)


# --- compact tokens -------------------------------------------------------


def unverified_header(token: str, max_size: int = MAX_COMPACT_SIZE) -> dict[str, Any]:
    """The JOSE header, for routing only (which issuer, which key). Never trust it."""
    _check_size(token, max_size)
    try:
        header = jws.get_unverified_header(token)
    except JOSEError as exc:
        raise CryptoError(f"malformed token: {exc}") from exc
    if not isinstance(header, dict):
        raise CryptoError("malformed token: the header is not a JSON object")
    return header


def unverified_claims(token: str) -> dict[str, Any]:
    _check_size(token, MAX_COMPACT_SIZE)
    try:
        claims = jwt.get_unverified_claims(token)
    except JOSEError as exc:
        raise CryptoError(f"malformed token: {exc}") from exc
    if not isinstance(claims, dict):
        raise CryptoError("malformed token: the claims are not a JSON object")
    return claims


def _check_size(token: str, max_size: int) -> None:
    if len(token) > max_size:
        raise CryptoError(f"token is {len(token)} bytes; the limit is {max_size}")
    if token.count(".") != 2:
        raise CryptoError("malformed token: a compact JWS has exactly three dot-separated parts")


def sign_jwt(claims: Mapping[str, Any], private_key: Jwk, typ: str = "JWT") -> str:
    headers = {"kid": private_key["kid"], "typ": typ}
    alg = _algorithm_for(private_key)
    try:
        token: str = jwt.encode(dict(claims), _signing_key(private_key, alg), alg, headers)
    except JOSEError as exc:
        raise CryptoError(f"cannot sign token: {exc}") from exc
    return token


def verify_jwt(
    token: str,
    keys: KeySet,
    *,
    algorithms: Sequence[str],
    audience: str,
    issuer: str,
    leeway_s: int,
    typ: str | None = None,
) -> dict[str, Any]:
    """Verify a JWT against `keys` (the key its `kid` names); see `verify_jwt_with_key`."""
    return verify_jwt_with_key(
        token,
        keys.get(strict_header(token).get("kid")),
        algorithms=algorithms,
        audience=audience,
        issuer=issuer,
        leeway_s=leeway_s,
        typ=typ,
    )


# Headers that point at or carry key material: keys come only from configuration.
KEY_HEADERS = ("jku", "x5u", "jwk", "x5c")
# Our own non-token JWS types: never accepted where a caller's token is expected.
FOREIGN_TYPES = ("regate-manifest+jws", "regate-grant+jwt")


def strict_header(token: str, max_size: int = MAX_COMPACT_SIZE) -> dict[str, Any]:
    """The JOSE header parsed strictly (no duplicate keys, bounded nesting), and checked
    for what Regate never accepts: key material or URLs, unknown `crit` extensions."""
    _check_size(token, max_size)
    header = _strict_json(token.split(".")[0], "header")
    if not isinstance(header, dict):
        raise CryptoError("malformed token: the header is not a JSON object")
    carried = [name for name in KEY_HEADERS if name in header]
    if carried:
        raise CryptoError(
            f"token header carries {carried}; keys come only from the issuer's configured JWKS"
        )
    if "crit" in header:
        raise CryptoError(f"token marks extensions critical ({header['crit']!r}); none are known")
    return header


def strict_claims(token: str) -> dict[str, Any]:
    claims = _strict_json(token.split(".")[1], "claims")
    if not isinstance(claims, dict):
        raise CryptoError("malformed token: the claims are not a JSON object")
    return claims


def _strict_json(segment: str, what: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (ValueError, binascii.Error) as exc:
        raise CryptoError(f"malformed token: the {what} is not base64url") from exc
    try:
        return parse_json(raw, what=f"the token {what}")
    except BadRequest as exc:
        raise CryptoError(f"malformed token: {exc.message}") from exc


def verify_jwt_with_key(
    token: str,
    key: Jwk,
    *,
    algorithms: Sequence[str],
    audience: str,
    issuer: str,
    leeway_s: int,
    max_age_s: int | None = None,
    typ: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify signature, algorithm, `exp`, `nbf`, `iat`, `iss` and `aud`; return the claims.

    The algorithm must be in `algorithms` (never the header's choice alone) *and*
    match the key's type. `exp` and `iat` are required integers; `iat` may not be in
    the future, nor older than `max_age_s` when given. Every check is spelled out,
    even where python-jose would do it by default.
    """
    header = strict_header(token)
    alg = header.get("alg")
    allowed = [a for a in algorithms if a in SUPPORTED_ALGORITHMS]
    if alg not in allowed:
        raise CryptoError(f"algorithm {alg!r} is not allowed; this issuer accepts {allowed}")
    if alg != _algorithm_for(key):
        raise CryptoError(f"algorithm {alg!r} does not match key {key['kid']!r}")
    if typ is None and header.get("typ") in FOREIGN_TYPES:
        raise CryptoError(f"a {header['typ']} is not a bearer token")
    if typ is not None and header.get("typ") != typ:
        raise CryptoError(f"token type is {header.get('typ')!r}; this issuer's tokens are {typ!r}")
    claims = strict_claims(token)
    _check_times(claims, leeway_s, max_age_s, time.time() if now is None else now)
    try:
        verified: dict[str, Any] = jwt.decode(
            token,
            _public_key(key, alg),
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            options={
                "verify_signature": True,
                "verify_aud": True,
                "verify_iss": True,
                "verify_exp": True,
                "verify_nbf": True,
                "verify_iat": True,
                "verify_sub": True,
                "require_exp": True,
                "require_iat": True,
                "require_iss": True,
                "require_aud": True,
                "require_sub": True,
                "leeway": leeway_s,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise CryptoError("token has expired; mint a new one") from exc
    except jwt.JWTClaimsError as exc:
        raise CryptoError(f"token claims rejected: {exc}") from exc
    except JOSEError as exc:
        raise CryptoError(f"token rejected: {exc}") from exc
    return verified


def _check_times(claims: dict[str, Any], leeway_s: int, max_age_s: int | None, now: float) -> None:
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if value is None and name != "nbf":
            raise CryptoError(f"token has no '{name}' claim")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise CryptoError(f"token claim '{name}' must be an integer (seconds since the epoch)")
    iat = claims["iat"]
    if iat > now + leeway_s:
        raise CryptoError("token was issued in the future ('iat'); check the issuer's clock")
    if max_age_s is not None and iat < now - max_age_s - leeway_s:
        raise CryptoError(f"token was issued more than {max_age_s} s ago; mint a new one")


def sign_jws(payload: bytes, private_key: Jwk, typ: str) -> str:
    headers = {"kid": private_key["kid"], "typ": typ}
    try:
        token: str = jws.sign(
            payload, private_key, headers=headers, algorithm=_algorithm_for(private_key)
        )
    except JOSEError as exc:
        raise CryptoError(f"cannot sign: {exc}") from exc
    return token


def verify_jws(token: str, keys: KeySet, *, typ: str, max_size: int = MAX_COMPACT_SIZE) -> bytes:
    """Verify a compact JWS against `keys` (chosen by `kid`); return the payload bytes."""
    header = unverified_header(token, max_size)
    key = keys.get(header.get("kid"))
    if header.get("typ") != typ:
        raise CryptoError(f"JWS type is {header.get('typ')!r}, expected {typ!r}")
    alg = _algorithm_for(key)
    if header.get("alg") != alg:
        raise CryptoError(f"algorithm {header.get('alg')!r} does not match key {key['kid']!r}")
    try:
        payload: bytes = jws.verify(token, _public_key(key, alg), algorithms=[alg])
    except JOSEError as exc:
        raise CryptoError(f"signature does not verify with key {key['kid']!r}: {exc}") from exc
    return payload
