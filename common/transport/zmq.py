"""ZeroMQ: the wires between the daemons (TX's DEALER, RX's ROUTER) and the plain bytes bearer.

pyzmq's errors stop here: a send that cannot be queued becomes ``Unreachable``. Sockets
get LINGER 0 so a daemon never hangs at exit on undeliverable messages (zguide). Both wires
take a ``SecurityConfig`` (``common.transport.security``): CURVE with ZAP, set before the
socket binds or connects. A CURVE client watches its handshakes through zmq's socket monitor
(``HandshakeWatch``), so a refused key is told apart from a wrong address.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import ClassVar

import zmq
from zmq.utils.monitor import recv_monitor_message

from common.clock import monotonic_ns
from common.errors import ConfigError, HandshakeRefused, Unreachable
from common.transport.base import Bearer, Notify, Received, Sent, Transport, Wire, send_frames
from common.transport.security import SecurityConfig, ServerSecurity, secure_client, secure_server
from common.wire.messages import MAX_REPLY_BYTES, Envelope

Context = zmq.Context[zmq.Socket[bytes]]

#: A TCP connect that has not completed in this time is abandoned and retried by zmq.
CONNECT_TIMEOUT_MS = 2000


#: What a refused CURVE client is told, whichever side is wrong: zmq cannot say which.
REFUSED = "refused: your key is not in the peer's allow-list (or wrong peer key)"

#: The client-side handshake events: a ZAP denial (AUTH, status 400), a server that cannot
#: decrypt our HELLO because we hold the wrong server key (NO_DETAIL), a broken handshake.
_REFUSALS = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
#: Monitor events read per ``HandshakeWatch.poll``: zmq retries a refused connect about every
#: 100-200 ms, so this bounds one call however long nobody looked.
MAX_EVENTS_PER_POLL = 256


def bind_endpoint(sock: zmq.Socket[bytes], endpoint: str, what: str) -> None:
    """``sock.bind(endpoint)``, with zmq's errors (a port in use above all) as one ConfigError."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        hint = " (another process holds it: stop it or pick another port)" if exc.errno == zmq.EADDRINUSE else ""
        raise ConfigError(f"{what}: cannot bind {endpoint}: {exc.strerror}{hint}") from exc


class HandshakeWatch:
    """The outcome of a CURVE client's handshakes, read from zmq's socket monitor.

    From send and recv a refused key looks exactly like a wrong address (nothing ever
    arrives); only the monitor hears the peer's refusal. Attach before ``connect``.
    """

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self._sock = sock
        self.socket: zmq.Socket[bytes] = sock.get_monitor_socket(_REFUSALS | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        #: The last handshake was refused (``REFUSED``), or None: none refused since the last success.
        self.refused: str | None = None

    def poll(self) -> str | None:
        """Read the events waiting (bounded) and return ``refused``."""
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                event = recv_monitor_message(self.socket, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            self.refused = REFUSED if event & _REFUSALS else None
        return self.refused

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self.socket.close(0)


def make_socket(ctx: Context, kind: int, *, max_msg: int | None = None) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if max_msg is not None:
        # Transport-level backstop: zmq drops the peer before allocating an oversize message.
        sock.setsockopt(zmq.MAXMSGSIZE, max_msg)
    return sock


class ZmqBearer(Bearer):
    """The payload bytes themselves in the frame beside the envelope."""

    transport: ClassVar[Transport] = Transport.ZMQ

    def send(self, wire: Wire, envelope: Envelope, payload: bytes) -> Sent:
        return send_frames(wire, envelope, payload)

    def receive(self, envelope: Envelope, frame: memoryview, notify: Notify) -> Received:
        return Received(frame)


class DealerWire:
    """TX's end: a DEALER connected to RX that refuses to queue for an absent peer."""

    def __init__(self, ctx: Context, endpoint: str, security: SecurityConfig | None = None) -> None:
        self._ctx = ctx
        self.endpoint = endpoint
        self.security = security or SecurityConfig()
        #: When the current socket was built (monotonic ns): a fresh one needs time to connect.
        self.built_ns = 0
        #: The current socket's handshake monitor (CURVE only).
        self.handshake: HandshakeWatch | None = None
        self.socket = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        # Replies are small (a report carries one byte per test vector): anything far larger
        # is dropped by zmq before TX allocates it.
        sock = make_socket(self._ctx, zmq.DEALER, max_msg=2 * MAX_REPLY_BYTES)
        # With IMMEDIATE a send to a peer that is not connected fails at once and the batch
        # stays ours, instead of vanishing into a pipe to a dead receiver.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        # Give up a TCP connect that hangs (SYNs lost in an outage) and let zmq retry at once,
        # instead of waiting out the kernel's SYN backoff (up to a minute and more).
        sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        watch = None
        try:
            if secure_client(sock, self.security, endpoint=self.endpoint):
                watch = HandshakeWatch(sock)
            sock.connect(self.endpoint)
        except BaseException:
            if watch is not None:
                watch.close()
            sock.close(0)
            raise
        self.handshake = watch
        self.built_ns = monotonic_ns()
        return sock

    def send(self, frames: Sequence[bytes | memoryview]) -> None:
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            if self.refused() is not None:
                raise HandshakeRefused(f"{REFUSED} ({self.endpoint})") from None
            raise Unreachable(f"no receiver connected at {self.endpoint}") from None
        except zmq.ZMQError as exc:
            raise Unreachable(f"send to {self.endpoint} failed: {exc}") from exc

    def refused(self) -> str | None:
        """Why the peer refused our last handshake (``REFUSED``), or None."""
        return None if self.handshake is None else self.handshake.poll()

    def recv(self) -> list[bytes] | None:
        """One waiting message, or None."""
        try:
            return self.socket.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            raise Unreachable(f"receive from {self.endpoint} failed: {exc}") from exc

    def rebuild(self) -> zmq.Socket[bytes]:
        """A fresh socket (Lazy Pirate): the old one may hold a pipe to a dead peer."""
        self.close()
        self.socket = self._connect()
        return self.socket

    def close(self) -> None:
        if self.handshake is not None:
            self.handshake.close()
            self.handshake = None
        self.socket.close(0)


class RouterWire:
    """RX's end: a ROUTER bound for any number of senders, with a message-size backstop."""

    def __init__(self, ctx: Context, bind: str, *, max_msg: int | None = None,
                 security: SecurityConfig | None = None, domain: str = "data") -> None:
        self.socket = make_socket(ctx, zmq.ROUTER, max_msg=max_msg)
        self.guard: ServerSecurity | None = None
        try:
            self.guard = secure_server(self.socket, security or SecurityConfig(), endpoint=bind, domain=domain)
            bind_endpoint(self.socket, bind, "bind")
        except BaseException:
            self.close()
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def refused(self) -> int:
        """Clients whose key the allow-list refused."""
        return 0 if self.guard is None else self.guard.refused

    def poll(self, timeout_ms: int) -> bool:
        return bool(self.socket.poll(timeout_ms))

    def recv(self) -> tuple[bytes, list[memoryview]]:
        """The sender's identity and the message's frames (zero-copy views)."""
        frames = self.socket.recv_multipart(copy=False)
        return frames[0].bytes, [f.buffer for f in frames[1:]]

    def reply(self, peer: bytes, frame: bytes) -> None:
        try:
            self.socket.send_multipart([peer, frame], flags=zmq.NOBLOCK)
        except zmq.Again:
            raise Unreachable("peer gone or its send queue is full") from None
        except zmq.ZMQError as exc:
            raise Unreachable(f"reply failed: {exc}") from exc

    def close(self) -> None:
        self.socket.close(0)
        if self.guard is not None:
            self.guard.release()
            self.guard = None
