"""The daemons with CURVE on loopback: keyed peers work, strangers are refused and counted,
and a plain socket off loopback refuses to start unless ``insecure`` is set."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq
import zmq.auth

from common.errors import TransportError
from common.runtime import free_tcp_port
from common.transport.security import SecurityConfig, keygen
from common.wire import messages
from tests.procs import Daemon, metrics, wait_for
from tx.control import ControlRequest
from tx.ctl import request

pytestmark = pytest.mark.slow


def make_keys(root: Path) -> Path:
    for name in ("rx", "tx", "op", "stranger"):
        keygen(name, root / name)
    for allow, name in (("rx-allow", "tx"), ("tx-allow", "op")):
        (root / allow).mkdir()
        (root / allow / f"{name}.key").write_bytes((root / name / f"{name}.key").read_bytes())
    return root


def test_secured_daemons_admit_only_listed_keys(digits_bundle_dir: Path, tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    data, ctl = f"tcp://127.0.0.1:{free_tcp_port()}", f"tcp://127.0.0.1:{free_tcp_port()}"
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--bind", data,
                       "--security-key", str(k / "rx/rx.key_secret"), "--security-allow", str(k / "rx-allow"),
                       "--metrics-out", str(tmp_path / "rx.jsonl")], tmp_path / "rx.log")
    tx = Daemon("tx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--endpoint", data,
                       "--control", ctl, "--batches", "4", "--interval", "0.5", "--metrics-out",
                       str(tmp_path / "tx.jsonl"), "--security-key", str(k / "tx/tx.key_secret"),
                       "--security-peer", str(k / "rx/rx.key"), "--security-allow", str(k / "tx-allow")],
                tmp_path / "tx.log")
    operator = SecurityConfig(key=str(k / "op/op.key_secret"), peer=str(k / "tx/tx.key"))
    stranger = SecurityConfig(key=str(k / "stranger/stranger.key_secret"), peer=str(k / "tx/tx.key"))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= 1, 90, "a first acknowledged batch")
        assert request(ctl, ControlRequest("pause"), security=operator)["ok"]
        for who in (stranger, None):
            with pytest.raises(TransportError):
                request(ctl, ControlRequest("set-modulation", "bpsk"), timeout_s=1.0, tries=1, security=who)
        # A stranger on the data socket, even knowing RX's public key, gets no hello reply.
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_secretkey = zmq.auth.load_certificate(k / "stranger/stranger.key_secret")[1]
        sock.curve_publickey = zmq.auth.load_certificate(k / "stranger/stranger.key")[0]
        sock.curve_serverkey = zmq.auth.load_certificate(k / "rx/rx.key")[0]
        sock.connect(data)
        sock.send_multipart([messages.Hello(bundle="0" * 64, role="tx").encode()])  # queued: no IMMEDIATE
        assert not sock.poll(1500)
        sock.close(0)
        # `semalign watch` steers through the same keys (--key, --tx-peer) as its monitor stream.
        from common.tools.watch.app import default_control

        assert default_control(ctl, "status", None, security=operator)["ok"]
        with pytest.raises(TransportError):
            default_control(ctl, "pause", None)
        status = request(ctl, ControlRequest("resume"), security=operator)
        assert status["ok"] and status["status"]["control_refused"] >= 1
        assert status["status"]["refused"]["control"] >= 1  # counted by domain (issue 16, defect 5)
        assert tx.wait(90) == 0, tx.log_text()[-3000:]
    finally:
        ctx.term()
        tx.stop()
        rx.stop()
    records = metrics(tmp_path / "tx.jsonl")
    assert sorted(r["batch"] for r in records) == [0, 1, 2, 3]
    assert all(r["status"] == "ok" and r["modulation"] == "256qam" for r in records)
    assert "peer_refused" in rx.log_text() and "peer_refused" in tx.log_text()


@pytest.mark.parametrize(("extra", "refused"), [([], True), (["--security-insecure"], False)])
def test_plain_rx_off_loopback_needs_insecure(digits_bundle_dir: Path, tmp_path: Path, extra: list[str],
                                              refused: bool) -> None:
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir),
                       "--bind", f"tcp://0.0.0.0:{free_tcp_port()}", *extra], tmp_path / "rx.log")
    try:
        if refused:
            assert rx.wait(60) == 2
            assert "not a loopback address" in rx.log_text()
        else:
            wait_for(lambda: "rx_ready" in rx.log_text(), 60, "RX to start")
            assert "insecure_socket" in rx.log_text()
    finally:
        rx.stop()
