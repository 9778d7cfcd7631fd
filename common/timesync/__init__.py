"""How well this host's CLOCK_REALTIME is synchronised (chrony, kernel, gpsd), and honest B - A.

The package's public names: ``SyncMonitor`` for the daemons, ``clock_main`` for the CLI.
"""

from __future__ import annotations

from common.errors import BadSyncMessage, TimeSyncError
from common.timesync.cli import clock_main, format_report
from common.timesync.latency import (
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
from common.timesync.monitor import (
    DEFAULT_INTERVAL_S,
    SyncMonitor,
    comm_metrics,
    daemon_sync_config,
    start_monitor_thread,
)
from common.timesync.readers import (
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
from common.timesync.state import GpsStatus, Leap, Reader, SyncSource, SyncState

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
    "comm_metrics",
    "daemon_sync_config",
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
    "start_monitor_thread",
    "state_from_readings",
]
