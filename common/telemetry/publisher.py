"""The monitor stream's socket: an XPUB bound with a high-water mark that drops instead of blocking.

With ``XPUB_NODROP`` a full subscriber queue makes the non-blocking send fail (EAGAIN)
instead of dropping silently, so every message that could not be queued is counted. A
subscriber that stops reading costs the messages, never the batch loop.
``MemoryPublisher`` is the in-memory twin tests read from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import zmq

from common.errors import ConfigError
from common.transport.zmq import Context, make_socket

#: Messages queued per subscriber before new ones are dropped (a record is ~1 KiB).
DEFAULT_HWM = 1000
#: Kernel send buffer per subscriber connection: with the HWM, what a stalled subscriber can hold
#: up (the kernel's own default grows to megabytes, hiding a stall for thousands of messages).
SNDBUF = 128 * 1024
#: Largest frame a subscriber may send. A subscription is one byte and a topic (``stream.TOPICS``: a
#: few letters; the watcher subscribes to ""), but zmq applies the limit to the handshake's frames
#: too, and CURVE's INITIATE is about 260-300 bytes (its metadata), so the floor is there. libzmq kept
#: every subscription byte: one 16 MiB subscription cost RX 0.7 GB. Larger frames drop the
#: subscriber before anything is allocated.
MAX_SUBSCRIPTION_BYTES = 1024
#: Subscription messages queued per subscriber before zmq stops reading its connection.
SUBSCRIPTION_HWM = 16


class Publisher(Protocol):
    """Where monitor messages go: ``publish`` never blocks and returns False for a dropped message."""

    sent: int
    dropped: int

    def publish(self, frames: Sequence[bytes]) -> bool: ...

    def close(self) -> None: ...


class ZmqPublisher:
    """The daemon's end of the monitor stream, bound at ``endpoint``."""

    def __init__(self, ctx: Context, endpoint: str, *, hwm: int = DEFAULT_HWM, security: Any = None) -> None:
        self.sent = 0
        self.dropped = 0
        self._server: Any = None
        self.socket = make_socket(ctx, zmq.XPUB, max_msg=MAX_SUBSCRIPTION_BYTES)
        try:
            self.socket.setsockopt(zmq.SNDHWM, hwm)
            self.socket.setsockopt(zmq.RCVHWM, SUBSCRIPTION_HWM)
            self.socket.setsockopt(zmq.SNDBUF, SNDBUF)
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)
            # Manual subscriptions: each subscriber is given everything ("") however many distinct
            # topics it sends, so the subscription table holds one entry, not whatever peers send.
            self.socket.setsockopt(zmq.XPUB_MANUAL, 1)
            if security is not None:
                from common.transport.security import secure_server

                self._server = secure_server(self.socket, security, endpoint=endpoint, domain="monitor")
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close(0)
            if self._server is not None:
                self._server.release()
            raise ConfigError(f"monitor: cannot bind {endpoint}: {exc}") from exc
        except ConfigError:
            self.socket.close(0)  # refused by the security rules before binding
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, frames: Sequence[bytes]) -> bool:
        self._drain_subscriptions()
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    @property
    def refused(self) -> int:
        """Subscribers whose key the monitor allow-list refused."""
        return 0 if self._server is None else int(self._server.refused)

    def _drain_subscriptions(self) -> None:
        # XPUB delivers (un)subscriptions as messages; read them so they never pile up. Bounded:
        # at most the HWM per subscriber is queued, and the loop ends when the queue is empty.
        while True:
            try:
                message = self.socket.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if message[:1] == b"\x01":
                # Applies to the subscriber whose message was just read (XPUB_MANUAL).
                self.socket.setsockopt(zmq.SUBSCRIBE, b"")

    def close(self) -> None:
        self.socket.close(0)
        if self._server is not None:
            self._server.release()


class MemoryPublisher:
    """In-memory twin: keeps published frames; with ``capacity``, a full queue drops like the HWM."""

    def __init__(self, capacity: int | None = None) -> None:
        self.sent = 0
        self.dropped = 0
        self.capacity = capacity
        self.frames: list[list[bytes]] = []
        self.closed = False

    def publish(self, frames: Sequence[bytes]) -> bool:
        if self.capacity is not None and len(self.frames) >= self.capacity:
            self.dropped += 1
            return False
        self.frames.append(list(frames))
        self.sent += 1
        return True

    def take(self) -> list[list[bytes]]:
        """Everything published since the last call (a subscriber that reads)."""
        out, self.frames = self.frames, []
        return out

    def close(self) -> None:
        self.closed = True
