"""The settings both daemons share: bundle and data, metrics and logging, clock sync, monitoring.

``TxConfig`` and ``RxConfig`` extend ``DaemonSettings``, so these keys mean the same in
``tx.yaml`` and ``rx.yaml`` and each is a flag of both ``semalign tx`` and ``semalign rx``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import CHOICES

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class DaemonSettings:
    #: Directory with the IDX files (mnist, fashion-mnist).
    data_dir: str | None = None
    #: Bundle directory (default: the cache dir of the dataset).
    bundle: str | None = None
    #: Append one JSON object per batch to this file.
    metrics_out: str | None = None
    #: Least severe log level printed.
    log_level: str = field(default="info", metadata={CHOICES: LOG_LEVELS})
    #: gpsd as HOST[:PORT] for clock sync state, or "off".
    gpsd: str = "127.0.0.1:2947"
    #: chronyc's -h target (default: chronyc's own).
    chrony_socket: str | None = None
    #: Seconds between clock sync state readings.
    sync_interval_s: float = 300.0
    #: Bind the monitor stream (ZeroMQ PUB) for `semalign watch` here, e.g. tcp://127.0.0.1:5557; off unless set.
    monitor: str | None = None
    #: Monitor messages queued per subscriber before new ones are dropped (and counted).
    monitor_hwm: int = 1000
    #: Serve Prometheus metrics (/metrics) on this port; off unless set (0: any free port).
    prometheus_port: int | None = None
    #: Address the Prometheus endpoint listens on.
    prometheus_addr: str = "0.0.0.0"
