"""The four crash and wedge reproducers, each against real daemons: every one costs its message only.

1. RX: a payload that is only the 8-byte header (t = n = 0).
2. RX: a sim envelope announcing alpha = t = n = 65535 beside 8 bytes of samples.
3. TX: a two-frame request on the control socket (and other malformed framings).
4. TX: an outage on a link with 150 ms one-way delay; every batch must still be acknowledged.
"""

from __future__ import annotations

import json
import struct
import time
from datetime import datetime
from pathlib import Path

import msgpack
import pytest
import zmq

from common.clock import realtime_ns
from common.ml.bundle import Bundle
from common.runtime import free_tcp_port
from common.wire import messages
from tests.integration.netfault.relay import Relay
from tests.integration.test_rogue_sender import good_batch
from tests.procs import Daemon, metrics, wait_for
from tx.control import ControlRequest, decode_reply
from tx.ctl import request

pytestmark = pytest.mark.slow

REPLY_TIMEOUT_MS = 60_000
ACK_TIMEOUT_S = 1.5


def header_only(t: int, n: int, alpha: int = 30) -> bytes:
    return struct.pack("<BBHHH", 0xA7, 0x11, alpha, t, n)


def envelope(bundle: Bundle, **fields: object) -> bytes:
    base = {"batch_id": 7, "attempt": 0, "modulation": "64qam", "b_max": 30000, "alpha": 30,
            "bundle": bundle.hash, "t_a_ns": realtime_ns(), "t": 0, "n": 0}
    return messages.Envelope(**{**base, **fields}).encode()  # type: ignore[arg-type]


def rx_crashers(bundle: Bundle) -> list[tuple[str, list[bytes], str]]:
    return [
        ("header only, t = n = 0", [envelope(bundle), header_only(0, 0)], "empty_payload"),
        ("header only, envelope announces vectors", [envelope(bundle, t=5, n=5), header_only(0, 0)],
         "empty_payload"),
        ("header announces vectors, none follow", [envelope(bundle, t=5, n=5), header_only(5, 5)],
         "size_mismatch"),
        ("sim, alpha = t = n = 65535, 8 bytes of samples",
         [envelope(bundle, transport="sim", alpha=65535, t=65535, n=65535), b"\0" * 8], "oversize"),
        ("sim, huge alpha within the size limit",
         [envelope(bundle, transport="sim", alpha=65535, t=1, n=0), b"\0" * 8], "alpha_out_of_range"),
        ("sim, t = n = 0", [envelope(bundle, transport="sim"), b"\0" * 8], "empty_payload"),
    ]


def test_rx_answers_the_crashers_and_keeps_serving(digits_bundle_dir: Path, digits_bundle: Bundle,
                                                    tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--bind", endpoint,
                       "--metrics-out", str(tmp_path / "rx.jsonl")], tmp_path / "rx.log")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        for name, frames, code in rx_crashers(digits_bundle):
            sock.send_multipart(frames)
            assert sock.poll(REPLY_TIMEOUT_MS), f"{name}: no reply; log:\n{rx.log_text()[-2000:]}"
            reply = messages.decode_reply(sock.recv_multipart()[0])
            assert isinstance(reply, messages.ErrorReply), name
            assert reply.code == code, (name, reply)
        sock.send_multipart(list(good_batch(digits_bundle, 1)))
        assert sock.poll(REPLY_TIMEOUT_MS)
        report = messages.decode_reply(sock.recv_multipart()[0])
        assert isinstance(report, messages.Report) and report.batch_id == 1
        assert rx.proc.poll() is None
    finally:
        sock.close(0)
        ctx.term()
        assert rx.stop() == 0
    assert [r["batch"] for r in metrics(tmp_path / "rx.jsonl")] == [1]
    assert "MemoryError" not in rx.log_text() and "Traceback" not in rx.log_text()


def control_crashers() -> list[tuple[str, int, list[bytes], bool]]:
    """(name, socket type, frames, ok): each gets a reply (an error unless well-formed); TX lives on."""
    good = ControlRequest("status").encode()
    return [
        ("two frames from REQ", zmq.REQ, [good, good], False),
        ("empty frame from REQ", zmq.REQ, [b""], False),
        ("garbage from REQ", zmq.REQ, [b"\xc1\xff"], False),
        ("msgpack list", zmq.REQ, [msgpack.packb([1, 2])], False),
        ("three frames from DEALER", zmq.DEALER, [b"", good, b"x"], False),
        ("no delimiter, from DEALER", zmq.DEALER, [good], True),
    ]


def test_tx_control_answers_malformed_requests(digits_bundle_dir: Path, tmp_path: Path) -> None:
    ctl = f"tcp://127.0.0.1:{free_tcp_port()}"
    # No RX at all: TX greets in vain, and its control socket is served meanwhile.
    tx = Daemon("tx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--control", ctl,
                       "--endpoint", f"tcp://127.0.0.1:{free_tcp_port()}"], tmp_path / "tx.log")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        wait_for(lambda: request(ctl, ControlRequest("status"), timeout_s=2, tries=10)["ok"], 60, "TX control")
        for name, kind, frames, ok in control_crashers():
            sock = ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(ctl)
            try:
                sock.send_multipart(frames)
                assert sock.poll(10_000), f"{name}: no reply; log:\n{tx.log_text()[-2000:]}"
                reply_frames = sock.recv_multipart()
                reply = decode_reply(reply_frames[-1])
                assert reply["ok"] is ok and bool(reply["error"]) is not ok, name
            finally:
                sock.close(0)
            assert tx.proc.poll() is None, name
        status = request(ctl, ControlRequest("status"))
        assert status["ok"] and status["status"]["rx_ready"] is False
    finally:
        ctx.term()
        assert tx.stop() == 0
    assert tx.log_text().count("control_rejected") >= len(control_crashers()) - 1


def test_outage_on_a_slow_link_converges(digits_bundle_dir: Path, tmp_path: Path) -> None:
    """5 s outage at 150 ms one-way delay: every batch acknowledged, none lost, few rebuilds."""
    rx_port = free_tcp_port()
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", rx_port), delay_s=0.150).start()
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--bind",
                       f"tcp://127.0.0.1:{rx_port}", "--metrics-out", str(tmp_path / "rx.jsonl")],
                tmp_path / "rx.log")
    ctl = f"tcp://127.0.0.1:{free_tcp_port()}"
    batches = 8
    tx = Daemon("tx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--control", ctl,
                       "--endpoint", f"tcp://{relay.address[0]}:{relay.address[1]}", "--batches", str(batches),
                       "--interval", "0.3", "--ack-timeout", str(ACK_TIMEOUT_S), "--max-attempts", "8",
                       "--metrics-out", str(tmp_path / "tx.jsonl")], tmp_path / "tx.log")
    try:
        wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= 2, 90, "two acknowledged batches")
        relay.outage(True)
        wait_for(lambda: "batch_resend" in tx.log_text() or "rx_unreachable" in tx.log_text(), 20,
                 "TX to notice the outage")
        time.sleep(5.0)
        relay.outage(False)
        assert tx.wait(120) == 0, tx.log_text()[-3000:]
    finally:
        tx.stop()
        rx.stop()
        relay.close()
    records = metrics(tmp_path / "tx.jsonl")
    assert sorted(r["batch"] for r in records) == list(range(batches))
    assert all(r["status"] == "ok" for r in records)
    assert len({r["run"] for r in records}) == 1
    events = [json.loads(line) for line in tx.log_text().splitlines() if line.startswith("{")]
    start, stopped = (next(e for e in events if e["event"] == name) for name in ("tx_start", "tx_stopped"))
    # The resend counter counts real sends: one log line per resend that left TX.
    assert stopped["resends"] == sum(e["event"] == "batch_resend" for e in events) >= 1
    # At most one rebuild per ack timeout (the old wedge rebuilt every 0.25 s, for ever).
    elapsed_s = (datetime.fromisoformat(stopped["timestamp"]) - datetime.fromisoformat(start["timestamp"])).total_seconds()
    assert 1 <= stopped["reconnects"] <= elapsed_s / ACK_TIMEOUT_S + 1, (stopped["reconnects"], elapsed_s)
