"""Every use of JOSE in Regate: keys, JWTs and compact JWS.

This is the only module that imports python-jose, so the algorithm allow-lists,
the key choice and the claim checks can be read (and audited) in one place.
Callers get our own `CryptoError`, never a library exception.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jws, jwt
from jose.exceptions import JOSEError

Jwk = dict[str, Any]

# The only signature algorithms Regate accepts anywhere. `none` and the HMAC
# family are not here, so a token can never pick them, whatever its header says.
SUPPORTED_ALGORITHMS = frozenset({"ES256", "RS256"})
MAX_COMPACT_SIZE = 16 * 1024


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
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise CryptoError(f"{path} is not a JWKS document (expected {{'keys': [...]}})")
    keys: dict[str, Jwk] = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict) or not entry.get("kid"):
            raise CryptoError(f"{path}: every key needs a 'kid'")
        if "d" in entry:
            raise CryptoError(f"{path}: key {entry['kid']!r} is private; a JWKS holds public keys")
        if entry.get("use", "sig") != "sig":
            continue  # encryption keys never verify signatures
        _check_key_usable(entry, algorithms, str(path))
        keys[entry["kid"]] = entry
    if not keys:
        raise CryptoError(f"{path} holds no usable signing key")
    return KeySet(keys=keys, source=str(path))


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
    try:
        token: str = jwt.encode(
            dict(claims), private_key, algorithm=_algorithm_for(private_key), headers=headers
        )
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
) -> dict[str, Any]:
    """Verify signature, algorithm, `exp`, `nbf`, `iat`, `iss` and `aud`; return the claims.

    The key is the one the header's `kid` names in `keys` (the caller picked `keys`
    by issuer); the algorithm must be in `algorithms` *and* match the key type.
    """
    header = unverified_header(token)
    key = keys.get(header.get("kid"))
    alg = header.get("alg")
    allowed = [a for a in algorithms if a in SUPPORTED_ALGORITHMS]
    if alg not in allowed:
        raise CryptoError(f"algorithm {alg!r} is not allowed; this issuer accepts {allowed}")
    if alg != _algorithm_for(key):
        raise CryptoError(f"algorithm {alg!r} does not match key {key['kid']!r}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
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
    return claims


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
        payload: bytes = jws.verify(token, key, algorithms=[alg])
    except JOSEError as exc:
        raise CryptoError(f"signature does not verify with key {key['kid']!r}: {exc}") from exc
    return payload
