"""The resend schedule: only real sends use attempts, a rebuild owes every batch one resend."""

from __future__ import annotations

from typing import Any, cast

import pytest

from common.clock import NS_PER_S
from common.wire import messages
from tx.batches import Batch
from tx.inflight import MAX_BACKOFF, UNREACHABLE_RETRY_S, Inflight

ACK_S = 2.0


def batch(batch_id: int) -> Batch:
    env = messages.Envelope(batch_id=batch_id, attempt=0, modulation="64qam", b_max=100, alpha=3,
                            bundle="b" * 64, t_a_ns=1, t=1, n=1)
    return cast(Batch, type("FakeBatch", (), {"envelope": env, "payload": b"x"})())


def send(inflight: Inflight, pending: Any, now: int) -> None:
    inflight.sent(pending, inflight.next_envelope(pending), 1, now)


def test_run_id_is_stamped_on_every_envelope() -> None:
    inflight = Inflight(ACK_S, 3, run="abc123")
    pending = inflight.add(batch(4))
    assert pending.envelope.run == "abc123" and inflight.next_envelope(pending).run == "abc123"


@pytest.mark.parametrize(("sends", "backoff"), [(1, 1), (2, 2), (3, 4), (4, MAX_BACKOFF), (6, MAX_BACKOFF)])
def test_timeouts_back_off(sends: int, backoff: int) -> None:
    inflight = Inflight(ACK_S, 10)
    pending = inflight.add(batch(0))
    for i in range(sends):
        send(inflight, pending, i)
    assert pending.sends == sends
    assert pending.envelope.attempt == sends - 1
    assert pending.due_mono_ns == sends - 1 + int(ACK_S * NS_PER_S) * backoff


def test_a_send_that_could_not_be_queued_uses_no_attempt() -> None:
    inflight = Inflight(ACK_S, 2)
    pending = inflight.add(batch(0))
    for step in range(100):
        inflight.unreachable(pending, step)
    assert pending.sends == 0 and not inflight.exhausted(pending)
    assert pending.due_mono_ns == 99 + int(UNREACHABLE_RETRY_S * NS_PER_S)


def test_rebuild_owes_every_live_batch_a_resend_until_it_is_sent() -> None:
    inflight = Inflight(ACK_S, 2)
    _fresh, waiting, last = (inflight.add(batch(i)) for i in range(3))
    send(inflight, waiting, 0)
    send(inflight, last, 0)
    send(inflight, last, 1)  # no attempt left: it waits out its last timeout
    timeout = int(ACK_S * NS_PER_S)
    due = inflight.due(timeout)
    assert inflight.timed_out(due)  # waiting's reply did not come
    inflight.owe_all(timeout)
    due = inflight.due(timeout)
    assert {p.batch_id for p in due} == {0, 1}
    assert not inflight.timed_out(due) and inflight.owed(due)  # owed, not timed out: no new rebuild
    inflight.unreachable(waiting, timeout)  # the new socket is still connecting
    assert waiting.resend_owed and waiting.sends == 1
    send(inflight, waiting, timeout + 1)
    assert not waiting.resend_owed and waiting.sends == 2
    assert not last.resend_owed and inflight.exhausted(last)
