"""Readers of the clock's discipline, one source per module: chrony, the kernel, gpsd.

Each reader raises ``TimeSyncError`` on failure; ``report.read_clock_report`` combines them
and never raises.
"""

from __future__ import annotations

from common.timesync.readers.chrony import (
    CHRONY_LOCAL_REFID,
    CHRONY_TRACKING_FIELDS,
    ChronyTracking,
    chrony_bound_ns,
    classify_reference,
    parse_chrony_tracking,
    read_chrony,
)
from common.timesync.readers.config import SyncConfig
from common.timesync.readers.gpsd import (
    GPSD_PORT,
    gps_status_from_reports,
    gpsd_address,
    parse_gpsd_time,
    read_gpsd,
)
from common.timesync.readers.kernel import (
    STA_PLL,
    STA_UNSYNC,
    TIME_ERROR,
    TIME_INS,
    TIME_OK,
    KernelClock,
    kernel_clock_from_timex,
    read_kernel_clock,
)
from common.timesync.readers.report import (
    ClockReport,
    read_clock_report,
    read_sync_state,
    state_from_readings,
)

__all__ = [
    "CHRONY_LOCAL_REFID",
    "CHRONY_TRACKING_FIELDS",
    "GPSD_PORT",
    "STA_PLL",
    "STA_UNSYNC",
    "TIME_ERROR",
    "TIME_INS",
    "TIME_OK",
    "ChronyTracking",
    "ClockReport",
    "KernelClock",
    "SyncConfig",
    "chrony_bound_ns",
    "classify_reference",
    "gps_status_from_reports",
    "gpsd_address",
    "kernel_clock_from_timex",
    "parse_chrony_tracking",
    "parse_gpsd_time",
    "read_chrony",
    "read_clock_report",
    "read_gpsd",
    "read_kernel_clock",
    "read_sync_state",
    "state_from_readings",
]
