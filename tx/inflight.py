"""Batches sent and not yet acknowledged: when each is due again, and the backoff between sends.

zguide's Lazy Pirate: a batch RX does not acknowledge in time is resent after the socket
is rebuilt, with timeouts growing 1x, 2x, 4x, 4x, ... the ack timeout, up to ``max_attempts``
sends. Only sends that happened count: a send that could not be queued (no peer connected,
e.g. a rebuilt socket still connecting) is retried soon without using an attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from common.clock import NS_PER_S
from common.wire import messages
from tx.batches import Batch

#: Resend timeouts grow 1x, 2x, 4x, 4x, ... the configured ack timeout.
MAX_BACKOFF = 4
#: How soon to try again when no RX is connected (nothing was sent, no attempt used).
UNREACHABLE_RETRY_S = 0.25


@dataclass
class Pending:
    """A batch in flight, with its send history."""

    batch: Batch
    envelope: messages.Envelope  # as last sent (attempt, samples)
    sends: int = 0
    wire_bytes: int = 0
    sent_mono_ns: int = 0
    due_mono_ns: int = 0
    #: Whether the last timeout has been answered by a resend yet (the batch is owed one).
    resend_owed: bool = False
    #: Whether the journal holds it (written once, before its first send left TX).
    journaled: bool = False

    @property
    def batch_id(self) -> int:
        return self.envelope.batch_id


class Inflight:
    """The batches in flight, by id, with the resend schedule.

    ``run`` (the daemon's run id) is stamped on every envelope, so RX tells a restarted
    TX's batch ids from the last run's.
    """

    def __init__(self, ack_timeout_s: float, max_attempts: int, *, run: str | None = None) -> None:
        self.ack_timeout_ns = int(ack_timeout_s * NS_PER_S)
        self.max_attempts = max_attempts
        self.run = run
        self._pending: dict[int, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[Pending]:
        return iter(list(self._pending.values()))

    def add(self, batch: Batch) -> Pending:
        envelope = batch.envelope if self.run is None else batch.envelope.replace(run=self.run)
        pending = Pending(batch, envelope)
        self._pending[envelope.batch_id] = pending
        return pending

    def get(self, batch_id: int | None) -> Pending | None:
        return None if batch_id is None else self._pending.get(batch_id)

    def pop(self, batch_id: int) -> Pending | None:
        return self._pending.pop(batch_id, None)

    def next_envelope(self, pending: Pending) -> messages.Envelope:
        """The envelope of the next send: the attempt number is the sends so far."""
        return pending.envelope.replace(attempt=pending.sends)

    def sent(self, pending: Pending, envelope: messages.Envelope, wire_bytes: int, now: int) -> None:
        """The batch was queued on a connected socket: one attempt used, the next timeout set."""
        pending.envelope = envelope
        pending.wire_bytes = wire_bytes
        pending.sends += 1
        pending.resend_owed = False
        if pending.sends == 1:
            pending.sent_mono_ns = now
        backoff = min(2 ** (pending.sends - 1), MAX_BACKOFF)
        pending.due_mono_ns = now + self.ack_timeout_ns * backoff

    def unreachable(self, pending: Pending, now: int) -> None:
        """Nothing was sent: try again soon, without using an attempt."""
        pending.due_mono_ns = now + int(UNREACHABLE_RETRY_S * NS_PER_S)

    def owe_all(self, now: int) -> None:
        """The socket was rebuilt: every batch in flight is resent on the new one (RX answers
        duplicates from its cache). A batch with no attempt left keeps waiting out its last."""
        for pending in self._pending.values():
            if self.exhausted(pending):
                continue
            pending.resend_owed = True
            pending.due_mono_ns = min(pending.due_mono_ns, now)

    def due(self, now: int) -> list[Pending]:
        return [p for p in self._pending.values() if p.due_mono_ns <= now]

    def timed_out(self, due: list[Pending]) -> bool:
        """Whether any due batch waited a whole ack timeout for its reply (not just for a peer)."""
        return any(p.sends and not p.resend_owed for p in due)

    def owed(self, due: list[Pending]) -> bool:
        """Whether a due batch is still waiting for a connected socket to resend it on."""
        return any(p.resend_owed for p in due)

    def exhausted(self, pending: Pending) -> bool:
        """Every attempt was sent and the last one timed out too."""
        return pending.sends >= self.max_attempts
