"""The kernel clock reader: libc ``adjtimex`` with ``modes = 0``, a pure read needing no privilege.

It says whether *some* daemon disciplines the clock and bounds the error by ``maxerror``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Any

from common.errors import TimeSyncError
from common.timesync.state import Leap

# <sys/timex.h>, Linux: clock states returned by adjtimex() and the status bits we look at.
TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT, TIME_ERROR = range(6)
STA_PLL = 0x0001
STA_PPSFREQ = 0x0002
STA_UNSYNC = 0x0040
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
