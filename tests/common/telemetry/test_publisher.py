"""The monitor socket never blocks: a subscriber that stops reading costs dropped (counted) messages."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import zmq
import zmq.auth

from common.errors import ConfigError
from common.telemetry.publisher import MemoryPublisher, ZmqPublisher
from common.telemetry.stream import MonitorMessage

RECORD = MonitorMessage("record", "tx", 1, 1, {"batch": 1, "pad": "x" * 512}).encode()


@pytest.fixture
def ctx() -> zmq.Context[zmq.Socket[bytes]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def subscribe(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, *, rcvhwm: int = 10) -> zmq.Socket[bytes]:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.setsockopt(zmq.RCVBUF, 4096)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return sub


def wait_subscribed(pub: ZmqPublisher, sub: zmq.Socket[bytes]) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.publish(RECORD)
        if sub.poll(20):
            sub.recv_multipart()
            return
    raise AssertionError("subscriber never received a message")


def test_publish_without_subscriber_is_sent_and_never_dropped(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    pub = ZmqPublisher(ctx, "tcp://127.0.0.1:*", hwm=5)
    try:
        assert all(pub.publish(RECORD) for _ in range(50))
        assert (pub.sent, pub.dropped) == (50, 0)
    finally:
        pub.close()


def test_stalled_subscriber_drops_and_counts_without_blocking(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    pub = ZmqPublisher(ctx, "tcp://127.0.0.1:*", hwm=5)
    sub = subscribe(ctx, pub.endpoint)
    try:
        wait_subscribed(pub, sub)
        start = time.monotonic()
        results = [pub.publish(RECORD) for _ in range(5000)]
        elapsed = time.monotonic() - start
        assert pub.dropped == results.count(False) > 0
        assert pub.sent + pub.dropped >= 5000
        # Bounded: each publish returns at once (5000 messages, generous margin for a loaded CI host).
        assert elapsed < 5.0
        # A subscriber that resumes reading gets messages again.
        got = 0
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            while sub.poll(10):
                sub.recv_multipart()
                got += 1
        assert got > 0
    finally:
        sub.close(0)
        pub.close()


def test_bind_failure_is_a_config_error(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    first = ZmqPublisher(ctx, "tcp://127.0.0.1:*")
    try:
        with pytest.raises(ConfigError, match="monitor: cannot bind"):
            ZmqPublisher(ctx, first.endpoint)
    finally:
        first.close()


@pytest.mark.parametrize(("capacity", "published", "kept", "dropped"), [(None, 7, 7, 0), (3, 7, 3, 4), (0, 2, 0, 2)])
def test_memory_twin_drops_like_a_full_queue(capacity: int | None, published: int, kept: int, dropped: int) -> None:
    pub = MemoryPublisher(capacity)
    for _ in range(published):
        pub.publish(RECORD)
    assert (len(pub.take()), pub.dropped, pub.sent) == (kept, dropped, kept)
    assert pub.take() == []


def test_a_plain_monitor_off_loopback_is_refused_like_every_socket(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    from common.transport.security import SecurityConfig

    with pytest.raises(ConfigError, match="not a loopback address"):
        ZmqPublisher(ctx, "tcp://0.0.0.0:*", security=SecurityConfig())
    loopback = ZmqPublisher(ctx, "tcp://127.0.0.1:*", security=SecurityConfig())
    loopback.close()


def test_a_curve_monitor_reads_monitor_allow_not_the_data_allow_list(ctx: zmq.Context[zmq.Socket[bytes]],
                                                                     tmp_path: Path) -> None:
    """Issue 16, defect 5: the monitor shared the data allow-list; it has its own, and needs it."""
    from common.transport.security import SecurityConfig, keygen

    for name in ("rx", "op", "tx"):
        keygen(name, tmp_path / name)
    for allow, name in (("allow", "tx"), ("ops", "op")):
        (tmp_path / allow).mkdir()
        (tmp_path / allow / f"{name}.key").write_bytes((tmp_path / name / f"{name}.key").read_bytes())
    keys = SecurityConfig(key=str(tmp_path / "rx/rx.key_secret"), allow=str(tmp_path / "allow"))
    with pytest.raises(ConfigError, match=r"security\.monitor_allow"):
        ZmqPublisher(ctx, "tcp://127.0.0.1:*", security=keys)
    pub = ZmqPublisher(ctx, "tcp://127.0.0.1:*", security=replace(keys, monitor_allow=str(tmp_path / "ops")))
    got = {}
    try:
        for who in ("op", "tx"):
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            public, secret = zmq.auth.load_certificate(tmp_path / who / f"{who}.key_secret")
            sub.curve_secretkey, sub.curve_publickey = secret, public
            sub.curve_serverkey = zmq.auth.load_certificate(tmp_path / "rx/rx.key")[0]
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(pub.endpoint)
            got[who] = False
            for _ in range(30 if who == "op" else 10):  # the CURVE handshake fits under the subscription limit
                pub.publish(RECORD)
                if sub.poll(50):
                    got[who] = True
                    break
            sub.close(0)
        assert got == {"op": True, "tx": False}
        assert pub.refused >= 1
    finally:
        pub.close()
