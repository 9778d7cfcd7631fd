"""The watcher's subscriber on real CURVE sockets over loopback: a refused handshake is said, and
the same source connects once the daemon admits the key (libzmq alone never tries again)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from common.telemetry.stream import MonitorMessage
from common.tools.watch.source import NEEDS_KEYS, NOT_ALLOWED, MonitorSource
from common.transport.security import SecurityConfig
from tests.procs import wait_for

#: The test's back-off: short, so a refusal is retried within the waits below.
BACKOFF = (0.2, 0.4)
WAIT_S = 10.0


class Daemon:
    """A daemon's monitor socket as the daemons bind it: an XPUB, CURVE server in ZAP domain
    ``monitor``, admitting the public keys in ``allow``. ``restart`` rebinds it with the
    allow-list re-read, as a restarted daemon would."""

    def __init__(self, keys: Path, allow: Path) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        self.public, self.secret = zmq.auth.load_certificate(keys / "tx.key_secret")
        self.allow = allow
        self.sock: zmq.Socket[bytes] | None = None
        self.endpoint = ""
        self._bind("tcp://127.0.0.1:0")

    def _bind(self, endpoint: str) -> None:
        self.auth.configure_curve(domain="monitor", location=str(self.allow))
        sock = self.ctx.socket(zmq.XPUB)
        sock.linger = 0
        sock.zap_domain = b"monitor"
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

        def bound() -> bool:
            try:
                sock.bind(endpoint)
            except zmq.ZMQError:  # the old socket's port is released asynchronously
                return False
            return True

        wait_for(bound, WAIT_S, f"binding {endpoint}")
        self.sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def restart(self) -> None:
        assert self.sock is not None
        self.sock.close(0)
        self._bind(self.endpoint)

    def publish(self, seq: int) -> None:
        assert self.sock is not None
        self.sock.send_multipart(MonitorMessage("status", "tx", seq, 0, {"paused": False}).encode())

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        self.auth.stop()
        self.ctx.term()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for name in ("tx", "op", "other"):
        zmq.auth.create_certificates(str(tmp_path), name)
        (tmp_path / f"{name}.key_secret").chmod(0o600)  # as keygen leaves it: a readable one is refused
    return tmp_path


@pytest.fixture
def daemon(keys: Path) -> Iterator[Daemon]:
    allow = keys / "allow"
    allow.mkdir()
    shutil.copy(keys / "other.key", allow)  # someone else's key: the operator's is not there yet
    d = Daemon(keys, allow)
    yield d
    d.close()


def received(source: MonitorSource, daemon: Daemon, got: list[MonitorMessage]) -> bool:
    daemon.publish(len(got) + 1)
    got.extend(source.poll())
    return bool(got)


def test_a_refused_watcher_says_why_and_connects_once_its_key_is_allowed(keys: Path, daemon: Daemon) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    source = MonitorSource([daemon.endpoint], ctx=ctx, security=SecurityConfig(key=str(keys / "op.key_secret")),
                           peers={daemon.endpoint: str(keys / "tx.key")}, backoff=BACKOFF)
    got: list[MonitorMessage] = []
    try:
        # (A daemon that hangs up before its refusal is read looks like a wrong key for one try: zmq retries.)
        refusal = wait_for(lambda: source.poll() == [] and (r := source.refusals().get(daemon.endpoint))
                           and r.reason == NOT_ALLOWED and r, WAIT_S, "the refusal")
        assert refusal.retry_s in BACKOFF
        # Still refused while the key is not allowed: the socket is rebuilt, asked again, refused again.
        wait_for(lambda: source.poll() == [] and source.links[0].rebuilds >= 2, WAIT_S, "two rebuilds")
        assert source.refusals()[daemon.endpoint].reason == NOT_ALLOWED and not got
        shutil.copy(keys / "op.key", daemon.allow)
        daemon.restart()
        wait_for(lambda: received(source, daemon, got), WAIT_S, "a message after the key was allowed")
        assert got[0].role == "tx" and source.refusals() == {}
    finally:
        source.close()
        ctx.term()


def test_a_watcher_without_keys_is_told_the_daemon_requires_them(daemon: Daemon) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    source = MonitorSource([daemon.endpoint], ctx=ctx, backoff=BACKOFF)
    try:
        # The daemon's refusal reaches zmq as a mechanism mismatch or, when it hangs up first, with no detail.
        refusal = wait_for(lambda: source.poll() == [] and source.refusals().get(daemon.endpoint), WAIT_S,
                           "the refusal")
        assert refusal.reason == NEEDS_KEYS
        wait_for(lambda: source.poll() == [] and source.links[0].refused >= 3, WAIT_S, "two more refusals")
        assert source.refusals()[daemon.endpoint].reason == NEEDS_KEYS
    finally:
        source.close()
        ctx.term()


def test_a_wrong_peer_key_is_said_and_retried_by_zmq(keys: Path, daemon: Daemon) -> None:
    shutil.copy(keys / "op.key", daemon.allow)
    daemon.restart()
    ctx: zmq.Context[Any] = zmq.Context()
    source = MonitorSource([daemon.endpoint], ctx=ctx, security=SecurityConfig(key=str(keys / "op.key_secret")),
                           peers={daemon.endpoint: str(keys / "other.key")}, backoff=BACKOFF)
    try:
        refusal = wait_for(lambda: source.poll() == [] and source.refusals().get(daemon.endpoint), WAIT_S,
                           "the refusal")
        assert "wrong peer key" in refusal.reason and refusal.retry_s is None
        assert source.links[0].rebuilds == 0
    finally:
        source.close()
        ctx.term()
