"""The /metrics server: a connection cap, a deadline per connection, mutual TLS, loopback unless TLS.

Issue 16, defect 1: prometheus-client's server bound 0.0.0.0 in clear text and spent a thread per
idle connection (1,000 idle connections were 1,000 threads and every descriptor of RX).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.settings import DaemonSettings
from common.telemetry import open_telemetry
from common.telemetry.metrics_server import MetricsServer, tls_context
from common.telemetry.prometheus import Exporter
from common.transport.security import SecurityConfig
from tests.procs import ROOT, wait_for

TLS_CERTS = ROOT / "deploy" / "tls" / "tls-certs.sh"


def scrape(port: int, *, context: ssl.SSLContext | None = None, timeout: float = 5.0) -> str:
    scheme = "https" if context is not None else "http"
    with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/metrics", timeout=timeout, context=context) as r:
        body: str = r.read().decode()
        return body


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def closed_by_server(sock: socket.socket, timeout: float = 3.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def exporter() -> Exporter:
    e = Exporter()
    yield e
    e.close()


def connect_from(port: int, source: str) -> socket.socket:
    """A connection from another loopback address (any 127/8 address is this host's)."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def test_one_address_holds_at_most_its_share_and_another_still_gets_in() -> None:
    """A stranger needs no certificate to open connections: its idle ones hold MAX_PER_ADDRESS
    workers at most, so the operator's scrape from elsewhere is answered at once."""
    e = Exporter()
    server = MetricsServer(e.registry, "127.0.0.1", 0, max_connections=8, max_per_address=2)
    stranger = [connect_from(server.port, "127.0.0.3") for _ in range(10)]
    try:
        assert sum(closed_by_server(s, timeout=2) for s in stranger) == 8
        assert server.turned_away == 8
        operator = connect_from(server.port, "127.0.0.2")
        operator.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in operator.recv(65536)
        operator.close()
    finally:
        for s in stranger:
            s.close()
        server.close()
        e.close()


def test_connections_beyond_the_cap_are_closed_at_once_and_a_scrape_follows() -> None:
    e = Exporter()
    server = MetricsServer(e.registry, "127.0.0.1", 0, max_connections=2, max_per_address=3)
    port = server.port
    held = [connect(port) for _ in range(2)]
    extra = [connect(port) for _ in range(5)]
    try:
        assert all(closed_by_server(s) for s in extra)
        assert server.turned_away == 5
        for s in held:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"semalign_batches_total" in s.recv(65536) + s.recv(65536)
        assert "semalign_batches_total" in wait_for(lambda: _scraped(port), 5, "a scrape after the held ones")
    finally:
        for s in held + extra:
            s.close()
        server.close()
        e.close()


def _scraped(port: int) -> str | None:
    try:
        return scrape(port, timeout=2)
    except OSError:
        return None  # a held connection's worker had not yet let go of its slot


def test_an_idle_or_dripping_connection_is_cut_at_its_deadline() -> None:
    e = Exporter()
    server = MetricsServer(e.registry, "127.0.0.1", 0, max_connections=1, deadline_s=0.5)
    try:
        idle = connect(server.port)
        start = time.monotonic()
        # A drip of one header byte at a time: each read would wait, the deadline is for the whole request.
        stop = threading.Event()

        def drip() -> None:
            for _ in range(100):
                if stop.wait(0.1):
                    return
                try:
                    idle.send(b"X")
                except OSError:
                    return

        dripper = threading.Thread(target=drip)
        dripper.start()
        assert closed_by_server(idle, timeout=5)
        stop.set()
        dripper.join()
        assert time.monotonic() - start < 2.5 and server.timed_out == 1
        idle.close()
        assert "semalign_batches_total" in scrape(server.port)  # the slot is free again
    finally:
        server.close()
        e.close()


def test_only_get_is_answered(exporter: Exporter) -> None:
    port = exporter.serve(0)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 405


@dataclass(frozen=True)
class Cfg(DaemonSettings):
    security: SecurityConfig = field(default_factory=SecurityConfig)


@pytest.mark.parametrize("addr", ["0.0.0.0", "::", "192.0.2.1"])
def test_off_loopback_without_tls_refuses_to_start(addr: str) -> None:
    with pytest.raises(ConfigError, match=r"not a loopback address.*prometheus_cert"):
        open_telemetry("rx", Cfg(prometheus_port=0, prometheus_addr=addr))


def test_off_loopback_in_clear_text_only_with_insecure(caplog: pytest.LogCaptureFixture) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        tel = open_telemetry("rx", Cfg(prometheus_port=0, prometheus_addr="0.0.0.0",
                                       security=SecurityConfig(insecure=True)))
    try:
        assert tel.exporter is not None and tel.exporter.port
        assert [e for e in logs if e["event"] == "insecure_metrics"]
    finally:
        tel.close()


def test_the_default_address_is_loopback() -> None:
    assert DaemonSettings().prometheus_addr == "127.0.0.1"


@pytest.mark.parametrize("given", [{"prometheus_cert": "a"}, {"prometheus_cert": "a", "prometheus_key": "b"},
                                   {"prometheus_client_ca": "c"}])
def test_tls_needs_all_three_files(given: dict[str, str]) -> None:
    from rx.config import RxConfig

    with pytest.raises(ConfigError, match="missing"):
        RxConfig(**given)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a client certificate it signed, and a stranger's from another CA."""
    if shutil.which("openssl") is None:
        pytest.skip("tls-certs.sh needs openssl")
    root = tmp_path_factory.mktemp("tls")
    for args in (["ca", root / "ca"], ["server", root / "ca", "rx", "127.0.0.1", "localhost"],
                 ["client", root / "ca", "prometheus"], ["ca", root / "other"], ["client", root / "other", "stranger"]):
        subprocess.run(["bash", str(TLS_CERTS), *map(str, args)], check=True, capture_output=True, timeout=60)
    return root


def client_context(tls: Path, client: str | None, ca: str = "ca") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls / "ca" / "ca.crt"))
    if client is not None:
        ctx.load_cert_chain(str(tls / ca / f"{client}.crt"), str(tls / ca / f"{client}.key"))
    return ctx


def tls_cfg(tls: Path, **changes: object) -> Cfg:
    cfg = Cfg(prometheus_port=0, prometheus_addr="0.0.0.0", prometheus_cert=str(tls / "ca" / "rx.crt"),
              prometheus_key=str(tls / "ca" / "rx.key"), prometheus_client_ca=str(tls / "ca" / "ca.crt"))
    return replace(cfg, **changes)  # type: ignore[arg-type]


def test_tls_scrape_needs_a_client_certificate_from_the_ca(tls: Path) -> None:
    tel = open_telemetry("rx", tls_cfg(tls))  # off loopback: allowed, with mutual TLS
    try:
        assert tel.exporter is not None
        port = tel.exporter.port
        assert "semalign_batches_total" in scrape(port, context=client_context(tls, "prometheus"))
        # Strangers: no certificate, a certificate of another CA, plain HTTP.
        for context in (client_context(tls, None), client_context(tls, "stranger", ca="other")):
            with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
                scrape(port, context=context)
        with pytest.raises((ConnectionError, urllib.error.URLError, http_errors())):
            scrape(port)
        server = tel.exporter._server
        assert server is not None
        wait_for(lambda: not server._active, 5, "the refused connections to be closed")
    finally:
        tel.close()


def http_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


def test_a_tls_key_readable_by_others_is_refused(tls: Path, tmp_path: Path) -> None:
    key = tmp_path / "rx.key"
    key.write_bytes((tls / "ca" / "rx.key").read_bytes())
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {key}"):
        tls_context(str(tls / "ca" / "rx.crt"), str(key), str(tls / "ca" / "ca.crt"))
    with pytest.raises(ConfigError, match="no such file"):
        tls_context(str(tls / "ca" / "rx.crt"), str(tmp_path / "missing.key"), str(tls / "ca" / "ca.crt"))
