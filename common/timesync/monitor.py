"""The daemons' view of this host's clock sync: a cached state re-read every few minutes.

``SyncMonitor`` for the daemons, and the thread that keeps it fresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from common.clock import NS_PER_S, monotonic_ns, realtime_ns
from common.timesync.latency import CommLatency
from common.timesync.readers import SyncConfig, gpsd_address, read_sync_state
from common.timesync.state import SyncState

#: How often a daemon re-reads and logs its sync state ("every few minutes").
DEFAULT_INTERVAL_S = 300.0


class SyncMonitor:
    """This host's sync state, cached and re-read every ``interval_s``; it never raises.

    A daemon calls ``refresh()`` at start and ``poll()`` in its loop; ``current()`` is what
    goes into reports and clock replies. Each reading is logged as one ``clock_sync`` line.
    Reading takes up to ~2 s when gpsd is enabled, so a latency-critical loop may call
    ``refresh()`` from a worker thread; the cache is guarded by a lock.
    """

    def __init__(
        self,
        config: SyncConfig | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        reader: Callable[[SyncConfig], SyncState] | None = None,
        logger: Any = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._config = config if config is not None else SyncConfig()
        self._interval_ns = int(interval_s * NS_PER_S)
        self._reader = reader if reader is not None else read_sync_state
        self._log = logger if logger is not None else structlog.get_logger("semalign.timesync")
        self._lock = threading.Lock()
        self._state: SyncState | None = None
        self._read_at_mono: int | None = None

    def due(self, now_monotonic_ns: int | None = None) -> bool:
        """True before the first reading and once ``interval_s`` has passed since the last."""
        now = monotonic_ns() if now_monotonic_ns is None else now_monotonic_ns
        with self._lock:
            return self._read_at_mono is None or now - self._read_at_mono >= self._interval_ns

    def refresh(self) -> SyncState:
        """Read now, cache, log; a reader that raises yields an unsynchronised state."""
        started = monotonic_ns()
        try:
            state = self._reader(self._config)
        except Exception as exc:
            # Deliberately broad: whatever a reader does, the daemon keeps running.
            state = SyncState.unsynchronised(
                f"sync reader raised {type(exc).__name__}: {exc}", read_at_ns=realtime_ns()
            )
        with self._lock:
            before = self._state
            self._state = state
            self._read_at_mono = started
        self._emit(state, before)
        return state

    def current(self) -> SyncState:
        """The last reading (reading once if there is none yet)."""
        with self._lock:
            state = self._state
        return state if state is not None else self.refresh()

    def poll(self, now_monotonic_ns: int | None = None) -> SyncState:
        """``refresh()`` if due, else ``current()``: the one call a daemon loop needs."""
        return self.refresh() if self.due(now_monotonic_ns) else self.current()

    def _emit(self, state: SyncState, before: SyncState | None) -> None:
        fields = {
            "source": state.source.value,
            "synchronised": state.synchronised,
            "bound_ns": state.bound_ns,
            "offset_ns": state.offset_ns,
            "reference": state.reference,
            "reader": state.reader.value,
            "gps_mode": None if state.gps is None else state.gps.mode,
            "pps": None if state.gps is None else state.gps.has_pps,
            "reason": state.reason,
        }
        try:
            if before is not None and before.source is not state.source:
                self._log.warning("clock_sync_changed", was=before.source.value, **fields)
            elif state.synchronised:
                self._log.info("clock_sync", **fields)
            else:
                self._log.warning("clock_sync", **fields)
        except Exception:
            # A broken log sink must not turn a clock reading into a daemon crash.
            return


MONITOR_TICK_S = 1.0


def daemon_sync_config(gpsd: str, chrony_socket: str | None = None) -> SyncConfig:
    """The readers a daemon uses: ``gpsd`` is ``HOST[:PORT]`` or ``off``."""
    from common.errors import ConfigError

    if gpsd.strip().lower() in ("off", "none", ""):
        return SyncConfig(chrony_socket=chrony_socket, gpsd_host=None)
    try:
        host, port = gpsd_address(gpsd)
    except ValueError as exc:
        raise ConfigError(f"gpsd: {exc}") from exc
    return SyncConfig(chrony_socket=chrony_socket, gpsd_host=host, gpsd_port=port)


def start_monitor_thread(monitor: SyncMonitor, stopped: Callable[[], bool]) -> threading.Thread:
    """Keep ``monitor`` fresh from a daemon thread, so a slow reader never stalls a batch loop."""

    def loop() -> None:
        while not stopped():
            monitor.poll()
            deadline = monotonic_ns() + int(MONITOR_TICK_S * NS_PER_S)
            # Short sleeps so the thread notices the daemon stopping within 0.1 s.
            while not stopped() and monotonic_ns() < deadline:
                time.sleep(0.1)

    thread = threading.Thread(target=loop, name="sync-monitor", daemon=True)
    thread.start()
    return thread


def comm_metrics(comm: CommLatency) -> dict[str, Any]:
    """The flat metrics fields both daemons write for a batch's comm latency."""
    return {
        "latency_comm_s": comm.value_ns / NS_PER_S,
        "latency_comm_raw_s": comm.raw_ns / NS_PER_S,
        "latency_comm_bound_s": None if comm.bound_ns is None else comm.bound_ns / NS_PER_S,
        "comm_basis": comm.basis.value,
        "comm_gps_grade": comm.gps_grade,
        "comm_flags": list(comm.flags),
        "sync_tx": comm.tx.source.value,
        "sync_rx": comm.rx.source.value,
        # Which clock exchange the estimate (and an estimated bound) rests on, and how long
        # before B it was made: the bound is that exchange's delay / 2 plus drift over this age.
        "comm_exchange_seq": None if comm.estimate is None else comm.estimate.seq,
        "comm_exchange_age_s": None if comm.estimate_age_ns is None else comm.estimate_age_ns / NS_PER_S,
    }
