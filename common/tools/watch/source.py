"""Where the watcher's messages come from: SUB sockets on the daemons' monitor streams, or a twin.

A SUB socket connects to an endpoint whether or not a daemon is there yet and reconnects by
itself when one comes back, so the watcher never has to. ``poll`` never blocks.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any, Protocol

import zmq

from common.errors import MonitorError
from common.telemetry.stream import MAX_BODY_BYTES, MonitorMessage
from common.transport.zmq import make_socket

#: Messages read per ``poll`` at most, so one busy stream cannot freeze the screen.
MAX_PER_POLL = 500
#: Messages a subscriber queues before zmq drops (a watcher that lags loses messages, not memory).
RCVHWM = 2000
#: Reconnect interval towards an absent daemon.
RECONNECT_MS = 500


class Source(Protocol):
    bad: int

    def poll(self) -> list[MonitorMessage]: ...

    def close(self) -> None: ...


class MonitorSource:
    """Subscribes to every topic of each endpoint given (TX's, and RX's when set)."""

    def __init__(self, endpoints: Iterable[str], *, ctx: Any = None, security: Any = None,
                 peers: dict[str, str] | None = None) -> None:
        self._ctx = ctx or zmq.Context.instance()
        self.bad = 0
        self.sockets: list[zmq.Socket[bytes]] = []
        for endpoint in endpoints:
            sock = make_socket(self._ctx, zmq.SUB)
            sock.setsockopt(zmq.RCVHWM, RCVHWM)
            sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
            # No larger body decodes (stream.py); the slack is CURVE's framing around it.
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_BODY_BYTES + 1024)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            if security is not None:
                from dataclasses import replace

                from common.transport.security import secure_client

                peer = (peers or {}).get(endpoint)
                secure_client(sock, replace(security, peer=peer) if peer else security, endpoint=endpoint)
            sock.connect(endpoint)
            self.sockets.append(sock)

    def poll(self) -> list[MonitorMessage]:
        out: list[MonitorMessage] = []
        for sock in self.sockets:
            while len(out) < MAX_PER_POLL:
                try:
                    frames = sock.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    out.append(MonitorMessage.decode(frames))
                except MonitorError:
                    self.bad += 1
        return out

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(0)


class FakeSource:
    """In-memory twin: tests ``push`` messages (or raw frames) that the next ``poll`` returns."""

    def __init__(self) -> None:
        self.bad = 0
        self.queue: collections.deque[list[bytes]] = collections.deque()

    def push(self, message: MonitorMessage | list[bytes]) -> None:
        self.queue.append(message.encode() if isinstance(message, MonitorMessage) else message)

    def poll(self) -> list[MonitorMessage]:
        out: list[MonitorMessage] = []
        while self.queue and len(out) < MAX_PER_POLL:
            try:
                out.append(MonitorMessage.decode(self.queue.popleft()))
            except MonitorError:
                self.bad += 1
        return out

    def close(self) -> None:
        self.queue.clear()
