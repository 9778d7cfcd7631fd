"""``BatchHandler``: an exception of ours on one message becomes ``internal_error``, never a dead RX."""

from __future__ import annotations

from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from common.ml.bundle import Bundle
from common.timesync import SyncState
from common.transport.base import Transport
from common.transport.zmq import ZmqBearer
from common.wire import messages
from rx.handler import BatchHandler
from rx.pipeline import Receiver
from tests.integration.test_rogue_sender import good_batch


class Exploding:
    """A receiver with a bug: every parse raises something no one planned for."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def parse(self, payload: Any) -> Any:
        raise self.exc


@pytest.mark.parametrize("exc", [ZeroDivisionError("boom"), KeyError("k"), MemoryError(), ValueError("strides")])
def test_a_bug_costs_the_message_only(digits_bundle: Bundle, exc: Exception) -> None:
    handler = BatchHandler(digits_bundle, cast(Receiver, Exploding(exc)), {Transport.ZMQ: ZmqBearer()},
                           lambda: SyncState.unsynchronised("test", read_at_ns=0), max_message_bytes=1 << 20)
    env, body = good_batch(digits_bundle, 5)
    with capture_logs() as logs:
        handled = handler.handle([memoryview(env), memoryview(body)])
    reply = messages.decode_reply(handled.reply)
    assert isinstance(reply, messages.ErrorReply)
    assert (reply.code, reply.batch_id) == ("internal_error", 5)
    assert type(exc).__name__ not in reply.message  # the peer learns nothing of our internals
    assert handler.counters["internal_error"] == 1
    (entry,) = [e for e in logs if e["event"] == "internal_error"]
    assert "Traceback" in entry["traceback"] and type(exc).__name__ in entry["traceback"]


def test_a_report_for_the_largest_t_fits_the_reply_limit() -> None:
    t = 0xFFFF
    report = messages.Report(batch_id=2**40, attempt=1000, predictions=bytes(t), n_test=t, n_train=t,
                             alpha=0xFFFF, adapt="lora", t_b_ns=2**62, latency_comm_s=1.0, train_loss=0.5,
                             latency_finetune_s=1.0, latency_classify_s=1.0, latency_e2e_s=3.0,
                             comm={"basis": "unsynchronised", "bound_s": None, "flags": ["x" * 64] * 8},
                             sync={"source": "none", "detail": "y" * 256})
    frame = report.encode()
    assert len(frame) <= messages.MAX_REPLY_BYTES
    assert messages.decode_reply(frame) == report


def test_a_restarted_tx_reusing_a_batch_id_is_answered_afresh_and_noted(digits_bundle: Bundle) -> None:
    from common.ml.adapt import AdaptConfig, AdaptMode
    from rx.pipeline import Receiver as RealReceiver

    handler = BatchHandler(digits_bundle, RealReceiver(digits_bundle, AdaptConfig(mode=AdaptMode.NONE)),
                           {Transport.ZMQ: ZmqBearer()}, lambda: SyncState.unsynchronised("test", read_at_ns=0),
                           max_message_bytes=1 << 20)
    replies = []
    with capture_logs() as logs:
        for run in ("run-a", "run-a", "run-b"):
            env, body = good_batch(digits_bundle, 0)
            stamped = messages.Envelope.decode(messages.unpack(env)).replace(run=run, t_a_ns=1)
            handled = handler.handle([memoryview(stamped.encode()), memoryview(body)])
            replies.append(handled)
    assert [type(messages.decode_reply(h.reply)) for h in replies] == [messages.Report] * 3, logs
    assert [h.duplicate for h in replies] == [False, True, False]  # run-b's batch 0 is a new batch
    assert [h.record["tx_run"] for h in replies if h.record] == ["run-a", "run-b"]
    assert handler.counters["batch_id_reused"] == 1
    assert [e["earlier_tx_run"] for e in logs if e["event"] == "batch_id_reused"] == ["run-a"]


def test_error_replies_stay_short_whatever_the_message_quotes(digits_bundle: Bundle) -> None:
    handler = BatchHandler(digits_bundle, cast(Receiver, Exploding(RuntimeError())), {Transport.ZMQ: ZmqBearer()},
                           lambda: SyncState.unsynchronised("test", read_at_ns=0), max_message_bytes=1 << 20)
    env, body = good_batch(digits_bundle, 6)
    long_name = messages.Envelope.decode(messages.unpack(env)).replace(transport="x" * 60_000)
    reply = messages.decode_reply(handler.handle([memoryview(long_name.encode()), memoryview(body)]).reply)
    assert isinstance(reply, messages.ErrorReply) and reply.code == "envelope"
    assert len(reply.message) <= 1024 and reply.message.endswith("...")


def test_a_recall_is_answered_from_the_report_cache_or_refused_by_run(digits_bundle: Bundle) -> None:
    """Defect 19: a restarted TX asks for its killed run's report, which RX keeps by (run, batch, A)."""
    from common.ml.adapt import AdaptConfig, AdaptMode
    from rx.pipeline import Receiver as RealReceiver

    handler = BatchHandler(digits_bundle, RealReceiver(digits_bundle, AdaptConfig(mode=AdaptMode.NONE)),
                           {Transport.ZMQ: ZmqBearer()}, lambda: SyncState.unsynchronised("test", read_at_ns=0),
                           max_message_bytes=1 << 20)
    env, body = good_batch(digits_bundle, 4)
    stamped = messages.Envelope.decode(messages.unpack(env)).replace(run="killed", t_a_ns=7)
    first = handler.handle([memoryview(stamped.encode()), memoryview(body)])
    original = messages.decode_reply(first.reply)
    assert isinstance(original, messages.Report) and original.run == "killed"

    recalled = handler.handle([memoryview(messages.Recall("killed", 4, 7).encode())])
    assert recalled.record is None and recalled.error is None  # nothing processed again
    assert recalled.reply == first.reply  # the very bytes of the report sent before
    assert handler.counters["recalled"] == 1 and handler.counters["batches"] == 1

    for run, batch_id, t_a_ns in [("killed", 5, 7), ("other", 4, 7), ("killed", 4, 8)]:
        missed = messages.decode_reply(handler.handle([memoryview(messages.Recall(run, batch_id, t_a_ns).encode())]).reply)
        assert isinstance(missed, messages.ErrorReply)
        assert (missed.code, missed.batch_id, missed.run) == (messages.RECALL_UNKNOWN, batch_id, run)
    assert handler.counters["recall_unknown"] == 3

    # A malformed recall costs that message only, with a typed error.
    for body_ in ({"run": "x" * 65, "batch_id": 1, "t_a_ns": 1}, {"run": "r", "batch_id": -1, "t_a_ns": 1},
                  {"batch_id": 1, "t_a_ns": 1}, {"run": 3, "batch_id": 1, "t_a_ns": 1}):
        frame = messages._pack({"v": messages.PROTOCOL, "kind": messages.KIND_RECALL, **body_})
        bad = messages.decode_reply(handler.handle([memoryview(frame)]).reply)
        assert isinstance(bad, messages.ErrorReply) and bad.code == "envelope", body_
