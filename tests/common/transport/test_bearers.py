"""The transport seam: every bearer behind one interface, and the in-memory twin end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zmq

from common.errors import EnvelopeError, SizeMismatch, Unreachable
from common.modulation import Modulation
from common.phy import PhyConfig
from common.runtime import free_tcp_port
from common.timesync import SyncState
from common.transport.base import (
    BEARERS,
    Bearer,
    BearerSettings,
    Transport,
    bearer_class,
    open_bearer,
    open_receivers,
)
from common.transport.memory import MemoryBearer, memory_pair
from common.transport.sim import SimBearer
from common.transport.zmq import DealerWire, RouterWire, ZmqBearer
from common.wire import messages
from common.wire import payload as wire

ROOT = Path(__file__).resolve().parents[3]


def _unsynced() -> SyncState:
    return SyncState.unsynchronised("test", read_at_ns=0)


def _envelope(payload: bytes, t: int, n: int, alpha: int, transport: Transport) -> messages.Envelope:
    return messages.Envelope(batch_id=7, attempt=0, modulation="64qam", b_max=len(payload), alpha=alpha,
                             bundle="h" * 64, t_a_ns=1, t=t, n=n, transport=transport.value)


def _payload(t: int = 3, n: int = 5, alpha: int = 4) -> bytes:
    rng = np.random.default_rng(0)
    return wire.build(rng.standard_normal((t, alpha), dtype=np.float32),
                      rng.standard_normal((n, alpha), dtype=np.float32), rng.integers(0, 10, n))


def test_every_transport_has_a_bearer_that_names_it() -> None:
    assert set(BEARERS) == set(Transport)
    for transport in Transport:
        cls = bearer_class(transport)
        assert issubclass(cls, Bearer) and cls.transport is transport


def test_receivers_without_a_radio_leave_out_the_air() -> None:
    bearers = open_receivers(BearerSettings())
    assert set(bearers) == {Transport.ZMQ, Transport.SIM, Transport.MEMORY}
    assert all(b.transport is t for t, b in bearers.items())


def test_open_bearer_for_pluto_without_a_radio_is_refused() -> None:
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="pluto section"):
        open_bearer("pluto", BearerSettings())


def test_memory_wire_refuses_when_no_peer_is_connected() -> None:
    tx, rx = memory_pair()
    rx.connected = False
    with pytest.raises(Unreachable):
        MemoryBearer().send(tx, _envelope(b"x", 0, 0, 1, Transport.MEMORY), b"x")
    assert rx.recv() is None


def test_memory_bearer_round_trip_and_loss_pattern() -> None:
    body = _payload()
    tx, rx = memory_pair()
    env = _envelope(body, 3, 5, 4, Transport.MEMORY)
    sent = MemoryBearer().send(tx, env, body)
    assert sent.wire_bytes == len(body)
    frames = rx.recv()
    assert frames is not None and messages.Envelope.decode(messages.unpack(frames[0])) == env
    assert bytes(MemoryBearer().receive(env, memoryview(frames[1]), rx.send).payload) == body

    def lose_tail(batch_id: int, size: int) -> np.ndarray:
        return np.arange(size) < size - 10

    got = MemoryBearer(lose_tail).receive(env, memoryview(frames[1]), rx.send)
    assert got.valid is not None and int((~got.valid).sum()) == 10
    assert bytes(got.payload)[:-10] == body[:-10] and bytes(got.payload)[-10:] == bytes(10)


def test_sim_bearer_modulates_once_per_batch_until_forgotten() -> None:
    body = _payload()
    bearer = SimBearer(PhyConfig())
    tx, rx = memory_pair()
    env = _envelope(body, 3, 5, 4, Transport.SIM)
    calls: Counter[int] = Counter()
    real = bearer.modulate

    def counting(envelope: messages.Envelope, payload: bytes) -> np.ndarray:
        calls[envelope.batch_id] += 1
        return real(envelope, payload)

    bearer.modulate = counting  # type: ignore[method-assign]
    first, second = bearer.send(tx, env, body), bearer.send(tx, env.replace(attempt=1), body)
    assert calls[7] == 1 and first.wire_bytes == second.wire_bytes > 0
    assert first.envelope.samples == first.wire_bytes // 8
    bearer.forget(7)
    bearer.send(tx, env, body)
    assert calls[7] == 2
    frames = rx.recv()
    assert frames is not None
    got = bearer.receive(first.envelope, memoryview(frames[1]), rx.send)
    assert got.valid is not None and got.valid.all() and bytes(got.payload) == body
    assert got.phy is not None and got.phy.modulation is Modulation.QAM64
    with pytest.raises(SizeMismatch):
        bearer.receive(first.envelope, memoryview(b"abc"), rx.send)


def test_zmq_wires_translate_an_absent_peer_and_carry_bytes() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    tx = DealerWire(ctx, endpoint)
    body = _payload()
    env = _envelope(body, 3, 5, 4, Transport.ZMQ)
    try:
        with pytest.raises(Unreachable, match=endpoint):
            ZmqBearer().send(tx, env, body)
        rx = RouterWire(ctx, endpoint)
        for _ in range(200):  # the DEALER connects in the background
            try:
                ZmqBearer().send(tx, env, body)
                break
            except Unreachable:
                rx.poll(10)
        assert rx.poll(5000)
        peer, frames = rx.recv()
        assert bytes(ZmqBearer().receive(env, frames[1], lambda f: None).payload) == body
        rx.reply(peer, b"ok")
        assert tx.socket.poll(5000) and tx.recv() == [b"ok"]
        rx.close()
    finally:
        tx.close()
        ctx.term()


# -- TX's and RX's batch logic in one process, over the memory twin -----------------------


@pytest.fixture
def twin(digits_bundle):  # type: ignore[no-untyped-def]
    from common.data.spec import load_dataset
    from common.link.plan import AlphaPolicy, LinkState, make_plan
    from common.ml.config import AdaptConfig, AdaptMode
    from rx.handler import BatchHandler
    from rx.pipeline import Receiver
    from tx.batches import BatchBuilder
    from tx.inflight import Inflight
    from tx.scoring import Scoreboard

    dataset = load_dataset("digits")
    plan = make_plan(LinkState(Modulation.QAM64, AlphaPolicy.PROPORTIONAL), digits_bundle.dims,
                     _digits_link(), wire.ValueType.FLOAT32)
    builder = BatchBuilder(digits_bundle, dataset, seed=0, transport=Transport.MEMORY)

    def handler(bearer: MemoryBearer) -> BatchHandler:
        receiver = Receiver(digits_bundle, AdaptConfig(mode=AdaptMode.NONE))
        return BatchHandler(digits_bundle, receiver, {Transport.MEMORY: bearer}, _unsynced,
                            max_message_bytes=1 << 20)

    return builder, plan, handler, Inflight(15.0, 3), Scoreboard(Counter())


def _digits_link():  # type: ignore[no-untyped-def]
    from common.link.budget import dataset_link

    return dataset_link("digits")


def _round_trip(twin, loss=None):  # type: ignore[no-untyped-def]
    builder, plan, make_handler, inflight, scores = twin
    handler = make_handler(MemoryBearer(loss))
    tx, rx = memory_pair()
    bearer = MemoryBearer()
    pending = inflight.add(builder.build(plan, 0))
    sent = bearer.send(tx, inflight.next_envelope(pending), pending.batch.payload)
    inflight.sent(pending, sent.envelope, sent.wire_bytes, now=0)
    frames = rx.recv()
    handled = handler.handle([memoryview(f) for f in frames], notify=rx.send)
    rx.send([handled.reply])
    (reply_frame,) = tx.recv()
    report = messages.decode_reply(reply_frame)
    assert isinstance(report, messages.Report), report
    record = scores.score(inflight.pop(report.batch_id), report, rtt_s=0.0)
    return pending, report, handled, record, (handler, frames)


def test_memory_twin_runs_a_batch_from_builder_to_score(twin) -> None:  # type: ignore[no-untyped-def]
    pending, report, handled, record, (handler, frames) = _round_trip(twin)
    plan = pending.batch.plan
    assert (report.batch_id, report.n_test, report.n_train, report.alpha) == (0, plan.t, plan.n_max, plan.alpha)
    assert handled.record is not None and handled.record["transport"] == "memory"
    assert record["status"] == "ok" and record["n_test_delivered"] == plan.t
    assert record["accuracy"] > 0.8
    # A resent batch is answered from RX's cache, not processed twice.
    again = handler.handle([memoryview(f) for f in frames])
    assert again.reply == handled.reply and again.record is None
    assert handler.counters["duplicate"] == 1 and handler.counters["batches"] == 1


def test_memory_twin_loses_vectors_like_a_radio(twin) -> None:  # type: ignore[no-untyped-def]
    def lose_first_test_vectors(batch_id: int, size: int) -> np.ndarray:
        valid = np.ones(size, dtype=bool)
        valid[wire.FILE_HEADER_SIZE + 5: wire.FILE_HEADER_SIZE + 400] = False
        return valid

    pending, report, _, record, _ = _round_trip(twin, lose_first_test_vectors)
    predictions = np.frombuffer(report.predictions, dtype=np.uint8)
    assert report.vectors_lost > 0 and (predictions == wire.NO_LABEL).sum() > 0
    assert record["n_test_delivered"] == int((predictions != wire.NO_LABEL).sum()) < pending.batch.plan.t


def test_handler_refuses_a_transport_it_has_no_bearer_for(twin) -> None:  # type: ignore[no-untyped-def]
    builder, plan, make_handler, _, _ = twin
    handler = make_handler(MemoryBearer())
    batch = builder.build(plan, 1)
    env = batch.envelope.replace(transport="zmq")
    handled = handler.handle([memoryview(env.encode()), memoryview(batch.payload)])
    reply = messages.decode_reply(handled.reply)
    assert isinstance(reply, messages.ErrorReply) and reply.code == EnvelopeError.code
    assert handler.counters["envelope"] == 1


@pytest.mark.parametrize("labelling", ["gray", "3gpp"])
def test_rx_follows_the_labelling_each_frame_header_names(labelling: str) -> None:
    body = _payload(t=4, n=30, alpha=8)
    env = _envelope(body, 4, 30, 8, Transport.SIM).replace(modulation="256qam")
    tx, rx = memory_pair()
    sent = SimBearer(PhyConfig(labelling=labelling)).send(tx, env, body)
    frames = rx.recv()
    assert frames is not None
    got = SimBearer(PhyConfig()).receive(sent.envelope, memoryview(frames[1]), rx.send)
    assert got.valid is not None and got.valid.all() and bytes(got.payload) == body


def test_tx_config_labelling_reaches_the_bearer() -> None:
    from common.errors import ConfigError
    from tx.config import TxConfig

    assert TxConfig(transport="sim", labelling="3gpp").labelling == "3gpp"
    with pytest.raises(ConfigError, match="labelling"):
        TxConfig(labelling="ascii")


def test_the_zeromq_path_loads_no_dsp() -> None:
    """TX over ZeroMQ and the control client start without scipy (the PHY loads on first use)."""
    script = ("import json, sys\nimport common.transport.zmq, tx.daemon, tx.ctl\nfrom common.phy import PhyConfig\n"
              "print(json.dumps([m for m in sys.modules if m.split('.')[0] == 'scipy' or m.startswith(('common.phy.', 'common.link.'))]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout))
    assert "common.phy.config" in loaded and "common.link.amc" in loaded  # settings and TX's AMC table
    assert not loaded & {"scipy", "common.phy.channel", "common.phy.sync", "common.phy.theory",
                         "common.phy.demodulator", "common.phy.modulator"}
