"""Readers of the clock's discipline: chrony (``chronyc -c tracking``), the kernel, gpsd.

Each reader raises ``TimeSyncError`` on failure; ``read_clock_report`` combines them and never raises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import json
import math
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from common.clock import NS_PER_S, monotonic_ns, realtime_ns
from common.timesync.state import (
    GpsStatus,
    Leap,
    Reader,
    SyncSource,
    SyncState,
    TimeSyncError,
    clip_text,
)

# --- configuration -------------------------------------------------------------------------

#: gpsd's registered TCP port.
GPSD_PORT = 2947


def gpsd_address(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[v6]:PORT`` too) as a host and a port; ``ValueError`` says what is wrong."""
    host, _, port = text.rpartition(":")
    if not host:
        host, port = text, str(GPSD_PORT)
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"expected HOST[:PORT], got {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"port must be 1..65535, got {number}")
    return host.strip("[]"), number


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Where the readers look and how long they may take (each bounded near one second)."""

    chronyc: str = "chronyc"
    #: ``chronyc -h`` target: a unix socket path or a host; None keeps chronyc's default.
    chrony_socket: str | None = None
    use_chrony: bool = True
    use_kernel: bool = True
    #: None disables the gpsd reader.
    gpsd_host: str | None = "127.0.0.1"
    gpsd_port: int = GPSD_PORT
    command_timeout_s: float = 1.0
    socket_timeout_s: float = 1.0
    #: How long to listen to gpsd for TPV, TOFF and PPS; PPS comes once a second.
    gpsd_wait_s: float = 1.2

    def __post_init__(self) -> None:
        for name in ("command_timeout_s", "socket_timeout_s", "gpsd_wait_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 30):
                raise ValueError(f"{name} must be in (0, 30] seconds, got {value}")
        if not 0 < self.gpsd_port < 65536:
            raise ValueError(f"gpsd_port must be 1..65535, got {self.gpsd_port}")


# --- chrony --------------------------------------------------------------------------------

#: ``chronyc -c tracking`` prints one CSV line of this many fields (chrony 3.x and 4.x).
CHRONY_TRACKING_FIELDS = 14
#: Reference ID chrony shows while serving its own clock (``local stratum``): 127.127.1.1.
CHRONY_LOCAL_REFID = 0x7F7F0101
#: Refclock names (refid prefixes) taken to be a GPS receiver; PPS is checked first.
GPS_REFCLOCK_PREFIXES = ("GPS", "NMEA", "GPSD", "SHM", "SOC")
PPS_REFCLOCK_PREFIX = "PPS"

_CHRONY_LEAP = {
    "Normal": Leap.NORMAL,
    "Insert second": Leap.INSERT,
    "Delete second": Leap.DELETE,
    "Not synchronised": Leap.UNSYNCHRONISED,
}


@dataclass(frozen=True, slots=True)
class ChronyTracking:
    """One ``chronyc -c tracking`` line, in nanoseconds where chrony gives seconds.

    ``offset_ns`` is the system clock minus chrony's estimate of true time (positive: ahead);
    chrony's CSV prints the opposite sign ("slow of NTP time" is positive).
    """

    ref_id: int
    reference: str
    stratum: int
    ref_time_ns: int
    offset_ns: int
    last_offset_ns: int
    rms_offset_ns: int
    frequency_ppm: float
    residual_freq_ppm: float
    skew_ppm: float
    root_delay_ns: int
    root_dispersion_ns: int
    update_interval_s: float
    leap: Leap

    @property
    def bound_ns(self) -> int:
        return chrony_bound_ns(self.offset_ns, self.root_delay_ns, self.root_dispersion_ns)

    @property
    def source(self) -> SyncSource:
        if self.leap is Leap.UNSYNCHRONISED or not 1 <= self.stratum <= 15:
            return SyncSource.NONE
        return classify_reference(self.ref_id, self.reference)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref_id": f"{self.ref_id:08X}",
            "reference": self.reference,
            "stratum": self.stratum,
            "ref_time_ns": self.ref_time_ns,
            "offset_ns": self.offset_ns,
            "last_offset_ns": self.last_offset_ns,
            "rms_offset_ns": self.rms_offset_ns,
            "frequency_ppm": self.frequency_ppm,
            "residual_freq_ppm": self.residual_freq_ppm,
            "skew_ppm": self.skew_ppm,
            "root_delay_ns": self.root_delay_ns,
            "root_dispersion_ns": self.root_dispersion_ns,
            "update_interval_s": self.update_interval_s,
            "leap": self.leap.value,
        }


def chrony_bound_ns(offset_ns: int, root_delay_ns: int, root_dispersion_ns: int) -> int:
    """Worst-case error of the system clock against UTC, per chrony's documentation.

    ``|offset| + root dispersion + root delay / 2``: the offset is what chrony has not yet
    slewed away, the dispersion its accumulated uncertainty, and half the round trip to the
    stratum-0 reference the most an asymmetric path can hide. Rounded up, never down.
    """
    if root_delay_ns < 0 or root_dispersion_ns < 0:
        raise ValueError("root delay and dispersion are never negative")
    return abs(offset_ns) + root_dispersion_ns + (root_delay_ns + 1) // 2


def classify_reference(ref_id: int, reference: str) -> SyncSource:
    """Map chrony's reference to a source; anything not a known GPS refclock is ``ntp``.

    An NTP server appears as its IP address; a refclock as its refid (``PPS``, ``GPS``…).
    A refclock of unknown kind (PHC, …) is labelled ``ntp`` so it is never taken as GPS-grade.
    """
    if ref_id in (0, CHRONY_LOCAL_REFID):
        return SyncSource.NONE
    try:
        ipaddress.ip_address(reference)
    except ValueError:
        pass
    else:
        return SyncSource.NTP
    name = reference.strip().upper()
    if name.startswith(PPS_REFCLOCK_PREFIX):
        return SyncSource.GPS_PPS
    if name.startswith(GPS_REFCLOCK_PREFIXES):
        return SyncSource.GPS
    return SyncSource.NTP


def _seconds_ns(text: str, field: str) -> int:
    # Decimal keeps chrony's nine printed digits exact; float would blur ref_time by ~200 ns.
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise TimeSyncError(f"chrony field {field} is not a number: {text[:40]!r}") from None
    if not value.is_finite():
        raise TimeSyncError(f"chrony field {field} is not finite: {text[:40]!r}")
    return int((value * NS_PER_S).to_integral_value())


def _finite(text: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TimeSyncError(f"chrony field {field} is not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise TimeSyncError(f"chrony field {field} is not finite: {text[:40]!r}")
    return value


def parse_chrony_tracking(line: str) -> ChronyTracking:
    """Parse the CSV line of ``chronyc -c tracking``; raise ``TimeSyncError`` if malformed."""
    fields = line.strip().split(",")
    if len(fields) != CHRONY_TRACKING_FIELDS:
        raise TimeSyncError(
            f"chronyc tracking has {len(fields)} fields, expected {CHRONY_TRACKING_FIELDS}: "
            f"{line.strip()[:120]!r}"
        )
    try:
        ref_id = int(fields[0], 16)
        stratum = int(fields[2])
    except ValueError:
        raise TimeSyncError(f"chronyc tracking reference is malformed: {line[:120]!r}") from None
    leap = _CHRONY_LEAP.get(fields[13])
    if leap is None:
        raise TimeSyncError(f"chronyc tracking leap status {fields[13][:40]!r} is unknown")
    root_delay = _seconds_ns(fields[10], "root delay")
    root_dispersion = _seconds_ns(fields[11], "root dispersion")
    if root_delay < 0 or root_dispersion < 0:
        raise TimeSyncError("chronyc reported a negative root delay or dispersion")
    return ChronyTracking(
        ref_id=ref_id,
        reference=fields[1],
        stratum=stratum,
        ref_time_ns=_seconds_ns(fields[3], "ref time"),
        # chrony's "System time" is true time minus the clock; we keep clock minus true.
        offset_ns=-_seconds_ns(fields[4], "system time"),
        last_offset_ns=_seconds_ns(fields[5], "last offset"),
        rms_offset_ns=_seconds_ns(fields[6], "rms offset"),
        frequency_ppm=_finite(fields[7], "frequency"),
        residual_freq_ppm=_finite(fields[8], "residual freq"),
        skew_ppm=_finite(fields[9], "skew"),
        root_delay_ns=root_delay,
        root_dispersion_ns=root_dispersion,
        update_interval_s=_finite(fields[12], "update interval"),
        leap=leap,
    )


def read_chrony(config: SyncConfig) -> ChronyTracking:
    """Run ``chronyc -c tracking`` (bounded by ``command_timeout_s``) and parse it."""
    argv = [config.chronyc, "-c"]
    if config.chrony_socket is not None:
        argv += ["-h", config.chrony_socket]
    argv.append("tracking")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=config.command_timeout_s, check=False
        )
    except FileNotFoundError:
        raise TimeSyncError(f"{config.chronyc} not found (is chrony installed?)") from None
    except subprocess.TimeoutExpired:
        raise TimeSyncError(f"chronyc gave no answer within {config.command_timeout_s} s") from None
    except OSError as exc:
        raise TimeSyncError(f"cannot run {config.chronyc}: {exc}") from exc
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise TimeSyncError(f"chronyc exited {done.returncode}: {said[:160]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise TimeSyncError(f"chronyc tracking printed {len(lines)} lines, expected 1")
    return parse_chrony_tracking(lines[0])


# --- kernel (adjtimex, read only) ----------------------------------------------------------

# <sys/timex.h>, Linux: clock states returned by adjtimex() and the status bits we look at.
TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT, TIME_ERROR = range(6)
STA_PLL = 0x0001
STA_PPSFREQ = 0x0002
STA_PPSTIME = 0x0004
STA_UNSYNC = 0x0040
STA_PPSSIGNAL = 0x0100
STA_NANO = 0x2000


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h> (Linux; 208 bytes on LP64). Only read here."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    )


@dataclass(frozen=True, slots=True)
class KernelClock:
    """The kernel's view of its clock discipline, from ``adjtimex`` with ``modes = 0``."""

    state: int  # TIME_OK … TIME_ERROR
    status: int  # STA_* bits
    maxerror_ns: int  # grows 500 µs/s until a daemon resets it; 16 s means "unknown"
    esterror_ns: int
    tai_offset_s: int

    @property
    def synchronised(self) -> bool:
        return not self.status & STA_UNSYNC and self.state != TIME_ERROR

    @property
    def leap(self) -> Leap:
        if not self.synchronised:
            return Leap.UNSYNCHRONISED
        return {TIME_INS: Leap.INSERT, TIME_DEL: Leap.DELETE}.get(self.state, Leap.NORMAL)

    @property
    def pps_disciplined(self) -> bool:
        """Kernel hardpps in use (rare: chrony normally disciplines from PPS in user space)."""
        return bool(self.status & STA_PPSTIME and self.status & STA_PPSSIGNAL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "status": self.status,
            "synchronised": self.synchronised,
            "maxerror_ns": self.maxerror_ns,
            "esterror_ns": self.esterror_ns,
            "tai_offset_s": self.tai_offset_s,
        }


def kernel_clock_from_timex(state: int, status: int, maxerror_us: int, esterror_us: int,
                            tai: int = 0) -> KernelClock:
    """Build a ``KernelClock`` from raw ``adjtimex`` figures (maxerror and esterror are in µs)."""
    if not TIME_OK <= state <= TIME_ERROR:
        raise TimeSyncError(f"adjtimex returned unknown clock state {state}")
    return KernelClock(
        state=state,
        status=status,
        maxerror_ns=max(0, maxerror_us) * 1000,
        esterror_ns=max(0, esterror_us) * 1000,
        tai_offset_s=tai,
    )


def read_kernel_clock() -> KernelClock:
    """Call libc ``adjtimex`` with ``modes = 0``: a pure read, needing no privilege."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError) as exc:
        raise TimeSyncError(f"libc adjtimex is unavailable: {exc}") from exc
    adjtimex.argtypes = (ctypes.POINTER(_Timex),)
    adjtimex.restype = ctypes.c_int
    tx = _Timex()
    tx.modes = 0  # zero modes: the kernel changes nothing and only fills the struct in
    state = adjtimex(ctypes.byref(tx))
    if state < 0:
        errno = ctypes.get_errno()
        raise TimeSyncError(f"adjtimex failed: errno {errno}")
    return kernel_clock_from_timex(state, tx.status, tx.maxerror, tx.esterror, tx.tai)


# --- gpsd ----------------------------------------------------------------------------------

#: Sent on connect: stream JSON with PPS/TOFF reports, then ask for the last fix at once.
GPSD_WATCH = b'?WATCH={"enable":true,"json":true,"pps":true};?POLL;\n'
#: gpsd's reports are short; a longer line or a longer session is not gpsd talking.
GPSD_MAX_LINE = 64 * 1024
GPSD_MAX_BYTES = 1024 * 1024


def parse_gpsd_time(value: object) -> int:
    """gpsd TPV ``time``: ISO 8601 UTC (``2024-05-01T12:00:00.000Z``) or, before 3.20, seconds."""
    if isinstance(value, bool):
        raise TimeSyncError("gpsd time is a bool")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise TimeSyncError("gpsd time is not finite")
        return round(value * NS_PER_S)
    if not isinstance(value, str) or not value.endswith("Z"):
        raise TimeSyncError(f"gpsd time {str(value)[:40]!r} is not ISO 8601 UTC")
    whole, _, frac = value[:-1].partition(".")
    try:
        moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise TimeSyncError(f"gpsd time {value[:40]!r} is not ISO 8601 UTC") from None
    if frac and not (frac.isdigit() and len(frac) <= 9):
        raise TimeSyncError(f"gpsd time {value[:40]!r} has a malformed fraction")
    return int(moment.timestamp()) * NS_PER_S + int(frac.ljust(9, "0") or 0)


def _stamp_pair_offset(report: Mapping[str, Any]) -> int | None:
    """TOFF and PPS reports: clock_* (this host) minus real_* (GPS), in ns."""
    try:
        real = int(report["real_sec"]) * NS_PER_S + int(report["real_nsec"])
        clock = int(report["clock_sec"]) * NS_PER_S + int(report["clock_nsec"])
    except (KeyError, TypeError, ValueError):
        return None
    return clock - real


def gps_status_from_reports(reports: Iterable[Mapping[str, Any]]) -> GpsStatus | None:
    """Fold gpsd JSON reports (in arrival order) into one status; None if no TPV was seen.

    The newest TPV gives the mode (a POLL contributes its best-mode entry); the newest TPV
    that carries a time gives the time, since gpsd's first TPV of a session may have none.
    """
    tpv: Mapping[str, Any] | None = None
    fix_time: int | None = None
    toff: int | None = None
    pps: int | None = None
    device = ""
    for report in reports:
        kind = report.get("class")
        latest: list[Mapping[str, Any]] = []
        if kind == "POLL":
            entries = [t for t in report.get("tpv") or () if isinstance(t, Mapping)]
            if entries:
                latest = [max(entries, key=_mode)]
        elif kind == "TPV":
            latest = [report]
        elif kind == "TOFF":
            toff = _stamp_pair_offset(report)
        elif kind == "PPS":
            pps = _stamp_pair_offset(report)
        elif kind == "DEVICES":
            paths = [d.get("path") for d in report.get("devices") or () if isinstance(d, Mapping)]
            device = ",".join(p for p in paths if isinstance(p, str))[:128]
        for entry in latest:
            tpv = entry
            if "time" in entry:
                try:
                    fix_time = parse_gpsd_time(entry["time"])
                except TimeSyncError:
                    fix_time = None  # an unparsable time is no time, not an error
    if tpv is None:
        return None
    dev = tpv.get("device")
    return GpsStatus(
        mode=_mode(tpv),
        fix_time_ns=fix_time,
        toff_ns=toff,
        pps_offset_ns=pps,
        device=clip_text(dev[:128]) if isinstance(dev, str) else clip_text(device),
    )


def _mode(tpv: Mapping[str, Any]) -> int:
    mode = tpv.get("mode")
    return mode if isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 3 else 0


def read_gpsd(host: str, port: int, *, timeout_s: float = 1.0, wait_s: float = 1.2) -> GpsStatus:
    """Ask gpsd for its fix and listen up to ``wait_s`` for TOFF and PPS reports.

    Stops early once it has a TPV, a TOFF and a PPS, or as soon as gpsd says it has no device.
    """
    deadline = monotonic_ns() + int(wait_s * NS_PER_S)
    reports: list[dict[str, Any]] = []
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(GPSD_WATCH)
            buf = b""
            total = 0
            while True:
                left = (deadline - monotonic_ns()) / NS_PER_S
                if left <= 0 or _gpsd_done(reports):
                    break
                sock.settimeout(min(left, timeout_s))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                total += len(chunk)
                if total > GPSD_MAX_BYTES:
                    raise TimeSyncError(f"gpsd sent more than {GPSD_MAX_BYTES} bytes")
                buf += chunk
                *lines, buf = buf.split(b"\n")
                if len(buf) > GPSD_MAX_LINE:
                    raise TimeSyncError(f"gpsd sent a line longer than {GPSD_MAX_LINE} bytes")
                for line in lines:
                    report = _json_line(line)
                    if report is not None:
                        reports.append(report)
    except OSError as exc:
        raise TimeSyncError(f"gpsd at {host}:{port}: {exc.strerror or exc}") from exc
    if not any(r.get("class") == "VERSION" for r in reports):
        raise TimeSyncError(f"{host}:{port} did not greet like gpsd within {wait_s} s")
    status = gps_status_from_reports(reports)
    if status is None:
        devices = _device_count(reports)
        return GpsStatus(mode=0, fix_time_ns=None, toff_ns=None, pps_offset_ns=None,
                         device="" if devices == 0 else f"{devices} device(s), no TPV yet")
    return status


def _json_line(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None  # gpsd may interleave non-JSON (e.g. NMEA) if another watch asked for it
    return obj if isinstance(obj, dict) else None


def _device_count(reports: list[dict[str, Any]]) -> int | None:
    for report in reversed(reports):
        if report.get("class") == "DEVICES":
            devices = report.get("devices")
            return len(devices) if isinstance(devices, list) else 0
    return None


def _gpsd_done(reports: list[dict[str, Any]]) -> bool:
    if not any(r.get("class") == "POLL" for r in reports):
        return False
    if _device_count(reports) == 0:
        return True
    kinds = {r.get("class") for r in reports}
    return {"TOFF", "PPS"} <= kinds and ("TPV" in kinds or _poll_has_tpv(reports))


def _poll_has_tpv(reports: list[dict[str, Any]]) -> bool:
    return any(r.get("class") == "POLL" and r.get("tpv") for r in reports)


# --- combining -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockReport:
    """Everything the readers saw, and the ``SyncState`` derived from it."""

    state: SyncState
    chrony: ChronyTracking | None
    kernel: KernelClock | None
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.to_dict(),
            "chrony": None if self.chrony is None else self.chrony.to_dict(),
            "kernel": None if self.kernel is None else self.kernel.to_dict(),
            "notes": list(self.notes),
        }


def state_from_readings(
    chrony: ChronyTracking | None,
    kernel: KernelClock | None,
    gps: GpsStatus | None,
    *,
    read_at_ns: int,
    notes: Iterable[str] = (),
) -> SyncState:
    """Decide source, synchronisation and bound: chrony first, else the kernel, else none.

    chrony is authoritative when it answers: it knows its reference. The kernel alone only
    says *some* daemon disciplines the clock, so it earns ``ntp``, never a GPS label.
    """
    said = list(notes)
    if gps is not None and gps.mode < 2:
        said.append("gpsd: no fix")
    if chrony is not None:
        source = chrony.source
        if source is SyncSource.NONE:
            why = (
                "chrony serves its local clock (local stratum), not a real reference"
                if chrony.ref_id == CHRONY_LOCAL_REFID
                else "chrony has not selected a source"
            )
            return SyncState.unsynchronised(
                "; ".join([why, *said]), read_at_ns=read_at_ns, reader=Reader.CHRONY, gps=gps,
                reference=clip_text(chrony.reference), stratum=chrony.stratum,
            )
        if kernel is not None and not kernel.synchronised:
            # chrony still measures this clock correctly, so its bound stands; say why the
            # kernel disagrees so nobody mistakes it for a fault.
            said.append("kernel flags the clock unsynchronised: chronyd is not steering it (-x?)")
        return SyncState(
            source=source,
            synchronised=True,
            bound_ns=chrony.bound_ns,
            offset_ns=chrony.offset_ns,
            reader=Reader.CHRONY,
            reference=clip_text(chrony.reference),
            stratum=chrony.stratum,
            leap=chrony.leap,
            root_delay_ns=chrony.root_delay_ns,
            root_dispersion_ns=chrony.root_dispersion_ns,
            gps=gps,
            read_at_ns=read_at_ns,
            reason=clip_text("; ".join(said)),
        )
    if kernel is not None and kernel.synchronised:
        said.insert(0, "kernel reports a disciplined clock but chrony is not answering; its "
                       "reference is unknown, so the label is ntp and the bound is maxerror")
        return SyncState(
            source=SyncSource.NTP,
            synchronised=True,
            bound_ns=kernel.maxerror_ns,
            offset_ns=None,
            reader=Reader.KERNEL,
            reference="",
            stratum=None,
            leap=kernel.leap,
            root_delay_ns=None,
            root_dispersion_ns=None,
            gps=gps,
            read_at_ns=read_at_ns,
            reason=clip_text("; ".join(said)),
        )
    if kernel is not None:
        said.append("kernel: clock unsynchronised (STA_UNSYNC)")
    return SyncState.unsynchronised(
        "; ".join(said) or "no sync reader answered", read_at_ns=read_at_ns, gps=gps,
        reader=Reader.KERNEL if kernel is not None else Reader.NONE,
    )


def read_clock_report(config: SyncConfig | None = None) -> ClockReport:
    """Run every enabled reader and combine; failures become notes, never exceptions."""
    cfg = config if config is not None else SyncConfig()
    read_at = realtime_ns()
    notes: list[str] = []
    chrony: ChronyTracking | None = None
    kernel: KernelClock | None = None
    gps: GpsStatus | None = None
    try:
        if cfg.use_chrony:
            try:
                chrony = read_chrony(cfg)
            except TimeSyncError as exc:
                notes.append(f"chrony: {exc}")
        if cfg.use_kernel:
            try:
                kernel = read_kernel_clock()
            except TimeSyncError as exc:
                notes.append(f"kernel: {exc}")
        if cfg.gpsd_host is not None:
            try:
                gps = read_gpsd(cfg.gpsd_host, cfg.gpsd_port, timeout_s=cfg.socket_timeout_s,
                                wait_s=cfg.gpsd_wait_s)
            except TimeSyncError as exc:
                notes.append(f"gpsd: {exc}")
        state = state_from_readings(chrony, kernel, gps, read_at_ns=read_at, notes=notes)
    except Exception as exc:
        # Deliberately broad: a daemon's periodic clock log must never take the daemon down.
        reason = f"sync readers failed unexpectedly: {type(exc).__name__}: {exc}"[:240]
        notes.append(reason)
        state = SyncState.unsynchronised(reason, read_at_ns=read_at)
    return ClockReport(state=state, chrony=chrony, kernel=kernel, notes=tuple(notes))


def read_sync_state(config: SyncConfig | None = None) -> SyncState:
    """This host's ``SyncState``; never raises (a failure is an unsynchronised state)."""
    return read_clock_report(config).state
