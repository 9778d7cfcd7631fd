"""Issue 16, defects 12 and 13, with the real daemons: what a user meets when something is
wrong is one line that says what, and an exit code systemd can act on; never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.runtime import free_tcp_port
from tests.integration.test_secure_daemons import make_keys
from tests.procs import ROOT, Daemon, wait_for

pytestmark = pytest.mark.slow


def one_error_line(log: str) -> str:
    """The log's only non-JSON line (a daemon's structlog lines are JSON off a TTY)."""
    plain = [line for line in log.splitlines() if line.strip() and not line.startswith("{")]
    assert len(plain) == 1, f"expected one error line, got:\n{log[-3000:]}"
    assert "Traceback" not in log
    return plain[0]


def test_tx_says_rx_refused_its_key(digits_bundle_dir: Path, tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    data = f"tcp://127.0.0.1:{free_tcp_port()}"
    # RX's allow-list holds the operator's key only: TX's handshake is refused.
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--bind", data,
                       "--security-key", str(k / "rx/rx.key_secret"), "--security-allow", str(k / "tx-allow")],
                tmp_path / "rx.log")
    tx = Daemon("tx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--endpoint", data,
                       "--control", f"tcp://127.0.0.1:{free_tcp_port()}", "--batches", "1",
                       "--security-key", str(k / "tx/tx.key_secret"), "--security-peer", str(k / "rx/rx.key"),
                       "--security-allow", str(k / "tx-allow")], tmp_path / "tx.log")
    try:
        wait_for(lambda: "rx_refused" in tx.log_text(), 90, "TX to say RX refused its key")
    finally:
        tx.stop()
        rx.stop()
    refused = [json.loads(line) for line in tx.log_text().splitlines() if '"rx_refused"' in line]
    assert "your key is not in the peer's allow-list (or wrong peer key)" in refused[0]["detail"]


def test_port_in_use_is_one_line_and_exit_2(digits_bundle_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir),
                           "--bind", f"tcp://127.0.0.1:{port}"], tmp_path / "rx.log")
        # 2, not 1: the units' RestartPreventExitStatus=2 stops a restart loop on it.
        assert rx.wait(60) == 2
    line = one_error_line(rx.log_text())
    assert line.startswith("semalign rx: error: bind: cannot bind") and "Address already in use" in line


@pytest.mark.parametrize(("role", "flag"), [("rx", "--bind"), ("tx", "--endpoint"), ("tx", "--control")])
def test_an_endpoint_without_tcp_is_one_line(digits_bundle_dir: Path, tmp_path: Path, role: str, flag: str) -> None:
    args = ["--dataset", "digits", "--bundle", str(digits_bundle_dir), flag, f"127.0.0.1:{free_tcp_port()}"]
    daemon = Daemon(role, args, tmp_path / f"{role}.log")
    assert daemon.wait(60) == 2
    line = one_error_line(daemon.log_text())
    assert "expected tcp://HOST:PORT" in line and "did you mean tcp://127.0.0.1:" in line
    assert "not a loopback address" not in line


def test_demo_shows_the_daemons_error(digits_bundle_dir: Path, tmp_path: Path) -> None:
    """``demo --transport pluto --emulate`` without the sdr extra: the daemon's error reaches the user."""
    fake = tmp_path / "no-sdr"
    fake.mkdir()
    for name in ("adi", "iio"):
        (fake / f"{name}.py").write_text(f"raise ImportError('No module named {name}')\n")
    env = {"PYTHONPATH": f"{fake}:{ROOT}", "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "common.cli", "demo", "--transport", "pluto", "--emulate",
                          "--bundle", str(digits_bundle_dir), "--workdir", str(tmp_path / "work"), "--timeout", "90"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert out.returncode != 0
    assert "pip install 'semalign[sdr]'" in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
