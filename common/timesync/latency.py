"""Cross-host latency B - A with an honest bound: both sync states, or an NTP-style estimate.

Also the clock probe/reply bodies TX and RX exchange over the control socket to estimate it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from common.clock import NS_PER_S
from common.errors import BadSyncMessage
from common.timesync.state import (
    MAX_NS,
    SyncState,
    _bool,
    _enum,
    _int,
    _mapping,
    _opt_int,
)

#: Worst frequency error of a disciplined clock between two readings: RFC 5905's PHI.
SYNCED_DRIFT_PPM = 15
#: Worst frequency error of a free-running clock: the kernel's MAXFREQ, the most any
#: discipline can correct; a crystal worse than this could not be synchronised at all.
FREE_RUNNING_DRIFT_PPM = 500
#: A sync state read longer ago than this before B is flagged stale (the monitor's
#: default period is 300 s; twice that means a refresh was missed).
MAX_SYNC_AGE_NS = 600 * NS_PER_S
#: Sequence numbers are 32-bit so they fit any msgpack int and wrap predictably.
MAX_SEQ = 2**32 - 1

Role = Literal["tx", "rx"]


# --- the four-timestamp estimator ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetEstimate:
    """An offset between two clocks from NTP-style exchanges, with its worst-case error.

    ``offset_ns`` is peer minus local as returned by ``estimate_offset`` (server minus
    client); ``estimate_rx_minus_tx`` re-orients it. Whatever the asymmetry of the path,
    the true offset lies within ``offset_ns ± bound_ns`` at ``measured_at_ns``.
    """

    offset_ns: int
    delay_ns: int
    bound_ns: int
    measured_at_ns: int  # the client's CLOCK_REALTIME when the reply arrived (t4)
    samples: int = 1
    #: The probe sequence number of the exchange this estimate rests on (None: not from a probe).
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.delay_ns < 0 or self.bound_ns < 0:
            raise ValueError("delay and bound are never negative")
        if self.samples < 1:
            raise ValueError(f"an estimate rests on at least one sample, got {self.samples}")

    def negated(self) -> OffsetEstimate:
        """The same estimate seen from the other clock (local minus peer)."""
        return dataclasses.replace(self, offset_ns=-self.offset_ns)

    def aged_bound_ns(self, at_ns: int, drift_ppm: int) -> int:
        """The bound at ``at_ns`` (client clock): the exchange's, plus what the clocks may
        have drifted apart since it, rounded up."""
        return self.bound_ns + -(-abs(at_ns - self.measured_at_ns) * drift_ppm // 1_000_000)

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset_ns": self.offset_ns,
            "delay_ns": self.delay_ns,
            "bound_ns": self.bound_ns,
            "measured_at_ns": self.measured_at_ns,
            "samples": self.samples,
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, obj: object) -> OffsetEstimate:
        # ``seq`` came later: an estimate without it (an older peer's) is still read.
        keys = _ESTIMATE_KEYS | {"seq"} if isinstance(obj, dict) and "seq" in obj else _ESTIMATE_KEYS
        d = _mapping(obj, "estimate", keys)
        return cls(
            offset_ns=_int(d, "estimate", "offset_ns"),
            delay_ns=_int(d, "estimate", "delay_ns", lo=0),
            bound_ns=_int(d, "estimate", "bound_ns", lo=0),
            measured_at_ns=_int(d, "estimate", "measured_at_ns", lo=0),
            samples=_int(d, "estimate", "samples", lo=1, hi=MAX_SEQ),
            seq=_opt_int(d, "estimate", "seq", lo=0, hi=MAX_SEQ) if "seq" in d else None,
        )


def estimate_offset(t1_ns: int, t2_ns: int, t3_ns: int, t4_ns: int) -> OffsetEstimate:
    """RFC 5905's on-wire estimate from one exchange.

    t1: client sends (client clock); t2: server receives, t3: server replies (server clock);
    t4: client receives (client clock). offset = ((t2 - t1) + (t3 - t4)) / 2 is server minus
    client; delay = (t4 - t1) - (t3 - t2). The unknown split of the delay between the two
    directions is the only error, so |error| <= delay / 2. Raises ``BadSyncMessage`` when the
    stamps are impossible (a clock stepped mid-exchange, or a forged or stale reply).
    """
    if t4_ns < t1_ns:
        raise BadSyncMessage(f"reply arrived {t1_ns - t4_ns} ns before its probe was sent")
    if t3_ns < t2_ns:
        raise BadSyncMessage(f"peer replied {t2_ns - t3_ns} ns before it received the probe")
    delay = (t4_ns - t1_ns) - (t3_ns - t2_ns)
    if delay < 0:
        raise BadSyncMessage(f"peer held the probe {-delay} ns longer than the round trip")
    twice = (t2_ns - t1_ns) + (t3_ns - t4_ns)
    # Floor division loses at most half a nanosecond: one more nanosecond in the bound covers it.
    return OffsetEstimate(offset_ns=twice // 2, delay_ns=delay, bound_ns=delay // 2 + 1,
                          measured_at_ns=t4_ns)


def best_estimate(estimates: Iterable[OffsetEstimate], *, at_ns: int | None = None,
                  drift_ppm: int = 0) -> OffsetEstimate:
    """The exchange with the least error bound at ``at_ns``: ``delay / 2 + age x drift``.

    Without ``at_ns``, NTP's clock filter: the least delay. With it, an old exchange of small
    delay loses to a newer one once the drift since it outweighs the difference in delay
    (choosing the least delay and ageing it afterwards gave bounds several times the figure
    between probes). The ageing is linear in ``at_ns`` with the same rate for every exchange,
    so the choice made at A is the one that stays best at any later B.
    """
    pool = list(estimates)
    if not pool:
        raise ValueError("best_estimate needs at least one estimate")
    if at_ns is None:
        best = min(pool, key=lambda e: (e.delay_ns, -e.measured_at_ns))
    else:
        when = at_ns
        best = min(pool, key=lambda e: (e.aged_bound_ns(when, drift_ppm), -e.measured_at_ns))
    return dataclasses.replace(best, samples=sum(e.samples for e in pool))


# --- the exchange over the control socket --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockProbe:
    """Client to server: ``seq`` and the client's CLOCK_REALTIME at send (t1)."""

    seq: int
    t1_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "t1_ns": self.t1_ns}

    @classmethod
    def from_dict(cls, obj: object) -> ClockProbe:
        d = _mapping(obj, "clock_probe", _PROBE_KEYS)
        return cls(seq=_int(d, "clock_probe", "seq", lo=0, hi=MAX_SEQ),
                   t1_ns=_int(d, "clock_probe", "t1_ns", lo=0))


@dataclass(frozen=True, slots=True)
class ClockReply:
    """Server to client: the probe echoed, the server's stamps t2/t3, its sync state."""

    seq: int
    t1_ns: int
    t2_ns: int
    t3_ns: int
    sync: SyncState

    def __post_init__(self) -> None:
        if self.t3_ns < self.t2_ns:
            raise ValueError("t3 (reply sent) precedes t2 (probe received)")

    @classmethod
    def answer(cls, probe: ClockProbe, t2_ns: int, t3_ns: int, sync: SyncState) -> ClockReply:
        """Stamp t2 on receipt and t3 as late as possible, just before serialising."""
        return cls(seq=probe.seq, t1_ns=probe.t1_ns, t2_ns=t2_ns, t3_ns=t3_ns, sync=sync)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "t1_ns": self.t1_ns,
            "t2_ns": self.t2_ns,
            "t3_ns": self.t3_ns,
            "sync": self.sync.to_dict(),
        }

    @classmethod
    def from_dict(cls, obj: object) -> ClockReply:
        d = _mapping(obj, "clock_reply", _REPLY_KEYS)
        t2 = _int(d, "clock_reply", "t2_ns", lo=0)
        t3 = _int(d, "clock_reply", "t3_ns", lo=0)
        if t3 < t2:
            raise BadSyncMessage("clock_reply.t3_ns precedes clock_reply.t2_ns")
        return cls(
            seq=_int(d, "clock_reply", "seq", lo=0, hi=MAX_SEQ),
            t1_ns=_int(d, "clock_reply", "t1_ns", lo=0),
            t2_ns=t2,
            t3_ns=t3,
            sync=SyncState.from_dict(d["sync"]),
        )


def estimate_rx_minus_tx(
    exchanges: Iterable[tuple[ClockProbe, ClockReply, int]], *, client: Role,
    at_ns: int | None = None, drift_ppm: int = 0,
) -> OffsetEstimate:
    """RX's clock minus TX's clock from (probe, reply, t4) triples: the best exchange
    (:func:`best_estimate`; at ``at_ns`` on the client's clock when given), its ``seq`` kept.

    ``client`` names the side that sent the probes. A reply that does not echo its probe's
    seq and t1 is a stale or foreign answer and raises ``BadSyncMessage``.
    """
    found: list[OffsetEstimate] = []
    for probe, reply, t4_ns in exchanges:
        if reply.seq != probe.seq or reply.t1_ns != probe.t1_ns:
            raise BadSyncMessage(
                f"clock reply (seq {reply.seq}) does not answer probe (seq {probe.seq})"
            )
        one = estimate_offset(probe.t1_ns, reply.t2_ns, reply.t3_ns, t4_ns)
        found.append(dataclasses.replace(one, seq=probe.seq))
    if not found:
        raise ValueError("estimate_rx_minus_tx needs at least one exchange")
    best = best_estimate(found, at_ns=at_ns, drift_ppm=drift_ppm)
    # estimate_offset gives server minus client; with RX as client that is TX minus RX.
    return best.negated() if client == "rx" else best


# --- the published record ------------------------------------------------------------------


class Basis(enum.Enum):
    """What a latency's bound rests on."""

    SYNCHRONISED = "synchronised"  # both clocks disciplined: bound_TX + bound_RX
    ESTIMATED = "estimated"  # at least one undisciplined, corrected by an exchange
    UNSYNCHRONISED = "unsynchronised"  # at least one undisciplined, nothing to correct it


@dataclass(frozen=True, slots=True)
class CommLatency:
    """Communication latency B - A as published: ``value_ns ± bound_ns`` and why.

    ``bound_ns`` is None when nothing bounds it. ``gps_grade`` is true only when both sides
    are synchronised to GPS; an estimated figure is never GPS-grade.
    """

    value_ns: int
    bound_ns: int | None
    raw_ns: int
    basis: Basis
    gps_grade: bool
    tx: SyncState
    rx: SyncState
    estimate: OffsetEstimate | None  # RX minus TX
    flags: tuple[str, ...]
    #: B minus the estimate's exchange (``estimate.measured_at_ns``): how long its bound was aged.
    estimate_age_ns: int | None = None

    def describe(self) -> str:
        """One line for logs: ``12.345678 ms ± 0.000150 ms [synchronised gps+pps/gps+pps]``;
        an estimated figure says where its bound comes from: ``... (exchange 12, aged 3.2 s)``."""
        value = f"{self.value_ns / 1e6:.6f} ms"
        bound = "± unbounded" if self.bound_ns is None else f"± {self.bound_ns / 1e6:.6f} ms"
        sides = f"{self.tx.source.value}/{self.rx.source.value}"
        extra = "" if not self.flags else " " + ",".join(self.flags)
        source = ""
        if self.basis is Basis.ESTIMATED and self.estimate is not None and self.estimate_age_ns is not None:
            which = "" if self.estimate.seq is None else f"exchange {self.estimate.seq}, "
            source = f" ({which}aged {self.estimate_age_ns / NS_PER_S:.1f} s)"
        return f"{value} {bound} [{self.basis.value} {sides}{extra}]{source}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "value_ns": self.value_ns,
            "bound_ns": self.bound_ns,
            "raw_ns": self.raw_ns,
            "basis": self.basis.value,
            "gps_grade": self.gps_grade,
            "tx": self.tx.to_dict(),
            "rx": self.rx.to_dict(),
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
            "flags": list(self.flags),
            "estimate_age_ns": self.estimate_age_ns,
        }

    @classmethod
    def from_dict(cls, obj: object) -> CommLatency:
        # ``estimate_age_ns`` came later: a record without it (an older peer's) is still read.
        aged = isinstance(obj, dict) and "estimate_age_ns" in obj
        d = _mapping(obj, "latency", _LATENCY_KEYS | {"estimate_age_ns"} if aged else _LATENCY_KEYS)
        flags = d["flags"]
        if not isinstance(flags, list | tuple) or not all(f in ALL_FLAGS for f in flags):
            raise BadSyncMessage(f"latency.flags must be a list drawn from {sorted(ALL_FLAGS)}")
        est = d["estimate"]
        return cls(
            value_ns=_int(d, "latency", "value_ns"),
            bound_ns=_opt_int(d, "latency", "bound_ns", lo=0),
            raw_ns=_int(d, "latency", "raw_ns"),
            basis=_enum(d, "latency", "basis", Basis),
            gps_grade=_bool(d, "latency", "gps_grade"),
            tx=SyncState.from_dict(d["tx"]),
            rx=SyncState.from_dict(d["rx"]),
            estimate=None if est is None else OffsetEstimate.from_dict(est),
            flags=tuple(flags),
            estimate_age_ns=_opt_int(d, "latency", "estimate_age_ns") if aged else None,
        )


FLAG_TX_UNSYNCHRONISED = "tx_unsynchronised"
FLAG_RX_UNSYNCHRONISED = "rx_unsynchronised"
FLAG_TX_STALE = "tx_sync_stale"
FLAG_RX_STALE = "rx_sync_stale"
#: Both clocks claim sync, yet the exchange puts them further apart than their bounds allow.
FLAG_ESTIMATE_DISAGREES = "estimate_disagrees"
#: Even at the far end of its bound the latency is negative: a clock or a bound is wrong.
FLAG_NEGATIVE = "negative"
ALL_FLAGS = frozenset({FLAG_TX_UNSYNCHRONISED, FLAG_RX_UNSYNCHRONISED, FLAG_TX_STALE,
                       FLAG_RX_STALE, FLAG_ESTIMATE_DISAGREES, FLAG_NEGATIVE})


def drift_ppm(tx: SyncState | None, rx: SyncState | None) -> int:
    """How fast the two clocks may drift apart, in ppm: each side's worst (an unknown side free-running)."""
    return sum(SYNCED_DRIFT_PPM if s is not None and s.synchronised else FREE_RUNNING_DRIFT_PPM
               for s in (tx, rx))


def drift_allowance_ns(age_ns: int, tx: SyncState, rx: SyncState) -> int:
    """How far the two clocks may have drifted apart in ``age_ns``, rounded up."""
    return -(-abs(age_ns) * drift_ppm(tx, rx) // 1_000_000)


def comm_latency_record(
    a_ns: int,
    b_ns: int,
    tx: SyncState,
    rx: SyncState,
    rx_minus_tx: OffsetEstimate | None = None,
) -> CommLatency:
    """Build the published record for A (TX's CLOCK_REALTIME) and B (RX's).

    Both synchronised: ``B - A ± (bound_TX + bound_RX)``; an estimate, if given, is only a
    cross-check. Otherwise, with an estimate: ``(B - A) - (RX - TX) ± (estimate bound + drift
    since the exchange)``, labelled ``estimated``. Otherwise the raw B - A, unbounded.
    """
    if not (-MAX_NS <= a_ns <= MAX_NS and -MAX_NS <= b_ns <= MAX_NS):
        raise ValueError("A and B must be int64 nanoseconds")
    raw = b_ns - a_ns
    flags: list[str] = []
    if not tx.synchronised:
        flags.append(FLAG_TX_UNSYNCHRONISED)
    if not rx.synchronised:
        flags.append(FLAG_RX_UNSYNCHRONISED)
    if abs(b_ns - tx.read_at_ns) > MAX_SYNC_AGE_NS:
        flags.append(FLAG_TX_STALE)
    if abs(b_ns - rx.read_at_ns) > MAX_SYNC_AGE_NS:
        flags.append(FLAG_RX_STALE)
    aged_bound: int | None = None
    age: int | None = None
    if rx_minus_tx is not None:
        age = b_ns - rx_minus_tx.measured_at_ns
        aged_bound = rx_minus_tx.bound_ns + drift_allowance_ns(age, tx, rx)

    if tx.bound_ns is not None and rx.bound_ns is not None:
        value, bound, basis = raw, tx.bound_ns + rx.bound_ns, Basis.SYNCHRONISED
        gps_grade = tx.gps_grade and rx.gps_grade
        # The sync bounds put |RX - TX| within ``bound`` and the exchange puts it within
        # ``aged_bound`` of its estimate; if both held, these intervals would overlap.
        if aged_bound is not None and rx_minus_tx is not None and (
            abs(rx_minus_tx.offset_ns) > bound + aged_bound
        ):
            flags.append(FLAG_ESTIMATE_DISAGREES)
    elif rx_minus_tx is not None and aged_bound is not None:
        value, bound, basis = raw - rx_minus_tx.offset_ns, aged_bound, Basis.ESTIMATED
        gps_grade = False
    else:
        value, bound, basis = raw, None, Basis.UNSYNCHRONISED
        gps_grade = False
    if bound is not None and value + bound < 0:
        flags.append(FLAG_NEGATIVE)
    return CommLatency(value_ns=value, bound_ns=bound, raw_ns=raw, basis=basis,
                       gps_grade=gps_grade, tx=tx, rx=rx, estimate=rx_minus_tx,
                       flags=tuple(flags), estimate_age_ns=age)


_ESTIMATE_KEYS = frozenset({"offset_ns", "delay_ns", "bound_ns", "measured_at_ns", "samples"})
_PROBE_KEYS = frozenset({"seq", "t1_ns"})
_REPLY_KEYS = frozenset({"seq", "t1_ns", "t2_ns", "t3_ns", "sync"})
_LATENCY_KEYS = frozenset({"value_ns", "bound_ns", "raw_ns", "basis", "gps_grade", "tx", "rx",
                           "estimate", "flags"})
