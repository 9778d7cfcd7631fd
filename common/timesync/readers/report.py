"""The combiner: run every enabled reader and decide one ``SyncState`` (chrony, else kernel, else none).

``read_clock_report`` and ``read_sync_state`` never raise: a failure becomes a note.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from common.clock import realtime_ns
from common.errors import TimeSyncError
from common.timesync.readers.chrony import CHRONY_LOCAL_REFID, ChronyTracking, read_chrony
from common.timesync.readers.config import SyncConfig
from common.timesync.readers.gpsd import read_gpsd
from common.timesync.readers.kernel import KernelClock, read_kernel_clock
from common.timesync.state import GpsStatus, Reader, SyncSource, SyncState, clip_text


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
