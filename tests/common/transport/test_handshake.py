"""Defect 12 of issue 16: a refused CURVE key is told apart from a wrong address, with real
sockets and keys: the client's socket monitor hears the refusal, ``ctl`` says so in one line
with its own exit code, and TX's wire raises ``HandshakeRefused`` instead of ``Unreachable``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from common.errors import HandshakeRefused, TransportError, Unreachable
from common.runtime import free_tcp_port
from common.transport.security import SecurityConfig, ServerSecurity, keygen, secure_server
from common.transport.zmq import REFUSED, DealerWire, HandshakeWatch, make_socket
from tests.procs import wait_for
from tx import ctl
from tx.control import ControlRequest


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    for name in ("server", "op", "stranger", "impostor"):
        keygen(name, root / name)
    (root / "allow").mkdir()
    (root / "allow" / "op.key").write_bytes((root / "op" / "op.key").read_bytes())
    return root


@pytest.fixture
def server(keys: Path) -> Iterator[str]:
    """A CURVE ROUTER that admits only ``op``; its endpoint."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    sock = make_socket(ctx, zmq.ROUTER)
    guard = secure_server(sock, SecurityConfig(key=str(keys / "server/server.key_secret"), allow=str(keys / "allow")),
                          endpoint=endpoint, domain="control")
    sock.bind(endpoint)
    yield endpoint
    sock.close(0)
    assert guard is not None
    guard.release()


def client(keys: Path, who: str, peer: str = "server") -> SecurityConfig:
    return SecurityConfig(key=str(keys / f"{who}/{who}.key_secret"), peer=str(keys / f"{peer}/{peer}.key"))


@pytest.mark.parametrize(("who", "peer", "refused"), [
    ("op", "server", False),          # allowed
    ("stranger", "server", True),     # not in the allow-list (ZAP says 400)
    ("op", "impostor", True),         # wrong peer key: the server cannot read our HELLO
])
def test_the_monitor_hears_a_refusal(keys: Path, server: str, who: str, peer: str, refused: bool) -> None:
    wire = DealerWire(zmq.Context.instance(), server, client(keys, who, peer))
    try:
        assert wire.handshake is not None
        if refused:
            wait_for(lambda: wire.refused() == REFUSED, 5, "the refusal on the monitor")
            with pytest.raises(HandshakeRefused, match="not in the peer's allow-list"):
                wire.send([b"hello"])
        else:
            wait_for(lambda: _sent(wire), 5, "a send to the connected server")
            assert wire.refused() is None
    finally:
        wire.close()


def _sent(wire: DealerWire) -> bool:
    try:
        wire.send([b"hello"])
    except Unreachable:
        return False
    return True


def test_a_wrong_address_is_still_plain_unreachable(keys: Path) -> None:
    wire = DealerWire(zmq.Context.instance(), f"tcp://127.0.0.1:{free_tcp_port()}", client(keys, "op"))
    try:
        time.sleep(0.3)  # nothing to wait for: nobody listens, no event will come
        with pytest.raises(Unreachable) as info:
            wire.send([b"hello"])
        assert not isinstance(info.value, HandshakeRefused)
    finally:
        wire.close()


def test_a_success_clears_an_earlier_refusal(keys: Path, server: str) -> None:
    sock = make_socket(zmq.Context.instance(), zmq.DEALER)
    watch = HandshakeWatch(sock)
    try:
        watch.refused = REFUSED  # as if an earlier connection had been refused
        from common.transport.security import secure_client

        secure_client(sock, client(keys, "op"), endpoint=server)
        sock.connect(server)
        wait_for(lambda: watch.poll() is None, 5, "the handshake to succeed")
    finally:
        watch.close()
        sock.close(0)


def test_ctl_says_refused_at_once(keys: Path, server: str) -> None:
    started = time.monotonic()
    with pytest.raises(HandshakeRefused, match="refused: your key is not in the peer's allow-list"):
        ctl.request(server, ControlRequest("status"), timeout_s=3.0, tries=3, security=client(keys, "stranger"))
    # Before: three tries of three seconds, then "no reply", as for a wrong address.
    assert time.monotonic() - started < 2.5


def test_ctl_main_prints_one_line_and_exits_4(keys: Path, server: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = ctl.main(["status", "--tx", server, "--security-key", str(keys / "stranger/stranger.key_secret"),
                     "--security-peer", str(keys / "server/server.key")])
    err = capsys.readouterr().err
    assert code == ctl.EXIT_REFUSED == 4
    assert err.strip().splitlines() == [f"semalign ctl: {REFUSED} ({server})"]


def test_ctl_without_an_answer_is_still_no_reply(keys: Path) -> None:
    with pytest.raises(TransportError) as info:
        ctl.request(f"tcp://127.0.0.1:{free_tcp_port()}", ControlRequest("status"), timeout_s=0.3, tries=1,
                    security=client(keys, "op"))
    assert not isinstance(info.value, HandshakeRefused)


def test_a_fresh_socket_gets_in_once_the_peer_allows_the_key(keys: Path, tmp_path: Path) -> None:
    """What TX does after ``rx_refused``: rebuild, and connect as soon as RX lets the key in."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    server_key = str(keys / "server/server.key_secret")

    def serve(allow: Path) -> tuple[zmq.Socket[bytes], ServerSecurity]:
        sock = make_socket(ctx, zmq.ROUTER)
        guard = secure_server(sock, SecurityConfig(key=server_key, allow=str(allow)), endpoint=endpoint,
                              domain="data")
        assert guard is not None
        sock.bind(endpoint)
        return sock, guard

    sock, guard = serve(keys / "allow")
    wire = DealerWire(ctx, endpoint, client(keys, "stranger"))
    try:
        wait_for(lambda: wire.refused() == REFUSED, 5, "the refusal")
        sock.close(0)
        guard.release()
        allowed = tmp_path / "allow"
        allowed.mkdir()
        (allowed / "stranger.key").write_bytes((keys / "stranger/stranger.key").read_bytes())
        sock, guard = serve(allowed)  # "RX restarted with the key allowed"
        wire.rebuild()
        wait_for(lambda: _sent(wire), 5, "the rebuilt socket to connect")
        assert sock.poll(2000) and sock.recv_multipart()[1] == b"hello"
    finally:
        wire.close()
        sock.close(0)
        guard.release()
