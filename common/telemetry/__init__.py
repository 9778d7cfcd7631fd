"""The daemons' telemetry: the monitor stream (a ZeroMQ PUB socket) and the Prometheus exporter.

Daemons hold one ``Telemetry`` and call ``record``/``event``/``heartbeat``; with neither a
monitor endpoint nor a Prometheus port configured every call is a no-op.
"""

from __future__ import annotations

from common.telemetry.publisher import MemoryPublisher
from common.telemetry.stream import TOPICS, MonitorMessage
from common.telemetry.telemetry import Telemetry, open_telemetry, sync_fields

__all__ = ["TOPICS", "MemoryPublisher", "MonitorMessage", "Telemetry", "open_telemetry", "sync_fields"]
