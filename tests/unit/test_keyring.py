"""Key rotation and the admin token file (`regate.keyring`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regate import crypto, keyring
from regate.manifest import ManifestError, sign_manifest, verify_manifest

DOC = {
    "agent_id": "calc",
    "version": "1.0.0",
    "tools": [
        {
            "name": "add",
            "description": "Add.",
            "input_schema": {"type": "object"},
            "entrypoint": ["python3", "add.py"],
        }
    ],
}


def test_rotation_keeps_both_keys_until_the_old_one_is_retired(tmp_path: Path) -> None:
    crypto.write_key_pair(tmp_path, "publisher")
    old_signed = sign_manifest(DOC, crypto.load_private_key(tmp_path / "publisher.private.jwk"))

    old_kid, new_kid = keyring.rotate(tmp_path, "publisher")

    assert old_kid == "publisher"
    assert new_kid.startswith("publisher-")
    assert new_kid != old_kid
    private = crypto.load_private_key(tmp_path / "publisher.private.jwk")
    assert private["kid"] == new_kid
    assert (tmp_path / "publisher.private.jwk").stat().st_mode & 0o077 == 0
    retired = tmp_path / "publisher.publisher.retired.jwk"
    assert retired.stat().st_mode & 0o077 == 0
    assert crypto.load_private_key(retired)["kid"] == old_kid
    jwks = crypto.load_jwks(tmp_path / "publisher.jwks.json")
    assert sorted(jwks.keys) == sorted([old_kid, new_kid])
    # During the rotation, what either key signed verifies.
    new_signed = sign_manifest(DOC, private)
    assert verify_manifest(old_signed, jwks).publisher == old_kid
    assert verify_manifest(new_signed, jwks).publisher == new_kid

    keyring.retire(tmp_path, "publisher", old_kid)

    jwks = crypto.load_jwks(tmp_path / "publisher.jwks.json")
    assert list(jwks.keys) == [new_kid]
    assert verify_manifest(new_signed, jwks).publisher == new_kid
    with pytest.raises(ManifestError, match="not in the trusted key set"):
        verify_manifest(old_signed, jwks)


def test_a_second_rotation_keeps_every_public_key_until_retired(tmp_path: Path) -> None:
    crypto.write_key_pair(tmp_path, "pub")
    _, first = keyring.rotate(tmp_path, "pub")
    _, second = keyring.rotate(tmp_path, "pub")
    kids = [k["kid"] for k in json.loads((tmp_path / "pub.jwks.json").read_text())["keys"]]
    assert kids == [second, first, "pub"]  # newest first


def test_retire_refuses_the_current_key_and_unknown_kids(tmp_path: Path) -> None:
    crypto.write_key_pair(tmp_path, "pub")
    with pytest.raises(crypto.CryptoError, match="current signing key"):
        keyring.retire(tmp_path, "pub", "pub")
    with pytest.raises(crypto.CryptoError, match="has no key 'nope'"):
        keyring.retire(tmp_path, "pub", "nope")


def test_token_file_is_random_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "admin.token"
    assert keyring.ensure_token_file(path) is True
    token = path.read_text().strip()
    assert len(token) >= 43
    assert path.stat().st_mode & 0o077 == 0
    assert keyring.ensure_token_file(path) is False
    assert path.read_text().strip() == token
    other = tmp_path / "other.token"
    keyring.ensure_token_file(other)
    assert other.read_text() != path.read_text()
