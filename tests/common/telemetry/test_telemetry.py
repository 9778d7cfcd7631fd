"""``Telemetry``: what a daemon's calls put on the monitor stream and into the exporter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from common.telemetry import MemoryPublisher, MonitorMessage, Telemetry, open_telemetry
from common.telemetry.prometheus import Exporter


def published(pub: MemoryPublisher) -> list[MonitorMessage]:
    return [MonitorMessage.decode(frames) for frames in pub.take()]


def test_record_event_and_status_are_published_in_order_with_rising_seq() -> None:
    pub = MemoryPublisher()
    tel = Telemetry("rx", pub)
    tel.record({"batch": 3, "accuracy": None, "t_a_ns": 1, "t_b_ns": 2, "rx_done_ns": 3, "modulation": "qpsk"},
               constellation=np.array([1 + 1j, -1 - 1j], np.complex64))
    tel.event("rejected", code="bad_magic", batch=None)
    tel.status({"adapt": {"mode": "lora"}})
    msgs = published(pub)
    assert [m.topic for m in msgs] == ["record", "constellation", "event", "status"]
    assert [m.seq for m in msgs] == [1, 2, 3, 4]
    assert {m.role for m in msgs} == {"rx"}
    # The instants stay in the JSONL; the stream carries the rest of the row as it is.
    assert msgs[0].data == {"batch": 3, "accuracy": None, "modulation": "qpsk"}
    assert msgs[1].data["batch"] == 3 and msgs[1].symbols().tolist() == [1 + 1j, -1 - 1j]
    assert msgs[2].data == {"name": "rejected", "code": "bad_magic", "batch": None}


def test_heartbeat_is_throttled_to_its_interval() -> None:
    pub = MemoryPublisher()
    tel = Telemetry("tx", pub, status_interval_s=3600)
    calls = []

    def status() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    for _ in range(100):
        tel.heartbeat(status)
    assert len(calls) == 1 and [m.data for m in published(pub)] == [{"n": 1}]
    fast = Telemetry("tx", pub, status_interval_s=0)
    for _ in range(3):
        fast.heartbeat(status)
    assert len(published(pub)) == 3


def test_drops_reach_the_exporter_counter() -> None:
    pub = MemoryPublisher(capacity=2)
    exporter = Exporter()
    tel = Telemetry("tx", pub, exporter)
    for batch in range(5):
        tel.record({"batch": batch, "status": "ok", "modulation": "64qam"})
    assert tel.dropped == 3
    assert "semalign_monitor_dropped_total 3.0" in exporter.exposition()
    assert 'semalign_batches_total{status="ok"} 5.0' in exporter.exposition()


def test_without_sinks_every_call_is_a_no_op() -> None:
    tel = Telemetry("tx")
    assert not tel.enabled
    tel.record({"batch": 1})
    tel.event("resend", batch=1)
    tel.heartbeat(lambda: pytest.fail("status must not be computed when telemetry is off"))
    tel.close()


@dataclass(frozen=True)
class Cfg:
    monitor: str | None = None
    monitor_hwm: int = 10
    prometheus_port: int | None = None
    prometheus_addr: str = "127.0.0.1"
    prometheus_cert: str | None = None
    prometheus_key: str | None = None
    prometheus_client_ca: str | None = None
    prometheus_max_connections: int = 8


@pytest.mark.parametrize(
    ("cfg", "has_publisher", "has_exporter"),
    [(Cfg(), False, False), (Cfg(monitor="tcp://127.0.0.1:*"), True, False),
     (Cfg(prometheus_port=0), False, True), (Cfg(monitor="tcp://127.0.0.1:*", prometheus_port=0), True, True)],
)
def test_open_telemetry_follows_the_config(cfg: Cfg, has_publisher: bool, has_exporter: bool) -> None:
    tel = open_telemetry("tx", cfg)
    try:
        assert (tel.publisher is not None, tel.exporter is not None) == (has_publisher, has_exporter)
        if has_exporter:
            assert tel.exporter.port > 0
    finally:
        tel.close()


class _BrokenPublisher:
    dropped = 0

    def publish(self, frames: object) -> None:
        raise OSError("socket gone")

    def close(self) -> None:
        pass


def test_a_failing_publisher_costs_its_messages_only() -> None:
    from common.telemetry.telemetry import Telemetry

    telemetry = Telemetry("tx", _BrokenPublisher())  # type: ignore[arg-type]
    telemetry.record({"batch": 0, "status": "ok"})
    telemetry.event("control", ok=True)
    telemetry.status({"paused": False})
    assert telemetry.failures == 3
