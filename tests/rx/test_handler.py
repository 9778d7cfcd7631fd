"""``BatchHandler``: an exception of ours on one message becomes ``internal_error``, never a dead RX."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
from structlog.testing import capture_logs

from common.clock import realtime_ns
from common.ml.bundle import Bundle
from common.timesync import SyncState
from common.transport.base import Received, Transport
from common.transport.zmq import ZmqBearer
from common.wire import messages
from common.wire import payload as wire
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


class AllLost(ZmqBearer):
    """A radio bearer whose every frame was lost: the announced bytes, none of them valid."""

    transport = Transport.SIM

    def __init__(self) -> None:
        self.calls = 0

    def receive(self, envelope: messages.Envelope, frame: memoryview, notify: Any) -> Received:
        self.calls += 1
        size = envelope.payload_size
        return Received(bytes(size), valid=np.zeros(size, dtype=bool), frames_lost=7)


def sim_envelope(bundle: Bundle, t: int, n: int) -> messages.Envelope:
    return messages.Envelope(batch_id=3, attempt=0, modulation="qpsk", b_max=1, alpha=1, bundle=bundle.hash,
                             t_a_ns=realtime_ns(), t=t, n=n, transport="sim", samples=1000)


def test_a_report_of_a_batch_lost_whole_at_the_header_limits_decodes(digits_bundle: Bundle) -> None:
    """Issue 16, defect 7: t = n = 65535 all lost gave vectors_lost = 131070, which RX's own decoder refused."""
    from common.ml.adapt import AdaptConfig, AdaptMode
    from rx.pipeline import Receiver as RealReceiver

    bearer = AllLost()
    handler = BatchHandler(digits_bundle, RealReceiver(digits_bundle, AdaptConfig(mode=AdaptMode.NONE)),
                           {Transport.SIM: bearer}, lambda: SyncState.unsynchronised("test", read_at_ns=0),
                           max_message_bytes=1 << 24, max_batch_vectors=2 * wire.MAX_COUNT)
    env = sim_envelope(digits_bundle, wire.MAX_COUNT, wire.MAX_COUNT)
    handled = handler.handle([memoryview(env.encode()), memoryview(b"")])
    report = messages.decode_reply(handled.reply)  # EnvelopeError before the fix
    assert isinstance(report, messages.Report), report
    assert report.vectors_lost == 2 * wire.MAX_COUNT and report.n_test == wire.MAX_COUNT
    assert report.predictions == bytes([wire.NO_LABEL]) * wire.MAX_COUNT


@pytest.mark.parametrize(("t", "n", "refused"), [(50, 50, False), (60, 41, True), (wire.MAX_COUNT, wire.MAX_COUNT, True)])
def test_a_batch_beyond_max_batch_vectors_is_refused_before_any_work(digits_bundle: Bundle, t: int, n: int,
                                                                     refused: bool) -> None:
    """Issue 16, defect 4: one batch at the header's limits cost RX 7.4 s; RX caps the vectors per batch."""
    bearer = AllLost()
    handler = BatchHandler(digits_bundle, cast(Receiver, Exploding(RuntimeError("must not run"))),
                           {Transport.SIM: bearer}, lambda: SyncState.unsynchronised("test", read_at_ns=0),
                           max_message_bytes=1 << 24, max_batch_vectors=100)
    handled = handler.handle([memoryview(sim_envelope(digits_bundle, t, n).encode()), memoryview(b"")])
    reply = messages.decode_reply(handled.reply)
    assert isinstance(reply, messages.ErrorReply)
    if refused:
        assert (reply.code, reply.batch_id, bearer.calls) == ("oversize", 3, 0)
        assert "max_batch_vectors" in reply.message and f"{t} + {n}" in reply.message
    else:
        assert bearer.calls == 1  # received; the exploding receiver is what answers here


def test_rx_config_caps_the_vectors_per_batch_by_default() -> None:
    from common.errors import ConfigError
    from rx.config import MAX_BATCH_VECTORS, RxConfig

    assert RxConfig().max_batch_vectors == MAX_BATCH_VECTORS < 2 * wire.MAX_COUNT
    assert MAX_BATCH_VECTORS >= 20_000  # the shipped datasets' largest batch: 10,000 test + 10,000 pool
    with pytest.raises(ConfigError, match="max_batch_vectors"):
        RxConfig(max_batch_vectors=0)
