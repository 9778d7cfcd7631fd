"""CURVE with ZAP on the wires: who gets in, who is refused and counted, and the loopback rule."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import pytest
import zmq

from common.errors import ConfigError, Unreachable
from common.transport.security import SecurityConfig, is_local, keygen, secure_client, secure_server
from common.transport.zmq import DealerWire, RouterWire

#: How long a refused client is given to get a message through (it must not).
REFUSED_WAIT_MS = 700
DELIVER_WAIT_MS = 5000


@pytest.mark.parametrize(("endpoint", "local"), [
    ("tcp://127.0.0.1:5555", True),
    ("tcp://127.3.2.1:*", True),
    ("tcp://localhost:5555", True),
    ("tcp://[::1]:5555", True),
    ("ipc:///tmp/semalign.sock", True),
    ("inproc://x", True),
    ("tcp://0.0.0.0:5555", False),
    ("tcp://*:5555", False),
    ("tcp://10.0.0.2:5555", False),
    ("tcp://rx-laptop.local:5555", False),
    ("tcp://127.0.0.1:0;10.0.0.2:5555", False),
    ("udp://127.0.0.1:5555", False),
])
def test_is_local(endpoint: str, local: bool) -> None:
    assert is_local(endpoint) is local


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rx, tx and stranger key pairs; the allow directory holds tx's public key only."""
    root = tmp_path_factory.mktemp("keys")
    for name in ("rx", "tx", "stranger"):
        keygen(name, root / name)
    (root / "allow").mkdir()
    (root / "allow" / "tx.key").write_bytes((root / "tx" / "tx.key").read_bytes())
    return root


def test_keygen_writes_a_private_secret_and_refuses_to_overwrite(tmp_path: Path) -> None:
    public, secret = keygen("op", tmp_path / "k")
    assert (public.name, secret.name) == ("op.key", "op.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" not in public.read_text() and "secret-key" in secret.read_text()
    with pytest.raises(ConfigError, match="exists"):
        keygen("op", tmp_path / "k")
    with pytest.raises(ConfigError, match="plain name"):
        keygen("../op", tmp_path / "k")


@pytest.mark.parametrize(("role", "endpoint"), [("server", "tcp://0.0.0.0:5555"), ("client", "tcp://10.1.2.3:5555")])
def test_plain_socket_off_loopback_is_refused_unless_insecure(role: str, endpoint: str) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER if role == "server" else zmq.DEALER)
    try:
        def secure(security: SecurityConfig) -> object:
            if role == "server":
                return secure_server(sock, security, endpoint=endpoint, domain="data")
            return secure_client(sock, security, endpoint=endpoint)

        with pytest.raises(ConfigError, match="not a loopback address"):
            secure(SecurityConfig())
        assert secure(SecurityConfig(insecure=True)) in (None, False)
    finally:
        sock.close(0)
        ctx.term()


def test_plain_socket_on_loopback_needs_no_keys() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        assert secure_server(sock, SecurityConfig(), endpoint="tcp://127.0.0.1:*", domain="data") is None
    finally:
        sock.close(0)
        ctx.term()


def bad_configs(keys: Path) -> list[tuple[str, SecurityConfig, str]]:
    return [
        ("public file as key", SecurityConfig(key=str(keys / "rx" / "rx.key"), allow=str(keys / "allow")),
         "public certificate"),
        # Issue 16, defect 13: was "Invalid certificate file".
        ("missing key file", SecurityConfig(key=str(keys / "nope.key_secret"), allow=str(keys / "allow")),
         "nope.key_secret: no such file"),
        ("no allow list", SecurityConfig(key=str(keys / "rx" / "rx.key_secret")), "security.allow"),
        ("empty allow dir", SecurityConfig(key=str(keys / "rx" / "rx.key_secret"), allow=str(keys / "rx" / "none")),
         "at least one public"),
    ]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_key_readable_by_others_is_refused_with_the_chmod_to_run(keys: Path, tmp_path: Path,
                                                                        mode: int) -> None:
    """Issue 16, defect 6: a 0644 secret key was used silently; as ssh does, it is refused."""
    secret = tmp_path / "tx.key_secret"
    secret.write_bytes((keys / "tx" / "tx.key_secret").read_bytes())
    secret.chmod(mode)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        for use in (lambda: RouterWire(ctx, "tcp://127.0.0.1:*", security=SecurityConfig(key=str(secret),
                                                                                      allow=str(keys / "allow"))),
                    lambda: DealerWire(ctx, "tcp://127.0.0.1:5555",
                                       SecurityConfig(key=str(secret), peer=str(keys / "rx" / "rx.key")))):
            with pytest.raises(ConfigError, match=f"mode {mode:04o}.*run chmod 600 {secret}"):
                use()
        secret.chmod(0o600)
        DealerWire(ctx, "tcp://127.0.0.1:5555",
                   SecurityConfig(key=str(secret), peer=str(keys / "rx" / "rx.key"))).close()
    finally:
        ctx.term()


@pytest.mark.parametrize("case", range(4))
def test_bad_server_configs_are_refused_with_the_key_named(keys: Path, case: int) -> None:
    _, security, message = bad_configs(keys)[case]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with pytest.raises(ConfigError, match=message):
            RouterWire(ctx, "tcp://127.0.0.1:*", security=security)
    finally:
        ctx.term()  # returns: a refused wire leaves no socket or authenticator behind


def server_security(keys: Path) -> SecurityConfig:
    return SecurityConfig(key=str(keys / "rx" / "rx.key_secret"), allow=str(keys / "allow"))


def clients(keys: Path) -> list[tuple[str, SecurityConfig | None, bool]]:
    """(name, client security, admitted?)"""
    rx_public = str(keys / "rx" / "rx.key")
    return [
        ("listed key", SecurityConfig(key=str(keys / "tx" / "tx.key_secret"), peer=rx_public), True),
        ("unknown key", SecurityConfig(key=str(keys / "stranger" / "stranger.key_secret"), peer=rx_public), False),
        ("wrong server key", SecurityConfig(key=str(keys / "tx" / "tx.key_secret"),
                                            peer=str(keys / "stranger" / "stranger.key")), False),
        ("no key at all", None, False),
    ]


@pytest.mark.parametrize("case", range(4))
def test_only_listed_clients_get_through(keys: Path, case: int) -> None:
    name, client_security, admitted = clients(keys)[case]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    rx = RouterWire(ctx, "tcp://127.0.0.1:*", security=server_security(keys))
    tx = DealerWire(ctx, rx.endpoint, client_security)
    try:
        # IMMEDIATE: a send succeeds only once a handshake completed; try for a bounded time.
        delivered = False
        for _ in range(DELIVER_WAIT_MS // 50 if admitted else REFUSED_WAIT_MS // 50):
            with contextlib.suppress(Unreachable):
                tx.send([b"hello"])
            if rx.poll(50):
                _, frames = rx.recv()
                delivered = bytes(frames[0]) == b"hello"
                break
        assert delivered is admitted, name
        if name == "unknown key":
            assert rx.refused >= 1  # ZAP refused the key and counted it
        if admitted:
            assert rx.refused == 0
    finally:
        tx.close()
        rx.close()
        ctx.term()


def test_two_domains_keep_their_own_allow_lists(keys: Path, tmp_path: Path) -> None:
    """One context, one ZAP handler: the data socket admits tx, the control socket only the stranger."""
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "stranger.key").write_bytes((keys / "stranger" / "stranger.key").read_bytes())
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    data = RouterWire(ctx, "tcp://127.0.0.1:*", security=server_security(keys), domain="data")
    control = RouterWire(ctx, "tcp://127.0.0.1:*", domain="control",
                         security=SecurityConfig(key=str(keys / "rx" / "rx.key_secret"), allow=str(tmp_path / "ops")))
    tx_keys = SecurityConfig(key=str(keys / "tx" / "tx.key_secret"), peer=str(keys / "rx" / "rx.key"))
    probes = [DealerWire(ctx, data.endpoint, tx_keys), DealerWire(ctx, control.endpoint, tx_keys)]
    try:
        got = []
        for wire, server in zip(probes, (data, control), strict=True):
            ok = False
            for _ in range(40):
                with contextlib.suppress(Unreachable):
                    wire.send([b"x"])
                if server.poll(50):
                    ok = True
                    break
            got.append(ok)
        assert got == [True, False]
        assert control.refused >= 1 and data.refused == 0
    finally:
        for wire in probes:
            wire.close()
        data.close()
        control.close()
        ctx.term()
