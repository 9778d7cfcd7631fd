"""The gpsd reader: fix, GPS time and this clock's offsets from TPV, TOFF and PPS reports.

gpsd speaks JSON lines over TCP; every report is untrusted and bounded in size.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from common.clock import NS_PER_S, monotonic_ns
from common.errors import TimeSyncError
from common.timesync.state import GpsStatus, clip_text

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
