"""Signed checkpoints of the audit log: its head, signed with the gateway's key.

The hash chain shows any edit, reorder or gap, but a chain cut short is still a
valid chain. A checkpoint, in the style of a certificate-transparency signed tree
head, is `{seq, head, time}` signed as a compact JWS (ES256) with the gateway's key:
"on `time`, the log held `seq` records and the last had hash `head`". Verification
then fails when a record a checkpoint covers is gone or differs, and a checkpoint
nobody holding the key signed does not verify. What this can and cannot show when
an attacker owns the disk is in docs/threat-model.md ("Audit checkpoints").

The store decides *where* checkpoints live (gateway/audit.py keeps them in its own
file); this module is how they are made, read and checked, whatever the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from regate import crypto

CHECKPOINT_TYP = "regate-audit-checkpoint+jws"
MAX_CHECKPOINT_SIZE = 2048


class CheckpointError(Exception):
    """A checkpoint is forged, malformed, or signed by a key we do not trust."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int  # the number of the last record it covers (= how many records there were)
    head: str  # that record's hash
    signed_at: str  # RFC 3339, UTC
    token: str  # the compact JWS that says all of the above


class CheckpointSigner:
    """Signs a checkpoint every `every_records` records or `every_s` seconds, whichever
    comes first (and once more when the store closes)."""

    def __init__(self, key: crypto.Jwk, *, every_records: int, every_s: float) -> None:
        self._key = key
        self.every_records = every_records
        self.every_s = every_s

    def due(self, seq: int, signed_seq: int, seconds_since: float) -> bool:
        """Whether the records after `signed_seq` (up to `seq`) need a checkpoint now."""
        unsigned = seq - signed_seq
        return unsigned >= self.every_records or (unsigned > 0 and seconds_since >= self.every_s)

    def sign(self, seq: int, head: str, *, now: float | None = None) -> Checkpoint:
        signed_at = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
        stamp = signed_at.isoformat(timespec="microseconds")
        payload = {"seq": seq, "head": head, "time": stamp}
        encoded = json.dumps(payload, sort_keys=True).encode()
        token = crypto.sign_jws(encoded, self._key, typ=CHECKPOINT_TYP)
        return Checkpoint(seq, head, stamp, token)


def read_checkpoint(token: str, keys: crypto.KeySet) -> Checkpoint:
    """Verify a checkpoint's signature and shape; what it says comes from the signed
    payload only, never from columns stored beside it."""
    try:
        payload = crypto.verify_jws(token, keys, typ=CHECKPOINT_TYP, max_size=MAX_CHECKPOINT_SIZE)
    except crypto.CryptoError as exc:
        raise CheckpointError(f"its signature does not verify: {exc}") from exc
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise CheckpointError("its payload is not JSON") from exc
    seq, head, signed_at = (body.get(k) for k in ("seq", "head", "time"))
    if (
        isinstance(seq, bool)
        or not isinstance(seq, int)
        or seq < 1
        or not isinstance(head, str)
        or len(head) != 64
        or not isinstance(signed_at, str)
    ):
        raise CheckpointError("its payload is not {seq >= 1, head: sha256 hex, time}")
    return Checkpoint(seq, head, signed_at, token)


@dataclass(frozen=True)
class CheckpointProblem:
    seq: int | None  # the record concerned, when there is one
    message: str


def read_checkpoints(
    tokens: Iterable[str], keys: crypto.KeySet
) -> tuple[list[Checkpoint], CheckpointProblem | None]:
    """Every checkpoint, signature checked, in the order they were written; stops at
    the first one that does not verify."""
    checkpoints: list[Checkpoint] = []
    for index, token in enumerate(tokens, start=1):
        try:
            checkpoints.append(read_checkpoint(token, keys))
        except CheckpointError as exc:
            return checkpoints, CheckpointProblem(None, f"checkpoint #{index} is forged: {exc}")
    return checkpoints, None


def match_chain(
    checkpoints: list[Checkpoint], hashes_at: dict[int, str], records: int
) -> CheckpointProblem | None:
    """Check verified checkpoints against the verified chain: `hashes_at` maps the
    record numbers they name to the hashes the chain holds there; `records` is the
    chain's length. Returns the first problem, or None when every checkpoint holds."""
    for index, checkpoint in enumerate(checkpoints, start=1):
        if checkpoint.seq > records:
            return CheckpointProblem(
                checkpoint.seq,
                f"the log was truncated: checkpoint #{index} (signed {checkpoint.signed_at})"
                f" covers {checkpoint.seq} records, but only {records} remain",
            )
        if hashes_at.get(checkpoint.seq) != checkpoint.head:
            return CheckpointProblem(
                checkpoint.seq,
                f"record {checkpoint.seq} is not the one checkpoint #{index} (signed"
                f" {checkpoint.signed_at}) covers: the log was rewritten after it",
            )
    return None
