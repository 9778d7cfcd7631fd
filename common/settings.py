"""The settings both daemons share: bundle and data, metrics and logging, clock sync, monitoring.

``TxConfig`` and ``RxConfig`` extend ``DaemonSettings``, so these keys mean the same in
``tx.yaml`` and ``rx.yaml`` and each is a flag of both ``semalign tx`` and ``semalign rx``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import CHOICES
from common.errors import ConfigError

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
    #: Address the Prometheus endpoint listens on; off loopback only with the three prometheus TLS keys.
    prometheus_addr: str = "127.0.0.1"
    #: Serve /metrics over HTTPS with this certificate (PEM; deploy/tls/tls-certs.sh server).
    prometheus_cert: str | None = None
    #: The secret key of prometheus_cert (PEM, mode 600).
    prometheus_key: str | None = None
    #: CA certificate that signed the scrapers' client certificates (mutual TLS: no other client is served).
    prometheus_client_ca: str | None = None
    #: Scrapes served at once; more connections are closed at accept, and each has a 5 s deadline.
    prometheus_max_connections: int = 8

    def check_prometheus(self) -> None:
        """The Prometheus keys' own rules (the loopback rule needs ``security`` and is checked at start)."""
        tls = {"prometheus_cert": self.prometheus_cert, "prometheus_key": self.prometheus_key,
               "prometheus_client_ca": self.prometheus_client_ca}
        given = [name for name, value in tls.items() if value]
        if given and len(given) != len(tls):
            missing = ", ".join(name for name in tls if name not in given)
            raise ConfigError(f"mutual TLS for /metrics needs {', '.join(tls)}: got {', '.join(given)}, "
                              f"missing {missing}")
        if self.prometheus_port is not None and not 0 <= self.prometheus_port <= 65535:
            raise ConfigError(f"prometheus_port: expected a port in 0..65535, got {self.prometheus_port}")
        if self.prometheus_max_connections < 1:
            raise ConfigError("prometheus_max_connections: expected an integer >= 1, got "
                              f"{self.prometheus_max_connections}")
