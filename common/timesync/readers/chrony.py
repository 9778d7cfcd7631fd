"""The chrony reader: run ``chronyc -c tracking`` and parse its one CSV line.

chrony is the authority when it answers: it knows its reference and bounds the clock's error.
"""

from __future__ import annotations

import ipaddress
import math
import subprocess
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from common.clock import NS_PER_S
from common.errors import TimeSyncError
from common.timesync.readers.config import SyncConfig
from common.timesync.state import Leap, SyncSource

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
