"""How well this host's CLOCK_REALTIME is synchronised (chrony, kernel, gpsd), and honest B - A.

Public entry of the time-sync modules: ``SyncMonitor`` for the daemons, ``clock_main`` for the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from common.clock import NS_PER_S, monotonic_ns, realtime_ns
from common.timesync_latency import (
    ALL_FLAGS,
    FREE_RUNNING_DRIFT_PPM,
    MAX_SYNC_AGE_NS,
    SYNCED_DRIFT_PPM,
    Basis,
    ClockProbe,
    ClockReply,
    CommLatency,
    OffsetEstimate,
    best_estimate,
    comm_latency_record,
    drift_allowance_ns,
    estimate_offset,
    estimate_rx_minus_tx,
)
from common.timesync_readers import (
    GPSD_PORT,
    ChronyTracking,
    ClockReport,
    KernelClock,
    SyncConfig,
    chrony_bound_ns,
    classify_reference,
    gps_status_from_reports,
    kernel_clock_from_timex,
    parse_chrony_tracking,
    read_chrony,
    read_clock_report,
    read_gpsd,
    read_kernel_clock,
    read_sync_state,
    state_from_readings,
)
from common.timesync_state import (
    BadSyncMessage,
    GpsStatus,
    Leap,
    Reader,
    SyncSource,
    SyncState,
    TimeSyncError,
)

__all__ = [
    "ALL_FLAGS",
    "DEFAULT_INTERVAL_S",
    "FREE_RUNNING_DRIFT_PPM",
    "GPSD_PORT",
    "MAX_SYNC_AGE_NS",
    "SYNCED_DRIFT_PPM",
    "BadSyncMessage",
    "Basis",
    "ChronyTracking",
    "ClockProbe",
    "ClockReply",
    "ClockReport",
    "CommLatency",
    "GpsStatus",
    "KernelClock",
    "Leap",
    "OffsetEstimate",
    "Reader",
    "SyncConfig",
    "SyncMonitor",
    "SyncSource",
    "SyncState",
    "TimeSyncError",
    "best_estimate",
    "chrony_bound_ns",
    "classify_reference",
    "clock_main",
    "comm_latency_record",
    "drift_allowance_ns",
    "estimate_offset",
    "estimate_rx_minus_tx",
    "format_report",
    "gps_status_from_reports",
    "kernel_clock_from_timex",
    "parse_chrony_tracking",
    "read_chrony",
    "read_clock_report",
    "read_gpsd",
    "read_kernel_clock",
    "read_sync_state",
    "state_from_readings",
]

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


# --- semalign clock ------------------------------------------------------------------------


def _fmt_ns(ns: int, *, signed: bool = False) -> str:
    """A duration in the unit that keeps 3-4 significant digits readable."""
    sign = ("+" if ns >= 0 else "-") if signed else ("-" if ns < 0 else "")
    mag = abs(ns)
    for unit, scale in (("s", NS_PER_S), ("ms", 1_000_000), ("µs", 1_000)):
        if mag >= scale:
            return f"{sign}{mag / scale:.3f} {unit}"
    return f"{sign}{mag} ns"


def _fmt_time(ns: int) -> str:
    moment = datetime.fromtimestamp(ns / NS_PER_S, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_report(report: ClockReport) -> str:
    """The human-readable ``semalign clock`` output."""
    s = report.state
    lines = [f"source        {s.source.value} ({'synchronised' if s.synchronised else 'UNSYNCHRONISED'})"]
    if s.bound_ns is not None:
        if s.reader is Reader.CHRONY and s.offset_ns is not None and s.root_delay_ns is not None \
                and s.root_dispersion_ns is not None:
            how = (f"|offset| {_fmt_ns(abs(s.offset_ns))} + root dispersion "
                   f"{_fmt_ns(s.root_dispersion_ns)} + root delay/2 "
                   f"{_fmt_ns((s.root_delay_ns + 1) // 2)}")
        else:
            how = "kernel maxerror"
        lines.append(f"error bound   ±{_fmt_ns(s.bound_ns)}  = {how}")
    else:
        lines.append("error bound   none: this clock's B - A figures are not GPS-grade")
    if s.offset_ns is not None:
        lines.append(f"offset        {_fmt_ns(s.offset_ns, signed=True)} (clock minus reference)")
    if s.reference or s.stratum is not None:
        lines.append(f"reference     {s.reference or '-'}, stratum {s.stratum}, leap {s.leap.value}"
                     f" (read by {s.reader.value})")
    g = s.gps
    if g is None:
        lines.append("gpsd          not reachable")
    else:
        parts = [{0: "no mode", 1: "no fix", 2: "2D fix", 3: "3D fix"}[g.mode]]
        if g.fix_time_ns is not None:
            parts.append(f"time {_fmt_time(g.fix_time_ns)}")
        parts.append("PPS " + ("offset " + _fmt_ns(g.pps_offset_ns, signed=True)
                               if g.pps_offset_ns is not None else "not seen"))
        if g.toff_ns is not None:
            parts.append(f"TOFF {_fmt_ns(g.toff_ns, signed=True)}")
        lines.append(f"gpsd          {', '.join(parts)}" + (f" ({g.device})" if g.device else ""))
    k = report.kernel
    if k is not None:
        lines.append(f"kernel        {'synchronised' if k.synchronised else 'unsynchronised'}, "
                     f"maxerror {_fmt_ns(k.maxerror_ns)}, esterror {_fmt_ns(k.esterror_ns)}")
    c = report.chrony
    if c is not None:
        lines.append(f"chrony        freq {c.frequency_ppm:+.3f} ppm, skew {c.skew_ppm:.3f} ppm, "
                     f"last update {c.update_interval_s:.1f} s interval")
    if s.reason:
        lines.append(f"reason        {s.reason}")
    # The reason already quotes the readers' failures; list only what it left out.
    lines.extend(f"note          {n}" for n in report.notes if n not in s.reason)
    return "\n".join(lines)


def _gpsd_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        host, port = text, str(GPSD_PORT)
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT], got {text!r}") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {number}")
    return host.strip("[]"), number


def clock_main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    """``semalign clock``: print this host's sync state; exit 0 if synchronised, else 1."""
    p = argparse.ArgumentParser(
        prog="semalign clock",
        description="Show how well this host's CLOCK_REALTIME is synchronised "
                    "(chrony, kernel, gpsd) and the error bound B - A figures carry.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--chronyc", default="chronyc", help="chronyc binary (default: chronyc)")
    p.add_argument("--chrony-socket", metavar="PATH|HOST",
                   help="chronyd command socket or host for chronyc -h (default: chronyc's)")
    p.add_argument("--gpsd", type=_gpsd_address, default=("127.0.0.1", GPSD_PORT),
                   metavar="HOST[:PORT]", help=f"gpsd to ask (default 127.0.0.1:{GPSD_PORT})")
    p.add_argument("--no-gpsd", action="store_true", help="do not ask gpsd")
    p.add_argument("--no-chrony", action="store_true", help="do not ask chrony")
    p.add_argument("--no-kernel", action="store_true", help="do not read adjtimex")
    p.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS",
                   help="per-reader timeout (default 1.0)")
    args = p.parse_args(argv)
    if not 0 < args.timeout <= 30:
        p.error(f"--timeout must be in (0, 30], got {args.timeout}")
    host, port = args.gpsd
    config = SyncConfig(
        chronyc=args.chronyc,
        chrony_socket=args.chrony_socket,
        use_chrony=not args.no_chrony,
        use_kernel=not args.no_kernel,
        gpsd_host=None if args.no_gpsd else host,
        gpsd_port=port,
        command_timeout_s=args.timeout,
        socket_timeout_s=args.timeout,
        gpsd_wait_s=max(args.timeout, 1.2),
    )
    report = read_clock_report(config)
    stream = out if out is not None else sys.stdout
    if args.json:
        stream.write(json.dumps(report.to_dict(), sort_keys=True) + "\n")
    else:
        stream.write(format_report(report) + "\n")
    return 0 if report.state.synchronised else 1


if __name__ == "__main__":
    raise SystemExit(clock_main())


# --- daemons -------------------------------------------------------------------------------

#: How often the background thread wakes to check whether a reading is due.
MONITOR_TICK_S = 1.0


def daemon_sync_config(gpsd: str, chrony_socket: str | None = None) -> SyncConfig:
    """The readers a daemon uses: ``gpsd`` is ``HOST[:PORT]`` or ``off``."""
    from common.errors import ConfigError

    if gpsd.strip().lower() in ("off", "none", ""):
        return SyncConfig(chrony_socket=chrony_socket, gpsd_host=None)
    try:
        host, port = _gpsd_address(gpsd)
    except argparse.ArgumentTypeError as exc:
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
    }
