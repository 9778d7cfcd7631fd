"""The TX daemon around its link: status composed from the link and the control socket, control
commands reaching the link, a control request that fails costing that request only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zmq

from common.data.spec import load_dataset
from common.ml.bundle import Bundle
from common.runtime import free_tcp_port
from tx.config import TxConfig
from tx.control import ControlRequest, decode_reply
from tx.daemon import TxDaemon

#: The status fields ``semalign ctl status``, ``watch`` and Prometheus read, in their order.
STATUS_KEYS = ["rx_ready", "paused", "policy", "link_policy", "transport", "shift", "shift_error", "next_batch",
               "built", "acked", "lost", "resends", "inflight", "accuracy", "run", "recalling", "recovered",
               "recovered_lost", "reconnects", "control_refused", "refused"]


@pytest.fixture
def daemon(digits_bundle: Bundle, tmp_path: Path) -> Iterator[TxDaemon]:
    config = TxConfig(endpoint=f"tcp://127.0.0.1:{free_tcp_port()}", control=f"tcp://127.0.0.1:{free_tcp_port()}",
                      gpsd="off", metrics_out=str(tmp_path / "tx.jsonl"))
    tx = TxDaemon(config, digits_bundle, load_dataset("digits"))
    try:
        yield tx
    finally:
        tx.close()


def test_status_is_the_links_figures_then_the_control_sockets(daemon: TxDaemon) -> None:
    status = daemon.status()
    assert list(status) == STATUS_KEYS
    assert status["run"] == daemon.run_id == daemon.link.run_id
    assert status["refused"] == {"control": 0, "monitor": 0}
    monitor = daemon.monitor_status()
    assert monitor["plan"] == daemon.link.plan.as_dict() and monitor["endpoint"] == daemon.config.endpoint


def test_control_requests_reach_the_link_and_a_bad_one_costs_itself_only(daemon: TxDaemon) -> None:
    ctx = zmq.Context.instance()
    client = ctx.socket(zmq.REQ)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(daemon.control_endpoint)
    try:
        for request, ok in ((ControlRequest("set-alpha", 10**6), False), (ControlRequest("pause"), True)):
            client.send(request.encode())
            for _ in range(100):  # bounded: the daemon's poll answers within one POLL_MS
                daemon._poll()
                if client.poll(0):
                    break
            reply = decode_reply(client.recv())
            assert reply["ok"] is ok
        assert reply["status"]["paused"] is True and daemon.link.paused
        assert daemon.counters["control_errors"] == 1
    finally:
        client.close(0)


def test_a_reply_is_encoded_once_and_telemetry_gets_what_the_client_got(daemon: TxDaemon,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: the reply was encoded, decoded, encoded again, then decoded to feed telemetry."""
    import msgpack

    import tx.control

    calls: list[str] = []

    def counted(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return getattr(msgpack, name)(*args, **kwargs)
        return call

    # tx.control holds the control plane's every msgpack call: the request's decode, the reply's encode.
    monkeypatch.setattr(tx.control, "msgpack", SimpleNamespace(packb=counted("packb"), unpackb=counted("unpackb"),
                                                               UnpackException=msgpack.UnpackException))
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(daemon.telemetry, "event", lambda name, **fields: events.append({"name": name, **fields}))
    client = zmq.Context.instance().socket(zmq.REQ)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(daemon.control_endpoint)
    try:
        for request in (ControlRequest("status"), ControlRequest("set-alpha", 10**6)):
            frame = request.encode()
            calls.clear()
            client.send(frame)
            for _ in range(100):  # bounded: the daemon's poll answers within one POLL_MS
                daemon._poll()
                if client.poll(0):
                    break
            assert calls == ["unpackb", "packb"]  # the request decoded, the reply encoded: once each
            reply = msgpack.unpackb(client.recv())
            assert events[-1] == {"name": "control", **reply}
        assert [e["ok"] for e in events] == [True, False]
    finally:
        client.close(0)
