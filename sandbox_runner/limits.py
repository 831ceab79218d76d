"""The limits one call runs under: the grant's, never above the runner's own maximums."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    output_kb: int
    pids: int

    @property
    def cpu_s(self) -> int:
        """CPU seconds (RLIMIT_CPU soft limit): a little over the wall time, so only a
        tool burning several cores at once runs into it."""
        return math.ceil(self.timeout_s) + 1

    @classmethod
    def from_grant(cls, raw: Mapping[str, int | float], ceiling: Limits) -> Limits:
        """The grant's limits (the manifest's, tightened by policy), capped by `ceiling`.

        A limit the grant does not name takes the ceiling; a bad value is refused.
        """
        values: dict[str, int | float] = {}
        for f in fields(cls):
            cap = getattr(ceiling, f.name)
            value = raw.get(f.name, cap)
            bad = (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
                or (isinstance(cap, int) and value != int(value))
            )
            if bad:
                whole = " (a whole number)" if isinstance(cap, int) else ""
                raise ValueError(f"limit {f.name} must be a positive number, got {value!r}{whole}")
            values[f.name] = type(cap)(min(value, cap))
        return cls(**values)  # type: ignore[arg-type]


# The sandbox's /tmp (tmpfs) size; its pages count against the memory cgroup too.
TMPFS_MB = 16

# What no grant can exceed unless the operator raises it in [runner].
DEFAULT_CEILING = Limits(timeout_s=60.0, memory_mb=1024, output_kb=1024, pids=64)
