"""A stranger against RX's extra ports (metrics, monitor), on loopback: bounded, and nothing for free.

Issue 16: idle connections to /metrics were a thread and a descriptor each (defect 1); one 16 MiB
subscription took RX from 378 MB to 1.1 GB (defect 2); the monitor shared the data allow-list and
its refusals went uncounted (defect 5).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import struct
import subprocess
import urllib.request
from pathlib import Path

import pytest
import zmq
import zmq.auth

from common.runtime import free_tcp_port
from common.telemetry.stream import MonitorMessage
from common.transport.security import keygen
from common.wire import messages
from tests.procs import ROOT, Daemon, wait_for

pytestmark = pytest.mark.slow

Ctx = zmq.Context[zmq.Socket[bytes]]
#: Idle connections the stranger holds open against /metrics.
IDLE_CONNECTIONS = 1000


def threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def scrape(port: int, context: ssl.SSLContext | None = None, timeout: float = 3.0) -> str | None:
    scheme = "https" if context is not None else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/metrics", timeout=timeout, context=context) as r:
            body: str = r.read().decode()
            return body
    except OSError:
        return None


def client(ctx: Ctx, kind: int, curve: tuple[Path, Path] | None) -> zmq.Socket[bytes]:
    """A socket of ``kind`` with LINGER 0, a CURVE client with ``curve`` (secret, server's public)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        public, secret = zmq.auth.load_certificate(curve[0])
        sock.curve_secretkey, sock.curve_publickey = secret, public
        sock.curve_serverkey = zmq.auth.load_certificate(curve[1])[0]
    return sock


def hello(ctx: Ctx, endpoint: str, curve: tuple[Path, Path] | None = None, wait_ms: int = 5000) -> bool:
    """Whether RX answers a hello on its data socket (with these CURVE keys: secret, RX's public)."""
    sock = client(ctx, zmq.DEALER, curve)
    try:
        sock.connect(endpoint)
        sock.send_multipart([messages.Hello(bundle="0" * 64, role="tx").encode()])
        return bool(sock.poll(wait_ms))
    finally:
        sock.close(0)


def subscriber(ctx: Ctx, endpoint: str, curve: tuple[Path, Path] | None = None) -> zmq.Socket[bytes]:
    sock = client(ctx, zmq.SUB, curve)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def statuses(sock: zmq.Socket[bytes], wait_ms: int) -> list[MonitorMessage]:
    """Monitor messages that arrive within ``wait_ms`` (RX sends a status every second)."""
    out = []
    if sock.poll(wait_ms):
        while sock.poll(0):
            out.append(MonitorMessage.decode(sock.recv_multipart()))
    return out


def raw_subscription(endpoint: str, size: int) -> int:
    """Subscribe to a ``size``-byte topic as a stranger speaking ZMTP 3.0 by hand; the bytes RX took.

    (libzmq's own SUB keeps its subscriptions in a recursive tree and crashes on a 16 MiB one.)
    """
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sent = 0
    try:
        sock.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + bytes(32))
        greeting = b""
        while len(greeting) < 64:
            chunk = sock.recv(64 - len(greeting))
            if not chunk:
                return 0
            greeting += chunk
        ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
        sock.sendall(b"\x04" + bytes([len(ready)]) + ready)
        # One long frame (flags 0x02): a subscription is b"\x01" + topic.
        sock.sendall(b"\x02" + struct.pack(">Q", size + 1) + b"\x01")
        block = bytes(64 * 1024)
        while sent < size:
            sock.sendall(block[: size - sent])
            sent += min(len(block), size - sent)
    except OSError:
        pass  # dropped by RX: what it took is what was sent before
    finally:
        sock.close()
    return sent


def start_rx(bundle: Path, tmp_path: Path, *extra: str) -> tuple[Daemon, str]:
    data = f"tcp://127.0.0.1:{free_tcp_port()}"
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(bundle), "--bind", data, *extra], tmp_path / "rx.log")
    wait_for(lambda: "rx_ready" in rx.log_text() or rx.proc.poll() is not None, 120, "RX to start")
    assert rx.proc.poll() is None, rx.log_text()[-3000:]
    return rx, data


def test_idle_connections_to_metrics_cost_neither_threads_nor_descriptors(digits_bundle_dir: Path,
                                                                          tmp_path: Path) -> None:
    port = free_tcp_port()
    rx, data = start_rx(digits_bundle_dir, tmp_path, "--prometheus-port", str(port))
    ctx: Ctx = zmq.Context()
    idle: list[socket.socket] = []
    try:
        assert scrape(port) is not None
        threads0, fds0 = threads_and_fds(rx.proc.pid)
        for _ in range(IDLE_CONNECTIONS):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break  # the backlog is full: the stranger got no more, which is fine
        assert len(idle) >= IDLE_CONNECTIONS // 2
        threads, fds = threads_and_fds(rx.proc.pid)
        cap = 8  # prometheus_max_connections' default
        # Before: one thread and one descriptor per connection (1,000 threads, every descriptor).
        assert threads <= threads0 + cap + 1, (threads0, threads)
        assert fds <= fds0 + cap + 2, (fds0, fds)
        # While the stranger still holds its connections: a keyed TX still reaches the data socket,
        # a scrape from another address is answered at once (the stranger holds its share of the
        # workers only), and one from the stranger's own address once its held slots time out.
        assert hello(ctx, data)
        other = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=("127.0.0.2", 0))
        other.request("GET", "/metrics")
        assert "semalign_batches_total" in other.getresponse().read().decode()
        other.close()
        body = wait_for(lambda: scrape(port), 30, "a scrape past the idle connections")
        assert "semalign_batches_total" in body
    finally:
        for s in idle:
            s.close()
        ctx.destroy(0)
        rx.stop()


def test_rx_with_plain_metrics_off_loopback_refuses_to_start(digits_bundle_dir: Path, tmp_path: Path) -> None:
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir),
                       "--bind", f"tcp://127.0.0.1:{free_tcp_port()}", "--prometheus-port", str(free_tcp_port()),
                       "--prometheus-addr", "0.0.0.0"], tmp_path / "rx.log")
    try:
        assert rx.wait(120) == 2
        assert "not a loopback address and /metrics has no TLS" in rx.log_text()
    finally:
        rx.stop()


def test_a_16_mib_subscription_leaves_rx_memory_flat(digits_bundle_dir: Path, tmp_path: Path) -> None:
    monitor = f"tcp://127.0.0.1:{free_tcp_port()}"
    rx, _ = start_rx(digits_bundle_dir, tmp_path, "--monitor", monitor)
    ctx: Ctx = zmq.Context()
    try:
        watcher = subscriber(ctx, monitor)
        assert statuses(watcher, 5000), "no status from RX's monitor"
        before = rss_mib(rx.proc.pid)
        accepted = [raw_subscription(monitor, 16 << 20) for _ in range(4)]
        # zmq reads the frame's size and drops the peer: the rest never gets sent (what did go out sat
        # in the kernel's socket buffers). Before, RX read all 16 MiB and kept it.
        assert max(accepted) < 16 << 20, accepted
        # Many distinct small topics: one table entry per subscriber, whatever it asks for.
        small = ctx.socket(zmq.SUB)
        small.setsockopt(zmq.LINGER, 0)
        for i in range(20_000):
            small.setsockopt(zmq.SUBSCRIBE, b"%059d" % i)
        small.connect(monitor)
        peak = before
        for _ in range(40):  # 4 s: every status heartbeat reads (and refuses) what came in
            statuses(watcher, 100)
            peak = max(peak, rss_mib(rx.proc.pid))
        small.close(0)
        print(f"RX RSS before {before:.0f} MiB, peak under attack {peak:.0f} MiB")
        # Before: +700 MiB and never returned. Allow for RX's own drift (allocator, logs).
        assert peak - before < 50, (before, peak)
        assert statuses(watcher, 3000), "the legitimate watcher lost the stream"
    finally:
        ctx.destroy(0)
        rx.stop()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    root = tmp_path / "keys"
    for name in ("rx", "tx", "op", "stranger"):
        keygen(name, root / name)
    for allow, name in (("allow-tx", "tx"), ("allow-monitor", "op")):
        (root / allow).mkdir()
        shutil.copy(root / name / f"{name}.key", root / allow / f"{name}.key")
    return root


def tls_certs(root: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("tls-certs.sh needs openssl")
    script = str(ROOT / "deploy" / "tls" / "tls-certs.sh")
    for args in (["ca", root], ["server", root, "rx", "127.0.0.1"], ["client", root, "prometheus"]):
        subprocess.run(["bash", script, *map(str, args)], check=True, capture_output=True, timeout=60)
    return root


def refused_total(body: str, domain: str) -> float:
    for line in body.splitlines():
        if line.startswith(f'semalign_refused_total{{domain="{domain}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_the_monitor_has_its_own_allow_list_and_strangers_get_nothing(digits_bundle_dir: Path, tmp_path: Path,
                                                                      keys: Path) -> None:
    """An operator key in monitor_allow watches RX but cannot send it batches; TX's key cannot watch;
    a stranger gets nothing from data, monitor or metrics; every refusal is counted by domain."""
    tls = tls_certs(tmp_path / "tls")
    monitor, port = f"tcp://127.0.0.1:{free_tcp_port()}", free_tcp_port()
    rx, data = start_rx(
        digits_bundle_dir, tmp_path, "--monitor", monitor, "--prometheus-port", str(port),
        "--security-key", str(keys / "rx/rx.key_secret"), "--security-allow", str(keys / "allow-tx"),
        "--security-monitor-allow", str(keys / "allow-monitor"),
        "--prometheus-cert", str(tls / "rx.crt"), "--prometheus-key", str(tls / "rx.key"),
        "--prometheus-client-ca", str(tls / "ca.crt"))
    rx_public = keys / "rx/rx.key"
    ctx: Ctx = zmq.Context()
    try:
        operator = subscriber(ctx, monitor, (keys / "op/op.key_secret", rx_public))
        assert statuses(operator, 5000), "the operator's key in monitor_allow gets no monitor stream"
        assert not hello(ctx, data, (keys / "op/op.key_secret", rx_public), 1500), "a watcher's key sent a batch"
        assert hello(ctx, data, (keys / "tx/tx.key_secret", rx_public))
        for who in (keys / "tx/tx.key_secret", keys / "stranger/stranger.key_secret"):
            sub = subscriber(ctx, monitor, (who, rx_public))
            assert not statuses(sub, 1500), f"{who.name} watched RX"
            sub.close(0)
        plain = subscriber(ctx, monitor)
        assert not statuses(plain, 1000)
        plain.close(0)
        assert not hello(ctx, data, (keys / "stranger/stranger.key_secret", rx_public), 1000)
        assert not hello(ctx, data, None, 1000)
        # Metrics: the stranger has no client certificate; the scraper has one.
        assert scrape(port) is None
        assert scrape(port, ssl.create_default_context(cafile=str(tls / "ca.crt"))) is None
        scraper = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        scraper.load_cert_chain(str(tls / "prometheus.crt"), str(tls / "prometheus.key"))

        def counted() -> str | None:
            body = scrape(port, scraper)
            ok = body is not None and refused_total(body, "data") >= 2 and refused_total(body, "monitor") >= 2
            return body if ok else None

        body = wait_for(counted, 10, "refusals counted by domain in /metrics")
        assert refused_total(body, "control") == 0
        status = [m for m in statuses(operator, 3000) if m.topic == "status"]
        assert status and status[-1].data["refused"]["data"] >= 2 and status[-1].data["refused"]["monitor"] >= 2
    finally:
        ctx.destroy(0)
        rx.stop()
    assert "peer_refused" in rx.log_text()
