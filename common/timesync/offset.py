"""The NTP-style offset tracker TX runs against RX: when to probe, which replies count, the estimate.

The estimate corrects B - A only where the clocks are not both disciplined; it is never
GPS-grade (``common.timesync.latency`` says how the bound is built).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from common.clock import NS_PER_S, realtime_ns
from common.errors import Unreachable
from common.timesync.latency import ClockProbe, ClockReply, OffsetEstimate, estimate_rx_minus_tx

#: Clock exchanges kept; the one with the least round-trip delay gives the offset estimate.
EXCHANGES_KEPT = 8
#: Probes sent back to back when RX first answers, so the first batch already has an estimate.
PROBE_BURST = 4
#: How long the first batch waits for that burst to be answered.
FIRST_WAIT_S = 1.0


class OffsetTracker:
    """Sends probes every ``interval_s`` (a burst at first) and keeps the best estimate."""

    def __init__(self, interval_s: float) -> None:
        self.interval_ns = int(interval_s * NS_PER_S)
        self.estimate: OffsetEstimate | None = None
        self.stale = 0
        self._probes: dict[int, ClockProbe] = {}
        self._exchanges: deque[tuple[ClockProbe, ClockReply, int]] = deque(maxlen=EXCHANGES_KEPT)
        self._seq = 0
        self._due = 0
        self._first_ns: int | None = None

    def poll(self, now_mono_ns: int, send: Callable[[ClockProbe], None]) -> None:
        """Send the probes that are due through ``send`` (which may raise ``Unreachable``)."""
        if now_mono_ns < self._due:
            return
        self._due = now_mono_ns + self.interval_ns if self.interval_ns else 2**63
        burst = PROBE_BURST if not self._exchanges else 1
        if self._first_ns is None:
            self._first_ns = now_mono_ns
        self._probes = {}  # unanswered probes from earlier rounds are stale
        for _ in range(burst):
            self._seq = (self._seq + 1) % 2**32
            probe = ClockProbe(self._seq, realtime_ns())
            try:
                send(probe)
            except Unreachable:
                return
            self._probes[probe.seq] = probe

    def on_reply(self, reply: ClockReply, t4_ns: int) -> bool:
        """Take RX's answer (received at ``t4_ns``); False for a stale or foreign one."""
        probe = self._probes.pop(reply.seq, None)
        if probe is None or probe.t1_ns != reply.t1_ns:
            self.stale += 1
            return False
        self._exchanges.append((probe, reply, t4_ns))
        self.estimate = estimate_rx_minus_tx(self._exchanges, client="tx")
        return True

    def ready(self, now_mono_ns: int) -> bool:
        """Whether a batch may be built: an estimate exists, or the first burst had its chance."""
        return (self.estimate is not None or self._first_ns is None
                or now_mono_ns - self._first_ns > FIRST_WAIT_S * NS_PER_S)
