"""``Telemetry``: the one object a daemon publishes through (records, events, status, constellation).

It stamps and encodes each message for the monitor stream (``publisher``) and feeds the
Prometheus exporter (``prometheus``); either may be absent. Nothing here blocks or raises
into the batch loop once it is open.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy.typing as npt

from common.clock import NS_PER_S, monotonic_ns, realtime_ns
from common.errors import ConfigError
from common.log import get_logger
from common.telemetry.publisher import MemoryPublisher, Publisher, ZmqPublisher
from common.telemetry.stream import MonitorMessage, constellation_data

log = get_logger("semalign.telemetry")

#: Seconds between status heartbeats (a watcher that joins late learns the header from one).
STATUS_INTERVAL_S = 1.0
#: Record fields that stay out of the monitor stream (instants only the JSONL needs).
_PRIVATE = ("t_a_ns", "t_b_ns", "rx_done_ns")

__all__ = ["MemoryPublisher", "Telemetry", "TelemetryConfig", "metrics_tls", "open_telemetry", "sync_fields"]


class TelemetryConfig(Protocol):
    """The config keys telemetry reads (TxConfig and RxConfig both have them)."""

    @property
    def monitor(self) -> str | None: ...

    @property
    def monitor_hwm(self) -> int: ...

    @property
    def prometheus_port(self) -> int | None: ...

    @property
    def prometheus_addr(self) -> str: ...

    @property
    def prometheus_cert(self) -> str | None: ...

    @property
    def prometheus_key(self) -> str | None: ...

    @property
    def prometheus_client_ca(self) -> str | None: ...

    @property
    def prometheus_max_connections(self) -> int: ...


class Telemetry:
    """Publishes one daemon's records and events; a no-op without publisher and exporter."""

    def __init__(self, role: str, publisher: Publisher | None = None, exporter: Any = None, *,
                 status_interval_s: float = STATUS_INTERVAL_S) -> None:
        self.role = role
        self.publisher = publisher
        self.exporter = exporter
        self.status_interval_ns = int(status_interval_s * NS_PER_S)
        self._seq = 0
        self._status_due = 0
        #: Messages that failed to publish or export (logged, never raised).
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.publisher is not None or self.exporter is not None

    @property
    def refused(self) -> int:
        """Subscribers the monitor allow-list turned away."""
        return int(getattr(self.publisher, "refused", 0))

    @property
    def dropped(self) -> int:
        return 0 if self.publisher is None else self.publisher.dropped

    def _guarded(self, publish: Callable[..., None], *args: Any) -> None:
        """Monitoring must never take a daemon down: a failure costs that message only."""
        try:
            publish(*args)
        except Exception as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.error("telemetry_failed", failures=self.failures, detail=f"{type(exc).__name__}: {exc}")

    def _publish(self, topic: str, data: Mapping[str, Any]) -> None:
        if self.publisher is None:
            return
        self._seq += 1
        self.publisher.publish(MonitorMessage(topic, self.role, self._seq, realtime_ns(), dict(data)).encode())
        if self.exporter is not None:
            self.exporter.set_dropped(self.publisher.dropped)

    def record(self, record: Mapping[str, Any], *, constellation: npt.ArrayLike | None = None) -> None:
        """A batch's metrics row (and, from RX's radio, its last frame's equalised symbols)."""
        if self.enabled:
            self._guarded(self._record, record, constellation)

    def _record(self, record: Mapping[str, Any], constellation: npt.ArrayLike | None) -> None:
        if self.exporter is not None:
            self.exporter.observe_record(record)
        self._publish("record", {k: v for k, v in record.items() if k not in _PRIVATE})
        if constellation is not None:
            self._publish("constellation", constellation_data(int(record.get("batch", -1)),
                                                              record.get("modulation"), constellation))

    def event(self, name: str, **fields: Any) -> None:
        """Something the operator should see: a control change, a resend, a rejected message, AMC."""
        if self.enabled:
            self._guarded(self._event, name, fields)

    def _event(self, name: str, fields: Mapping[str, Any]) -> None:
        if self.exporter is not None:
            self.exporter.observe_event(name, fields)
        self._publish("event", {"name": name, **fields})

    def status(self, status: Mapping[str, Any]) -> None:
        """The daemon's state now (the watcher's header); also sent by ``heartbeat``."""
        if self.enabled:
            self._guarded(self._status, status)

    def _status(self, status: Mapping[str, Any]) -> None:
        self._status_due = monotonic_ns() + self.status_interval_ns
        if self.exporter is not None:
            self.exporter.observe_status(status)
        self._publish("status", status)

    def heartbeat(self, status: Callable[[], Mapping[str, Any]]) -> None:
        """Publish ``status()`` if the last status is older than the interval; cheap otherwise."""
        if self.enabled and monotonic_ns() >= self._status_due:
            self.status(status())

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.exporter is not None:
            self.exporter.close()


def open_telemetry(role: str, config: TelemetryConfig, *, ctx: Any = None, per_receiver: bool = False) -> Telemetry:
    """The daemon's telemetry as its config asks: a monitor endpoint, a Prometheus port, or neither.

    ``per_receiver``: the per-batch metrics carry the receiver's name as label ``rx`` (TX's ``receivers:``).

    When the config has a ``security`` section (CURVE keys), the monitor socket uses it too.
    """
    publisher: Publisher | None = None
    exporter: Any = None
    if config.monitor:
        import zmq

        publisher = ZmqPublisher(ctx or zmq.Context.instance(), config.monitor, hwm=config.monitor_hwm,
                                 security=getattr(config, "security", None))
    if config.prometheus_port is not None:
        try:
            from common.telemetry.prometheus import Exporter
        except ImportError as exc:
            if publisher is not None:
                publisher.close()
            raise ConfigError("prometheus_port needs prometheus-client: pip install 'semalign[monitor]'") from exc
        exporter = Exporter(per_receiver=per_receiver)
        try:
            exporter.serve(config.prometheus_port, config.prometheus_addr, tls=metrics_tls(config),
                           max_connections=config.prometheus_max_connections)
        except ConfigError:
            if publisher is not None:
                publisher.close()
            raise
    return Telemetry(role, publisher, exporter)


def metrics_tls(config: TelemetryConfig) -> ssl.SSLContext | None:
    """The /metrics endpoint's mutual TLS, required off loopback as plain ZeroMQ sockets are refused there.

    ``security.insecure`` lets it run in clear text off loopback, as it does for ZeroMQ (logged loudly).
    """
    from common.transport.security import is_loopback_host

    if config.prometheus_cert and config.prometheus_key and config.prometheus_client_ca:
        from common.telemetry.metrics_server import tls_context

        return tls_context(config.prometheus_cert, config.prometheus_key, config.prometheus_client_ca)
    if is_loopback_host(config.prometheus_addr):
        return None
    if not getattr(getattr(config, "security", None), "insecure", False):
        raise ConfigError(
            f"prometheus_addr {config.prometheus_addr} is not a loopback address and /metrics has no TLS: "
            "expected prometheus_cert, prometheus_key and prometheus_client_ca (mutual TLS; "
            "deploy/tls/tls-certs.sh makes them, docs/monitoring.md), or security.insecure: true to serve "
            "it in clear text")
    log.warning("insecure_metrics", addr=config.prometheus_addr,
                detail="/metrics is plain HTTP off loopback: anyone on the network can read it")
    return None


def sync_fields(state: Any) -> dict[str, Any]:
    """A host's clock sync state as the watcher's header shows it: source and bound."""
    bound = getattr(state, "bound_ns", None)
    source = getattr(state, "source", None)
    return {"sync_source": getattr(source, "value", source),
            "sync_bound_s": None if bound is None else bound / NS_PER_S}
