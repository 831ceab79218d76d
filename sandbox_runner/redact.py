"""Secret-looking values are replaced before a tool's result leaves the runner.

A tool may echo what it found (an API key in a file, a token in its input); the
calling agent should not get it back verbatim. Each secret becomes
`[REDACTED:<first 12 hex of its sha256>]` — stable, so the same secret is
recognisable across results and logs without being readable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

# Values that are secrets by their shape, wherever they appear.
PATTERNS = [
    re.compile(p)
    for p in (
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT / JWS
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key id
        r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub tokens
        r"\bgithub_pat_[A-Za-z0-9_]{60,}\b",
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",  # Slack
        r"\bAIza[0-9A-Za-z_-]{35}",  # Google API key (may end in '-': no trailing \b)
        r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b",  # Stripe
        r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b",  # OpenAI / Anthropic style keys
        r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
        r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{20,}",
    )
]
# Fields whose value is a secret whatever it looks like: a whole word of the key
# name (after camelCase is split), so `client_secret` and `apiKey` match but
# `author`, `passage` and `max_tokens` do not.
SECRET_FIELD = re.compile(
    r"(^|[_.\- ])(password|passwd|passphrase|pass|secret|token|api[_-]?key|apikey|"
    r"private[_-]?key|credentials?|auth|authorization|cookie|session[_-]?id|"
    r"access[_-]?key)($|[_.\- ])"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_field(name: str) -> bool:
    return SECRET_FIELD.search(_CAMEL.sub("_", name).lower()) is not None


def marker(secret: str) -> str:
    digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    return f"[REDACTED:{digest[:12]}]"


@dataclass
class Redaction:
    value: Any
    count: int


def redact(value: Any) -> Redaction:
    """A copy of `value` (a JSON value) with secrets replaced, and how many there were."""
    counter = [0]

    def text(s: str) -> str:
        for pattern in PATTERNS:
            s, n = pattern.subn(lambda m: marker(m.group(0)), s)
            counter[0] += n
        return s

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for key, item in v.items():
                if is_secret_field(str(key)) and isinstance(item, str) and item:
                    counter[0] += 1
                    out[text(str(key))] = marker(str(item))
                else:
                    out[text(str(key))] = walk(item)
            return out
        if isinstance(v, list):
            return [walk(item) for item in v]
        if isinstance(v, str):
            return text(v)
        return v

    return Redaction(walk(value), counter[0])
