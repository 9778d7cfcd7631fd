"""The NTP-style offset tracker TX runs against RX: when to probe, which replies count, the estimate.

The estimate corrects B - A only where the clocks are not both disciplined; it is never
GPS-grade (``common.timesync.latency`` says how the bound is built).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from common.clock import NS_PER_S, realtime_ns
from common.errors import Unreachable
from common.timesync.latency import (
    ClockProbe,
    ClockReply,
    OffsetEstimate,
    drift_ppm,
    estimate_rx_minus_tx,
)
from common.timesync.state import SyncState

#: Clock exchanges kept; the one with the least ``delay / 2 + age x drift`` at the batch gives
#: the offset estimate (``estimate_at``).
EXCHANGES_KEPT = 8
#: Probes sent back to back when RX first answers, so the first batch already has an estimate.
PROBE_BURST = 4
#: How long the first batch waits for that burst to be answered.
FIRST_WAIT_S = 1.0


class OffsetTracker:
    """Sends probes every ``interval_s`` (a burst at first) and keeps the best estimate.

    ``clock`` stamps the probes (CLOCK_REALTIME; tests inject their own).
    """

    def __init__(self, interval_s: float, *, clock: Callable[[], int] = realtime_ns) -> None:
        self.interval_ns = int(interval_s * NS_PER_S)
        self.clock = clock
        #: The estimate as of the latest reply (least bound at its arrival); ``estimate_at``
        #: chooses again for a given instant.
        self.estimate: OffsetEstimate | None = None
        #: RX's sync state from its latest reply: how fast its clock may drift.
        self.rx_sync: SyncState | None = None
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
            probe = ClockProbe(self._seq, self.clock())
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
        self.rx_sync = reply.sync
        self.estimate = estimate_rx_minus_tx(self._exchanges, client="tx", at_ns=t4_ns,
                                             drift_ppm=drift_ppm(None, reply.sync))
        return True

    def estimate_at(self, now_ns: int, tx_sync: SyncState | None = None) -> OffsetEstimate | None:
        """The kept exchange with the least bound at ``now_ns`` (TX's CLOCK_REALTIME, a batch's A):
        ``delay / 2 + age x drift``, the drift from both sides' sync states (TX's ``tx_sync``,
        RX's from its latest reply; unknown counts as free-running). RX ages the bound from the
        same exchange to B, and the choice made at A stays the best at B (the same rate for all)."""
        if not self._exchanges:
            return None
        return estimate_rx_minus_tx(self._exchanges, client="tx", at_ns=now_ns,
                                    drift_ppm=drift_ppm(tx_sync, self.rx_sync))

    def ready(self, now_mono_ns: int) -> bool:
        """Whether a batch may be built: an estimate exists, or the first burst had its chance."""
        return (self.estimate is not None or self._first_ns is None
                or now_mono_ns - self._first_ns > FIRST_WAIT_S * NS_PER_S)
