"""The in-memory twin: a wire of two queues and a bearer that passes payload bytes by reference.

Tests run TX's batch building and RX's batch handling in one process with no sockets; a
loss pattern marks bytes as not arrived, as a radio would, to exercise partial payloads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from common.clock import monotonic_ns
from common.errors import Unreachable
from common.transport.base import (
    Bearer,
    BearerSettings,
    Notify,
    Received,
    Sent,
    Transport,
    Wire,
    send_frames,
)
from common.wire.messages import Envelope

#: ``loss(batch_id, size)`` -> [size] bool, True where a byte arrived.
LossPattern = Callable[[int, int], npt.NDArray[np.bool_]]


class MemoryBearer(Bearer):
    transport: ClassVar[Transport] = Transport.MEMORY

    def __init__(self, loss: LossPattern | None = None) -> None:
        self.loss = loss

    @classmethod
    def open(cls, settings: BearerSettings) -> MemoryBearer:
        return cls()

    def send(self, wire: Wire, envelope: Envelope, payload: bytes) -> Sent:
        return send_frames(wire, envelope, payload)

    def receive(self, envelope: Envelope, frame: memoryview, notify: Notify) -> Received:
        if self.loss is None:
            return Received(frame)
        valid = np.asarray(self.loss(envelope.batch_id, len(frame)), dtype=bool)
        kept = np.where(valid, np.frombuffer(frame, dtype=np.uint8), 0).astype(np.uint8)
        return Received(kept.tobytes(), valid)


class MemoryWire:
    """One end of an in-memory wire: ``send`` queues on the peer's inbox.

    It stands in for TX's ``DealerWire`` too: ``rebuild`` counts rebuilds and stamps
    ``built_ns`` from ``clock`` (tests inject theirs); there is no socket to poll.
    """

    #: Nothing to poll: ``recv`` reads the inbox.
    socket: None = None

    def __init__(self, name: str, *, clock: Callable[[], int] = monotonic_ns) -> None:
        self.name = name
        self.inbox: deque[list[bytes]] = deque()
        self.peer: MemoryWire | None = None
        self.connected = True
        self.clock = clock
        #: When this end was last (re)built, and how often it was rebuilt.
        self.built_ns = clock()
        self.rebuilds = 0
        self.closed = False

    def send(self, frames: Sequence[bytes | memoryview]) -> None:
        if self.peer is None or not self.peer.connected:
            raise Unreachable(f"{self.name}: no peer connected")
        self.peer.inbox.append([bytes(f) for f in frames])

    def recv(self) -> list[bytes] | None:
        return self.inbox.popleft() if self.inbox else None

    def rebuild(self) -> None:
        """A fresh end, as TX's Lazy Pirate makes one: what was queued for this end is dropped."""
        self.inbox.clear()
        self.rebuilds += 1
        self.built_ns = self.clock()

    def close(self) -> None:
        self.closed = True


def memory_pair() -> tuple[MemoryWire, MemoryWire]:
    """TX's and RX's ends of one in-memory wire."""
    tx, rx = MemoryWire("tx"), MemoryWire("rx")
    tx.peer, rx.peer = rx, tx
    return tx, rx
