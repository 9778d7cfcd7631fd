"""TX's link to one receiver, over the in-memory wire and bearer with an injected clock: the
hello, batches and their reports, resends and losses, AMC, RX's rejections, control commands.

RX is played by the test: it reads what TX put on the wire and answers as RX would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs

from common.clock import NS_PER_S
from common.data.spec import load_dataset
from common.errors import ConfigError
from common.link.amc import AmcPolicy
from common.link.plan import AlphaPolicy, LinkState
from common.metrics import MetricsWriter
from common.ml.bundle import Bundle
from common.modulation import Modulation
from common.telemetry import Telemetry
from common.timesync import SyncMonitor
from common.timesync.state import SyncState
from common.transport.memory import MemoryBearer, MemoryWire, memory_pair
from common.wire import messages
from tx.commands import apply
from tx.config import TxConfig
from tx.control import ControlRequest, decode_reply, encode_reply
from tx.journal import Journal
from tx.link import HELLO_RETRY_S, Link, Station

T0 = 1_000 * NS_PER_S
#: Past the first clock burst's wait: with no estimate, the first batch waits this long.
AFTER_FIRST_WAIT = 2 * NS_PER_S


class Clock:
    """Monotonic ns the test advances by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> int:
        self.now += int(seconds * NS_PER_S)
        return self.now


class Recorder(Telemetry):
    """The telemetry the link publishes, kept for the test to read."""

    def __init__(self) -> None:
        super().__init__("tx")
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.records: list[dict[str, Any]] = []

    def event(self, name: str, **fields: Any) -> None:
        self.events.append((name, fields))

    def record(self, record: Mapping[str, Any], *, constellation: npt.ArrayLike | None = None) -> None:
        self.records.append(dict(record))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for n, fields in self.events if n == name]


@dataclass
class Rx:
    """RX's end of the wire, played by the test."""

    end: MemoryWire
    seen: list[tuple[dict[str, Any], list[bytes]]] = field(default_factory=list)

    def take(self) -> list[tuple[dict[str, Any], list[bytes]]]:
        """What TX sent since the last call: (metadata of frame 0, frames)."""
        got = [(messages.unpack(frames[0]), frames) for frames in self.end.inbox]
        self.end.inbox.clear()
        self.seen += got
        return got

    def kinds(self) -> list[str]:
        return [str(meta["kind"]) for meta, _ in self.take()]

    def answer(self, *replies: bytes) -> None:
        for reply in replies:
            self.end.send([reply])


@dataclass
class Setup:
    link: Link
    wire: MemoryWire  # the link's end
    rx: Rx
    clock: Clock
    telemetry: Recorder
    journal: Journal


@pytest.fixture
def make(digits_bundle: Bundle, tmp_path: Path) -> Iterator[Any]:
    links: list[Link] = []

    def _make(**settings: Any) -> Setup:
        clock = Clock()
        tx_end, rx_end = memory_pair()
        tx_end.clock = clock
        tx_end.built_ns = clock.now
        telemetry = Recorder()
        journal = Journal(tmp_path / f"journal-{len(links)}.jsonl")
        sync = SyncMonitor(reader=lambda _: SyncState.unsynchronised("test", read_at_ns=0))
        station = Station(digits_bundle, "run-a", journal, MetricsWriter(None), telemetry, sync)
        config = TxConfig(gpsd="off", clock_probe_interval_s=3600.0, **settings)
        link = Link(config, station, load_dataset("digits"), wire=tx_end, bearer=MemoryBearer(), clock=clock)
        links.append(link)
        return Setup(link, tx_end, Rx(rx_end), clock, telemetry, journal)

    yield _make
    for link in links:
        link.close()


def connect(s: Setup) -> None:
    """The hello and RX's answer, then past the first clock burst's wait: the link may build."""
    s.link.begin(s.clock.now)
    assert s.link.work(s.clock.now) is False
    assert s.rx.kinds() == ["hello"]
    s.rx.answer(messages.Hello(bundle=s.link.bundle.hash, role="rx").encode())
    s.link.drain()
    assert s.link.rx_ready
    assert s.link.work(s.clock.now) is False  # the first clock burst, left unanswered
    assert set(s.rx.kinds()) == {messages.KIND_CLOCK_PROBE}
    s.clock.advance(AFTER_FIRST_WAIT / NS_PER_S)


def sent_batches(s: Setup) -> list[dict[str, Any]]:
    return [meta for meta, _ in s.rx.take() if meta["kind"] == messages.KIND_BATCH]


def report(batch_id: int, labels: npt.NDArray[np.int64], *, snr_db: float | None = None) -> bytes:
    """RX's report predicting every test vector right."""
    return messages.Report(batch_id=batch_id, attempt=0, predictions=bytes(labels.astype(np.uint8)),
                           n_test=len(labels), n_train=10, alpha=40, adapt="none", t_b_ns=1, latency_comm_s=0.01,
                           latency_finetune_s=0.0, latency_classify_s=0.01, latency_e2e_s=0.02, snr_db=snr_db,
                           run="run-a").encode()


def test_a_batch_goes_out_after_the_hello_and_its_report_is_scored(make: Any) -> None:
    s = make(batches=1)
    s.link.begin(s.clock.now)
    s.link.work(s.clock.now)
    s.link.work(s.clock.advance(HELLO_RETRY_S / 2))  # no answer yet, and no second hello so soon
    assert s.rx.kinds() == ["hello"]
    s.link.work(s.clock.advance(HELLO_RETRY_S))
    assert s.rx.kinds() == ["hello"]
    s.rx.answer(messages.Hello(bundle=s.link.bundle.hash, role="rx").encode())
    s.link.drain()
    assert s.link.rx_ready and s.link.work(s.clock.now) is False  # probes out, waiting for an estimate
    assert set(s.rx.kinds()) == {messages.KIND_CLOCK_PROBE}

    assert s.link.work(s.clock.advance(AFTER_FIRST_WAIT / NS_PER_S)) is True
    (env,) = sent_batches(s)
    plan = s.link.plan
    assert (env["batch_id"], env["attempt"], env["run"]) == (0, 0, "run-a")
    assert (env["modulation"], env["alpha"], env["b_max"], env["t"]) == (plan.modulation.value, plan.alpha,
                                                                        plan.b_max, plan.t)
    assert [e.key for e in s.journal] == [("run-a", 0)]  # journaled before RX could answer
    assert s.link.work(s.clock.now) is False and sent_batches(s) == []  # batches=1: nothing more to build

    pending = s.link.inflight.get(0)
    assert pending is not None
    s.clock.advance(0.25)
    s.rx.answer(report(0, pending.batch.test_labels))
    s.link.drain()
    (row,) = s.telemetry.records
    assert (row["status"], row["batch"], row["accuracy"], row["attempts"]) == ("ok", 0, 1.0, 1)
    assert row["rtt_s"] == 0.25  # from the send to the report, on the injected clock
    assert s.link.counters["acked"] == 1 and len(s.link.inflight) == 0 and len(s.journal) == 0
    assert s.link.finished()
    assert s.link.status()["acked"] == 1 and s.link.status()["accuracy"] == 1.0


def test_every_batch_is_built_with_the_plan_held_until_the_link_state_changes(make: Any) -> None:
    """The plan is made when the link state changes, not again for every batch."""
    s = make(batches=3)
    connect(s)
    held = s.link.plan
    s.link.work(s.clock.now)
    first = s.link.inflight.get(0)
    assert first is not None and first.batch.plan is held
    s.link.set_state(LinkState(Modulation.QPSK, AlphaPolicy.FIXED, 20))
    assert s.link.plan is not held and (s.link.plan.modulation, s.link.plan.alpha) == (Modulation.QPSK, 20)
    s.link.work(s.clock.now)
    second = s.link.inflight.get(1)
    assert second is not None and second.batch.plan is s.link.plan
    assert [(e["modulation"], e["alpha"]) for e in sent_batches(s)] == [(held.modulation.value, held.alpha),
                                                                        ("qpsk", 20)]
    changed = s.link.plan
    with pytest.raises(ConfigError, match="exceeds"):
        s.link.set_state(LinkState(Modulation.QPSK, AlphaPolicy.FIXED, s.link.bundle.dims + 1))
    assert s.link.plan is changed and s.link.state.fixed_alpha == 20  # a refused change leaves the link as it was


def test_an_unanswered_batch_is_resent_on_a_rebuilt_wire_then_written_lost(make: Any) -> None:
    s = make(batches=1, ack_timeout_s=1.0, max_attempts=2)
    connect(s)
    s.link.work(s.clock.now)
    assert [e["attempt"] for e in sent_batches(s)] == [0]
    s.link.work(s.clock.advance(0.5))
    assert sent_batches(s) == [] and s.wire.rebuilds == 0

    s.link.work(s.clock.advance(0.6))  # one ack timeout without a report
    assert [e["attempt"] for e in sent_batches(s)] == [1]
    assert s.wire.rebuilds == 1 and s.link.counters["reconnects"] == 1
    assert s.link.counters["resends"] == 1 and s.telemetry.named("resend") == [{"batch": 0, "attempt": 1}]

    s.link.work(s.clock.advance(1.5))  # the second wait is twice as long: not yet
    assert s.telemetry.records == []
    s.link.work(s.clock.advance(0.6))
    (row,) = s.telemetry.records
    assert (row["status"], row["batch"], row["attempts"]) == ("lost", 0, 2)
    assert row["reason"] == "no acknowledgement after 2 sends"
    assert s.link.counters["lost"] == 1 and len(s.link.inflight) == 0 and len(s.journal) == 0
    assert s.link.finished()


def test_a_send_no_peer_could_take_uses_no_attempt_and_rx_is_said_back_once_it_answers(make: Any) -> None:
    s = make(batches=1, ack_timeout_s=1.0)
    connect(s)
    s.rx.end.connected = False
    s.link.work(s.clock.now)
    pending = s.link.inflight.get(0)
    assert pending is not None and pending.sends == 0 and s.link.counters["sends"] == 0
    assert [f["unacknowledged"] for f in s.telemetry.named("rx_unreachable")] == [1]
    assert s.journal.path is not None and len(s.journal) == 1
    s.journal.path.unlink()  # a rewrite would bring it back
    s.link.work(s.clock.advance(0.3))  # retried after 0.25 s; logged again only after 5 s
    assert len(s.telemetry.named("rx_unreachable")) == 1 and pending.sends == 0
    # Journaled once before its first send, not again on each retry (4 a second while RX is away).
    assert not s.journal.path.exists()

    s.rx.end.connected = True
    s.link.work(s.clock.advance(0.3))
    assert [e["attempt"] for e in sent_batches(s)] == [0]
    assert (pending.sends, s.link.counters["resends"], s.wire.rebuilds) == (1, 0, 0)
    with capture_logs() as logs:
        s.rx.answer(report(0, pending.batch.test_labels))
        s.link.drain()
    assert [e["event"] for e in logs if e["event"] == "rx_back"] == ["rx_back"]
    assert s.link.counters["acked"] == 1


def test_rx_silent_past_the_hello_timeout_or_on_another_bundle_stops_the_link(make: Any) -> None:
    s = make(hello_timeout_s=2.0)
    s.link.begin(s.clock.now)
    s.link.work(s.clock.advance(1.0))
    assert s.link.fatal is None
    s.link.work(s.clock.advance(1.5))
    assert s.link.fatal is not None and "no receiver answered" in s.link.fatal

    other = make()
    other.link.begin(other.clock.now)
    other.link.work(other.clock.now)
    other.rx.answer(messages.Hello(bundle="0" * 64, role="rx").encode())
    other.link.drain()
    assert not other.link.rx_ready and other.link.fatal is not None and "bundle mismatch" in other.link.fatal


@pytest.mark.parametrize(("code", "lost"), [("bad_payload", True), ("radio", False)])
def test_a_batch_rx_rejects_is_lost_at_once_unless_rx_s_radio_failed(make: Any, code: str, lost: bool) -> None:
    s = make(batches=1)
    connect(s)
    s.link.work(s.clock.now)
    s.rx.answer(messages.ErrorReply(code, "no good", 0).encode())
    s.link.drain()
    assert s.link.counters[f"rx_error_{code}"] == 1 and s.telemetry.named("rejected")[0]["code"] == code
    assert (s.link.inflight.get(0) is None) is lost
    assert [r["reason"] for r in s.telemetry.records] == ([f"rejected by RX: {code}: no good"] if lost else [])


def test_bad_replies_cost_themselves_only(make: Any) -> None:
    s = make()
    s.link.begin(s.clock.now)
    s.link.work(s.clock.now)
    s.rx.end.send([b"not msgpack"])
    s.rx.end.send([b"one", b"two"])
    s.rx.answer(messages.AirReady(batch_id=7, attempt=0).encode(),  # no such batch in flight
                messages.Hello(bundle=s.link.bundle.hash, role="rx").encode())
    s.link.drain()
    assert s.link.counters["bad_reply"] == 2 and s.link.counters["stale_air_ready"] == 1
    assert s.link.rx_ready


def test_amc_switches_the_plan_of_the_next_batch_from_rx_s_snr(make: Any) -> None:
    s = make(batches=2, transport="sim", link_policy="amc", modulation="256qam")
    connect(s)
    s.link.work(s.clock.now)
    pending = s.link.inflight.get(0)
    assert pending is not None and pending.batch.plan.modulation is Modulation.QAM256
    expected = AmcPolicy(initial=Modulation.QAM256).update(12.0)
    assert expected is not Modulation.QAM256
    s.rx.answer(report(0, pending.batch.test_labels, snr_db=12.0))
    s.link.drain()
    (amc,) = s.telemetry.named("amc")
    assert (amc["was"], amc["plan"]["modulation"], amc["from_batch"]) == ("256qam", expected.value, 1)
    s.link.work(s.clock.now)
    assert [e["modulation"] for e in sent_batches(s)] == ["256qam", expected.value]


def test_control_commands_change_the_link_from_the_next_batch(make: Any) -> None:
    s = make()
    connect(s)

    def status() -> dict[str, Any]:
        return s.link.status()

    reply = decode_reply(encode_reply(apply(s.link, ControlRequest("set-alpha", 20), status)))
    assert reply["ok"] and reply["plan"]["alpha"] == 20 and reply["effective_from_batch"] == 0
    with pytest.raises(ConfigError, match="integer"):
        apply(s.link, ControlRequest("set-alpha", "many"), status)
    with pytest.raises(ConfigError, match="SNR reports"):  # the memory bearer reports none
        apply(s.link, ControlRequest("amc", "on"), status)
    assert s.link.amc is None and s.link.plan.alpha == 20

    reply = decode_reply(encode_reply(apply(s.link, ControlRequest("reset-adapter", "20"), status)))
    assert reply["ok"] and [(m["kind"], m["alpha"]) for m, _ in s.rx.take()] == [("adapt_reset", 20)]
    s.rx.end.connected = False
    with pytest.raises(ConfigError, match="not connected"):
        apply(s.link, ControlRequest("reset-adapter", "all"), status)
    s.rx.end.connected = True

    reply = decode_reply(encode_reply(apply(s.link, ControlRequest("pause"), status)))
    assert reply["ok"] and reply["status"]["paused"] is True
    assert s.link.work(s.clock.now) is False and len(s.link.inflight) == 0
    apply(s.link, ControlRequest("resume"), status)
    assert s.link.work(s.clock.now) is True
    assert [e["alpha"] for e in sent_batches(s)] == [20]
