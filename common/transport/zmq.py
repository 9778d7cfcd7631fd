"""ZeroMQ: the wires between the daemons (TX's DEALER, RX's ROUTER) and the plain bytes bearer.

pyzmq's errors stop here: a send that cannot be queued becomes ``Unreachable``. Sockets
get LINGER 0 so a daemon never hangs at exit on undeliverable messages (zguide). Both wires
take a ``SecurityConfig`` (``common.transport.security``): CURVE with ZAP, set before the
socket binds or connects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import zmq

from common.clock import monotonic_ns
from common.errors import Unreachable
from common.transport.base import Bearer, Notify, Received, Sent, Transport, Wire, send_frames
from common.transport.security import SecurityConfig, ServerSecurity, secure_client, secure_server
from common.wire.messages import MAX_REPLY_BYTES, Envelope

Context = zmq.Context[zmq.Socket[bytes]]

#: A TCP connect that has not completed in this time is abandoned and retried by zmq.
CONNECT_TIMEOUT_MS = 2000
#: Messages RX queues per TX before zmq stops reading that connection (the sender waits, nothing
#: is dropped): two batches in flight, a clock probe and a hello. zmq's default of 1,000 let one
#: peer park 1,000 maximal messages in RX's memory.
DATA_RCVHWM = 4
#: Replies TX queues from RX: a report or an error per batch in flight, clock replies, hellos.
REPLY_RCVHWM = 64


def make_socket(ctx: Context, kind: int, *, max_msg: int | None = None, rcvhwm: int | None = None) -> zmq.Socket[bytes]:
    """A socket with LINGER 0; ``max_msg`` bounds each frame a peer may send, ``rcvhwm`` the messages queued per peer."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if max_msg is not None:
        # Transport-level backstop: zmq drops the peer before allocating an oversize message.
        sock.setsockopt(zmq.MAXMSGSIZE, max_msg)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
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
        self.socket = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        # Replies are small (a report carries one byte per test vector): anything far larger
        # is dropped by zmq before TX allocates it.
        sock = make_socket(self._ctx, zmq.DEALER, max_msg=2 * MAX_REPLY_BYTES, rcvhwm=REPLY_RCVHWM)
        # With IMMEDIATE a send to a peer that is not connected fails at once and the batch
        # stays ours, instead of vanishing into a pipe to a dead receiver.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        # Give up a TCP connect that hangs (SYNs lost in an outage) and let zmq retry at once,
        # instead of waiting out the kernel's SYN backoff (up to a minute and more).
        sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        try:
            secure_client(sock, self.security, endpoint=self.endpoint)
            sock.connect(self.endpoint)
        except BaseException:
            sock.close(0)
            raise
        self.built_ns = monotonic_ns()
        return sock

    def send(self, frames: Sequence[bytes | memoryview]) -> None:
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            raise Unreachable(f"no receiver connected at {self.endpoint}") from None
        except zmq.ZMQError as exc:
            raise Unreachable(f"send to {self.endpoint} failed: {exc}") from exc

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
        self.socket.close(0)
        self.socket = self._connect()
        return self.socket

    def close(self) -> None:
        self.socket.close(0)


class RouterWire:
    """RX's end: a ROUTER bound for any number of senders, with a message-size backstop."""

    def __init__(self, ctx: Context, bind: str, *, max_msg: int | None = None,
                 security: SecurityConfig | None = None, domain: str = "data", rcvhwm: int = DATA_RCVHWM) -> None:
        self.socket = make_socket(ctx, zmq.ROUTER, max_msg=max_msg, rcvhwm=rcvhwm)
        self.guard: ServerSecurity | None = None
        try:
            self.guard = secure_server(self.socket, security or SecurityConfig(), endpoint=bind, domain=domain)
            self.socket.bind(bind)
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
