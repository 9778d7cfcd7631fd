"""The sync state of one host's CLOCK_REALTIME: source, synchronised or not, error bound.

It travels between TX and RX in msgpack metadata, so ``from_dict`` treats its input as untrusted.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from common.errors import BadSyncMessage

#: Largest magnitude any nanosecond field may carry: msgpack's int64, about 292 years.
MAX_NS = 2**63 - 1
#: Longest free-text field accepted from a peer; a reason or a reference name is short.
MAX_TEXT = 256


def clip_text(text: str) -> str:
    """Make free text fit the wire: printable and at most ``MAX_TEXT`` characters."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= MAX_TEXT else clean[: MAX_TEXT - 1] + "…"


class SyncSource(enum.Enum):
    """What disciplines the clock; only the first two are GPS-grade."""

    GPS_PPS = "gps+pps"
    GPS = "gps"
    NTP = "ntp"
    NONE = "none"

    @property
    def gps_grade(self) -> bool:
        return self in (SyncSource.GPS_PPS, SyncSource.GPS)


class Leap(enum.Enum):
    """Leap status as chrony and the kernel report it."""

    NORMAL = "normal"
    INSERT = "insert"
    DELETE = "delete"
    UNSYNCHRONISED = "unsynchronised"


class Reader(enum.Enum):
    """Which reader produced the figures of a ``SyncState``."""

    CHRONY = "chrony"
    KERNEL = "kernel"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class GpsStatus:
    """What gpsd sees: fix and time from TPV, clock offsets from TOFF and PPS.

    Offsets are this host's CLOCK_REALTIME minus GPS time (positive: the clock is ahead).
    """

    mode: int  # gpsd TPV mode: 0 unknown, 1 no fix, 2 2D, 3 3D
    fix_time_ns: int | None  # TPV time, ns since the epoch (UTC)
    toff_ns: int | None  # at the serial time message: coarse (tens of ms of latency)
    pps_offset_ns: int | None  # at the PPS edge: precise to microseconds or better
    device: str

    def __post_init__(self) -> None:
        if not 0 <= self.mode <= 3:
            raise ValueError(f"gpsd mode must be 0..3, got {self.mode}")
        _check_text("device", self.device)

    @property
    def has_3d_fix(self) -> bool:
        return self.mode == 3

    @property
    def has_pps(self) -> bool:
        return self.pps_offset_ns is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "fix_time_ns": self.fix_time_ns,
            "toff_ns": self.toff_ns,
            "pps_offset_ns": self.pps_offset_ns,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, obj: object) -> GpsStatus:
        d = _mapping(obj, "gps", _GPS_KEYS)
        mode = _int(d, "gps", "mode", lo=0, hi=3)
        return cls(
            mode=mode,
            fix_time_ns=_opt_int(d, "gps", "fix_time_ns"),
            toff_ns=_opt_int(d, "gps", "toff_ns"),
            pps_offset_ns=_opt_int(d, "gps", "pps_offset_ns"),
            device=_text(d, "gps", "device"),
        )


@dataclass(frozen=True, slots=True)
class SyncState:
    """One reading of this host's clock discipline.

    Invariant: ``synchronised`` iff ``source`` is not NONE iff ``bound_ns`` is set, so an
    unsynchronised state can never carry a figure that looks GPS-grade.
    ``offset_ns`` is the clock minus its reference (positive: ahead), as chrony estimates it.
    """

    source: SyncSource
    synchronised: bool
    bound_ns: int | None
    offset_ns: int | None
    reader: Reader
    reference: str
    stratum: int | None
    leap: Leap
    root_delay_ns: int | None
    root_dispersion_ns: int | None
    gps: GpsStatus | None
    read_at_ns: int
    reason: str

    def __post_init__(self) -> None:
        if self.synchronised != (self.source is not SyncSource.NONE):
            raise ValueError(f"synchronised={self.synchronised} contradicts source {self.source.value}")
        if self.synchronised != (self.bound_ns is not None):
            raise ValueError("a bound is given exactly when the clock is synchronised")
        if self.bound_ns is not None and self.bound_ns < 0:
            raise ValueError(f"bound must be >= 0, got {self.bound_ns}")
        for name in ("root_delay_ns", "root_dispersion_ns"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        # Checked here too so that every state this host builds is one its peer accepts.
        _check_text("reference", self.reference)
        _check_text("reason", self.reason)

    @property
    def gps_grade(self) -> bool:
        return self.synchronised and self.source.gps_grade

    @classmethod
    def unsynchronised(
        cls,
        reason: str,
        *,
        read_at_ns: int,
        reader: Reader = Reader.NONE,
        gps: GpsStatus | None = None,
        offset_ns: int | None = None,
        reference: str = "",
        stratum: int | None = None,
    ) -> SyncState:
        """The state to report when no reader could vouch for the clock."""
        return cls(
            source=SyncSource.NONE,
            synchronised=False,
            bound_ns=None,
            offset_ns=offset_ns,
            reader=reader,
            reference=reference,
            stratum=stratum,
            leap=Leap.UNSYNCHRONISED,
            root_delay_ns=None,
            root_dispersion_ns=None,
            gps=gps,
            read_at_ns=read_at_ns,
            reason=clip_text(reason),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, int, bool, None, dict), ready for msgpack or JSON."""
        return {
            "source": self.source.value,
            "synchronised": self.synchronised,
            "bound_ns": self.bound_ns,
            "offset_ns": self.offset_ns,
            "reader": self.reader.value,
            "reference": self.reference,
            "stratum": self.stratum,
            "leap": self.leap.value,
            "root_delay_ns": self.root_delay_ns,
            "root_dispersion_ns": self.root_dispersion_ns,
            "gps": None if self.gps is None else self.gps.to_dict(),
            "read_at_ns": self.read_at_ns,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, obj: object) -> SyncState:
        """Validate a peer's dict; any defect raises ``BadSyncMessage`` naming the field."""
        d = _mapping(obj, "sync", _STATE_KEYS)
        gps_obj = d["gps"]
        try:
            state = cls(
                source=_enum(d, "sync", "source", SyncSource),
                synchronised=_bool(d, "sync", "synchronised"),
                bound_ns=_opt_int(d, "sync", "bound_ns", lo=0),
                offset_ns=_opt_int(d, "sync", "offset_ns"),
                reader=_enum(d, "sync", "reader", Reader),
                reference=_text(d, "sync", "reference"),
                stratum=_opt_int(d, "sync", "stratum", lo=0, hi=16),
                leap=_enum(d, "sync", "leap", Leap),
                root_delay_ns=_opt_int(d, "sync", "root_delay_ns", lo=0),
                root_dispersion_ns=_opt_int(d, "sync", "root_dispersion_ns", lo=0),
                gps=None if gps_obj is None else GpsStatus.from_dict(gps_obj),
                read_at_ns=_int(d, "sync", "read_at_ns", lo=0),
                reason=_text(d, "sync", "reason"),
            )
        except ValueError as exc:
            # The fields were each well-formed but contradict one another.
            raise BadSyncMessage(f"sync state is inconsistent: {exc}") from exc
        return state


def _check_text(name: str, value: str) -> None:
    if len(value) > MAX_TEXT or not value.isprintable():
        raise ValueError(f"{name} must be printable and at most {MAX_TEXT} characters")


_GPS_KEYS = frozenset({"mode", "fix_time_ns", "toff_ns", "pps_offset_ns", "device"})
_STATE_KEYS = frozenset(
    {
        "source", "synchronised", "bound_ns", "offset_ns", "reader", "reference", "stratum",
        "leap", "root_delay_ns", "root_dispersion_ns", "gps", "read_at_ns", "reason",
    }
)


# Validation helpers shared with common.timesync.latency; each names the field it rejects
# as ``what.key`` so a peer's operator can find the defect.

E = TypeVar("E", bound=enum.Enum)


def _mapping(obj: object, what: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise BadSyncMessage(f"{what} must be a map, got {type(obj).__name__}")
    have = set(obj)
    if have != keys:
        missing = sorted(keys - have)
        extra = sorted(str(k)[:40] for k in have - keys)
        raise BadSyncMessage(f"{what} fields: missing {missing}, unexpected {extra}")
    return obj


def _int(d: Mapping[str, Any], what: str, key: str, *, lo: int = -MAX_NS, hi: int = MAX_NS) -> int:
    value = d[key]
    # bool is an int subclass; a flag where a count belongs is still malformed.
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadSyncMessage(f"{what}.{key} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadSyncMessage(f"{what}.{key} must be in [{lo}, {hi}], got {value}")
    return value


def _opt_int(
    d: Mapping[str, Any], what: str, key: str, *, lo: int = -MAX_NS, hi: int = MAX_NS
) -> int | None:
    if d[key] is None:
        return None
    return _int(d, what, key, lo=lo, hi=hi)


def _bool(d: Mapping[str, Any], what: str, key: str) -> bool:
    value = d[key]
    if not isinstance(value, bool):
        raise BadSyncMessage(f"{what}.{key} must be true or false, got {type(value).__name__}")
    return value


def _text(d: Mapping[str, Any], what: str, key: str) -> str:
    value = d[key]
    if not isinstance(value, str):
        raise BadSyncMessage(f"{what}.{key} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT or not value.isprintable():
        raise BadSyncMessage(f"{what}.{key} must be printable and at most {MAX_TEXT} characters")
    return value


def _enum(d: Mapping[str, Any], what: str, key: str, kind: type[E]) -> E:
    value = d[key]
    try:
        return kind(value)
    except (ValueError, TypeError):
        allowed = ", ".join(str(m.value) for m in kind)
        raise BadSyncMessage(
            f"{what}.{key} must be one of {allowed}, got {str(value)[:40]!r}"
        ) from None
