"""Loading a directory of signed manifests: what the gateway routes to and the runner runs.

Each `<agent_id>.jws` is verified against the publisher trust store. A file that
fails is refused with a logged reason and its agent is simply absent; one bad
manifest never stops the others from loading. A manifest signed by a revoked
publisher key (`[manifests] revoked_kids`) is refused like a forged one.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import structlog

from regate import crypto
from regate.manifest import MAX_MANIFEST_BYTES, ManifestError, SignedManifest, verify_manifest

log = structlog.get_logger("regate.manifests")


def load_manifest_dir(
    directory: Path, publishers: crypto.KeySet, revoked_kids: Collection[str] = ()
) -> tuple[dict[str, SignedManifest], dict[str, str]]:
    """(agent_id -> verified manifest, file name -> why it was refused)."""
    agents: dict[str, SignedManifest] = {}
    refused: dict[str, str] = {}
    for path in sorted(directory.glob("*.jws")):
        try:
            agents[path.stem] = load_manifest_file(path, publishers, revoked_kids)
        except ManifestError as exc:
            refused[path.name] = str(exc)
            log.warning("manifest_refused", file=str(path), reason=str(exc))
    log.info("manifests_loaded", agents=sorted(agents), refused=sorted(refused))
    return agents, refused


def load_manifest_file(
    path: Path, publishers: crypto.KeySet, revoked_kids: Collection[str] = ()
) -> SignedManifest:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"file is larger than {MAX_MANIFEST_BYTES} bytes")
        token = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read: {exc}") from exc
    manifest = verify_manifest(token, publishers)
    if manifest.publisher in revoked_kids:
        raise ManifestError(
            f"signed by publisher key {manifest.publisher!r}, which is revoked"
            " ([manifests] revoked_kids); the publisher must re-sign it with a current key"
        )
    # Bind the manifest to where it is served from: a manifest signed for one agent
    # cannot be dropped in under another agent's name.
    if manifest.agent_id != path.stem:
        raise ManifestError(
            f"manifest is for agent {manifest.agent_id!r} but is stored as {path.name!r}"
        )
    return manifest
