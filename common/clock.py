"""The one place semalign reads clocks: cross-host instants and local durations.

Cross-host instants (the paper's A and B) come from ``CLOCK_REALTIME``, which only
means something across hosts when both are disciplined (see ``common.timesync``);
durations (C, D, timeouts) come from the monotonic clock, which never jumps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

NS_PER_S = 1_000_000_000


def realtime_ns() -> int:
    """Wall-clock nanoseconds since the epoch (``CLOCK_REALTIME``)."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


def monotonic_ns() -> int:
    """Nanoseconds on the local monotonic clock; only differences are meaningful."""
    return time.monotonic_ns()


@dataclass(frozen=True, slots=True)
class Stamp:
    """One event stamped on both clocks at (nearly) the same instant."""

    realtime_ns: int
    monotonic_ns: int

    @classmethod
    def now(cls) -> Stamp:
        return cls(realtime_ns(), monotonic_ns())
