"""Key files on disk: rotating a signing key pair, and the admin API's token file.

A key pair is `NAME.private.jwk` (mode 0600) beside `NAME.jwks.json` (public keys,
what verifiers trust). Rotating makes a new pair with a new `kid`: the new
private key takes `NAME.private.jwk`, the old one is kept aside as
`NAME.<old kid>.retired.jwk`, and the JWKS lists both public keys so that what the
old key signed still verifies while everything is re-signed. `retire` then drops
a `kid` from the JWKS (docs/trust.md, "Rotating a publisher key").
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from regate import crypto


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _write_jwks(path: Path, keys: list[dict[str, Any]]) -> None:
    """Replace the JWKS atomically: a gateway polling it never reads half a file."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_text(json.dumps({"keys": keys}, indent=2) + "\n")
    os.replace(temporary, path)


def _public_keys(jwks_file: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(jwks_file.read_text())
    except (OSError, ValueError) as exc:
        raise crypto.CryptoError(f"cannot read the JWKS {jwks_file}: {exc}") from exc
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise crypto.CryptoError(f"{jwks_file} is not a JWKS document")
    return [k for k in keys if isinstance(k, dict)]


def rotate(directory: Path, name: str, *, now: datetime | None = None) -> tuple[str, str]:
    """New key pair for NAME with a fresh kid; both public keys stay in NAME.jwks.json.
    Returns (old kid, new kid)."""
    private_path = directory / f"{name}.private.jwk"
    jwks_path = directory / f"{name}.jwks.json"
    old = crypto.load_private_key(private_path)
    public = _public_keys(jwks_path)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    new_kid = f"{name}-{stamp}-{secrets.token_hex(3)}"
    new_private, new_public = crypto.generate_ec_key(new_kid)
    retired = directory / f"{name}.{old['kid']}.retired.jwk"
    _write_private(retired, json.dumps(old, indent=2))
    # The JWKS first (verifiers learn the new key), then the private key (signers use it).
    _write_jwks(jwks_path, [new_public, *[k for k in public if k.get("kid") != new_kid]])
    _write_private(private_path, json.dumps(new_private, indent=2))
    return str(old["kid"]), new_kid


def retire(directory: Path, name: str, kid: str) -> None:
    """Drop `kid` from NAME.jwks.json; what it signed no longer verifies."""
    jwks_path = directory / f"{name}.jwks.json"
    public = _public_keys(jwks_path)
    current = crypto.load_private_key(directory / f"{name}.private.jwk")
    if kid == current.get("kid"):
        raise crypto.CryptoError(f"{kid!r} is the current signing key of {name!r}; rotate first")
    kept = [k for k in public if k.get("kid") != kid]
    if len(kept) == len(public):
        raise crypto.CryptoError(f"{jwks_path} has no key {kid!r}")
    _write_jwks(jwks_path, kept)


def ensure_token_file(path: Path) -> bool:
    """Write a fresh random token (256 bits, URL-safe) to `path`, mode 0600, unless it
    exists. Returns whether it wrote one."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, secrets.token_urlsafe(32) + "\n")
    return True
