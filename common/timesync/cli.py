"""``semalign clock``: print this host's clock sync state (chrony, the kernel, gpsd).

Human-readable by default, ``--json`` for scripts; the readings come from ``common.timesync.readers``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TextIO

from common.clock import NS_PER_S
from common.timesync.readers import (
    GPSD_PORT,
    ClockReport,
    SyncConfig,
    gpsd_address,
    read_clock_report,
)
from common.timesync.state import Reader


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
    try:
        return gpsd_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
