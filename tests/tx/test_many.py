"""One TX, several receivers: the daemon's loop over links on in-memory wires with an injected
clock. A silent, refusing or mismatched receiver costs itself only; control requests reach the
receiver they name; rows, replies and the journal name the receiver.

Each RX is played by the test (``Rx`` of ``test_link``): it reads what TX put on its wire and
answers as RX would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.clock import NS_PER_S
from common.config import load_config
from common.data.spec import load_dataset
from common.errors import ConfigError
from common.ml.bundle import Bundle
from common.runtime import free_tcp_port
from common.transport.memory import MemoryBearer, memory_pair
from common.wire import messages
from tests.tx.test_link import AFTER_FIRST_WAIT, Clock, Rx
from tx.config import DEFAULT_RX, ReceiverConfig, TxConfig
from tx.control import ControlRequest, decode_reply, encode_reply
from tx.daemon import TxDaemon
from tx.journal import Entry, Journal
from tx.link import Link, Station

RECEIVERS = (ReceiverConfig("a", "tcp://127.0.0.1:1"), ReceiverConfig("b", "tcp://127.0.0.1:2"),
             ReceiverConfig("c", "tcp://127.0.0.1:3"))


@dataclass
class Many:
    daemon: TxDaemon
    rx: dict[str, Rx]
    clock: Clock
    metrics: Path

    def step(self, seconds: float = 0.0) -> None:
        """The loop once: every link's due work, then whatever each RX put on its wire."""
        now = self.clock.advance(seconds)
        while self.daemon.step(now):
            pass
        for link in self.daemon.live():
            link.drain()

    def hello(self, *names: str, bundle: str | None = None) -> None:
        for name in names:
            self.rx[name].answer(messages.Hello(bundle=bundle or self.daemon.bundle.hash, role="rx").encode())

    def batches(self, name: str) -> list[dict[str, Any]]:
        return [meta for meta, _ in self.rx[name].take() if meta["kind"] == messages.KIND_BATCH]

    def report(self, name: str, batch_id: int) -> None:
        """RX ``name``'s report of its batch, every prediction right."""
        pending = self.link(name).inflight.get(batch_id)
        assert pending is not None
        labels = pending.batch.test_labels
        self.rx[name].answer(messages.Report(
            batch_id=batch_id, attempt=0, predictions=bytes(labels.astype(np.uint8)), n_test=len(labels),
            n_train=10, alpha=pending.batch.plan.alpha, adapt="none", t_b_ns=1, latency_comm_s=0.01,
            latency_finetune_s=0.0, latency_classify_s=0.01, latency_e2e_s=0.02, run=self.daemon.run_id).encode())

    def link(self, name: str) -> Link:
        return self.daemon.target(name)[0]

    def control(self, req: ControlRequest) -> dict[str, Any]:
        return decode_reply(encode_reply(self.daemon.apply(req)))

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.metrics.read_text().splitlines()] if self.metrics.exists() else []


@pytest.fixture
def many(digits_bundle: Bundle, tmp_path: Path) -> Iterator[Any]:
    daemons: list[TxDaemon] = []

    def _many(receivers: tuple[ReceiverConfig, ...] = RECEIVERS, **settings: Any) -> Many:
        clock = Clock()
        ends: dict[str, Rx] = {}

        def make_link(name: str, config: TxConfig, station: Station, recalled: list[Entry]) -> Link:
            tx_end, rx_end = memory_pair()
            tx_end.clock = clock
            tx_end.built_ns = clock.now
            ends[name] = Rx(rx_end)
            return Link(config, station, load_dataset("digits"), recalled=recalled, wire=tx_end,
                        bearer=MemoryBearer(), clock=clock, name=name)

        metrics = tmp_path / f"tx-{len(daemons)}.jsonl"
        config = TxConfig(receivers=receivers, gpsd="off", clock_probe_interval_s=3600.0, metrics_out=str(metrics),
                          control=f"tcp://127.0.0.1:{free_tcp_port()}", **settings)
        daemon = TxDaemon(config, digits_bundle, load_dataset("digits"), make_link=make_link)
        daemons.append(daemon)
        daemon.begin(clock.now)
        return Many(daemon, ends, clock, metrics)

    yield _many
    for daemon in daemons:
        daemon.close()


def connected(m: Many, *names: str) -> None:
    """Hello answered by ``names``, and past the first clock burst's wait: those links may build."""
    m.step()
    m.hello(*names)
    m.step()  # the hellos read
    m.step()  # the first clock burst, left unanswered
    m.step(AFTER_FIRST_WAIT / NS_PER_S)


def test_a_silent_receiver_stalls_no_other_and_joins_when_it_answers(many: Any) -> None:
    m = many(max_inflight=2)
    connected(m, "a", "c")
    assert [len(m.batches(n)) for n in "ac"] == [2, 2]  # each its own window, full
    assert m.batches("b") == [] and not m.link("b").rx_ready
    for _ in range(3):
        for name in "ac":
            for batch_id in [p.batch_id for p in m.link(name).inflight]:
                m.report(name, batch_id)
        m.step(0.1)  # the reports read
        m.step()  # the windows filled again
    assert [m.link(n).counters["acked"] for n in "abc"] == [6, 0, 6]
    assert m.daemon.fatal is None

    m.hello("b")  # started late: it joins, from its own batch 0
    m.step()
    m.step()
    m.step(AFTER_FIRST_WAIT / NS_PER_S)
    assert [e["batch_id"] for e in m.batches("b")] == [0, 1]
    rows = m.rows()
    assert {r["rx"] for r in rows} == {"a", "c"} and len(rows) == 12
    status = m.daemon.status()
    assert status["acked"] == 12 and set(status["receivers"]) == {"a", "b", "c"}
    assert status["receivers"]["b"]["acked"] == 0 and status["receivers"]["a"]["acked"] == 6


def test_each_receiver_has_its_own_plan_and_the_same_batch_ids_do_not_collide_in_the_journal(many: Any) -> None:
    receivers = (ReceiverConfig("a", "tcp://127.0.0.1:1"),
                 ReceiverConfig("b", "tcp://127.0.0.1:2", modulation="qpsk", alpha_policy="fixed", alpha=12, t=30))
    m = many(receivers, max_inflight=1)
    connected(m, "a", "b")
    (a,), (b,) = m.batches("a"), m.batches("b")
    assert (b["modulation"], b["alpha"], b["t"]) == ("qpsk", 12, 30)
    assert (a["modulation"], a["batch_id"]) == ("256qam", b["batch_id"]) and a["alpha"] != 12
    # Both receivers' batch 0 are kept, each under its receiver: scoring one drops that one only.
    assert sorted(e.slot for e in m.daemon.journal) == [("a", m.daemon.run_id, 0), ("b", m.daemon.run_id, 0)]
    m.report("b", 0)
    m.step()
    assert [e.slot for e in m.daemon.journal] == [("a", m.daemon.run_id, 0)]
    assert Journal(m.daemon.journal.path).load()[0].rx == "a"  # on disk, recalled to a only


def test_control_reaches_the_receiver_it_names_or_every_one(many: Any) -> None:
    m = many(max_inflight=1)
    connected(m, "a", "b", "c")
    reply = m.control(ControlRequest("set-modulation", "64qam", rx="b"))
    assert reply["ok"] and reply["rx"] == "b" and reply["effective_from_batch"] == 1
    assert [m.link(n).plan.modulation.value for n in "abc"] == ["256qam", "64qam", "256qam"]

    reply = m.control(ControlRequest("set-modulation", "qpsk"))
    assert reply["ok"] and reply["rx"] == ["a", "b", "c"]
    assert {n: r["plan"]["modulation"] for n, r in reply["receivers"].items()} == dict.fromkeys("abc", "qpsk")

    reply = m.control(ControlRequest("status", rx="c"))
    assert reply["rx"] == "c" and list(reply["receivers"]) == ["c"]
    assert reply["receivers"]["c"]["status"]["next_batch"] == reply["status"]["receivers"]["c"]["next_batch"] == 1
    assert set(reply["status"]["receivers"]) == {"a", "b", "c"}

    with pytest.raises(ConfigError, match="unknown receiver 'z': expected one of a, b, c"):
        m.daemon.apply(ControlRequest("pause", rx="z"))
    # A command one receiver refuses: the others keep it, the reply says which refused.
    m.link("a").amc = None
    reply = m.control(ControlRequest("set-alpha", 10**6))
    assert not reply["ok"] and all(r["ok"] is False for r in reply["receivers"].values())
    reply = m.control(ControlRequest("pause", rx="a"))
    assert reply["ok"] and [m.link(n).paused for n in "abc"] == [True, False, False]


def test_a_mismatched_receiver_is_given_up_and_the_others_go_on(many: Any) -> None:
    m = many(max_inflight=1)
    m.step()
    m.hello("a", "c")
    m.hello("b", bundle="0" * 64)
    m.step()
    m.step()
    assert m.link("b").fatal and m.daemon.fatal is None and "b" in m.daemon._given_up
    m.step(AFTER_FIRST_WAIT / NS_PER_S)
    assert [len(m.batches(n)) for n in "ac"] == [1, 1] and m.daemon.live() == [m.link("a"), m.link("c")]
    for name in "ac":
        m.link(name).fatal = "stopped by the test"
    m.step()
    assert m.daemon.fatal is not None and m.daemon.fatal.startswith("a: stopped by the test; b: bundle mismatch")


@pytest.mark.parametrize(("answer", "fatal"), [((), True), (("b",), False)])
def test_with_several_receivers_the_hello_timeout_is_txs(many: Any, answer: tuple[str, ...], fatal: bool) -> None:
    m = many(hello_timeout_s=5.0)
    m.step()
    m.hello(*answer)
    m.step()
    m.step(6.0)
    m.step()
    assert (m.daemon.fatal is not None) is fatal
    if fatal:
        assert m.daemon.fatal == ("no receiver answered within 5 s: a (tcp://127.0.0.1:1), b (tcp://127.0.0.1:2), "
                                  "c (tcp://127.0.0.1:3)")
    else:  # the silent ones are greeted on: one started late still joins
        assert [m.link(n).fatal for n in "abc"] == [None, None, None]
        assert "hello" in m.rx["a"].kinds()


def test_one_receiver_keeps_its_name_and_todays_fields(many: Any) -> None:
    m = many(())
    assert [link.name for link in m.daemon.links] == [DEFAULT_RX]
    assert "receivers" not in m.daemon.status()
    assert m.daemon.monitor_status()["rx"] == DEFAULT_RX
    reply = m.control(ControlRequest("set-modulation", "64qam"))
    assert reply["rx"] == DEFAULT_RX and reply["plan"]["modulation"] == "64qam"
    reply = m.control(ControlRequest("status"))
    assert "receivers" not in reply["status"] and reply["receivers"][DEFAULT_RX]["status"]["next_batch"] == 0


def test_receivers_from_yaml_and_flags_and_their_errors(tmp_path: Path) -> None:
    f = tmp_path / "tx.yaml"
    f.write_text("modulation: 16qam\nreceivers:\n  - {name: a, endpoint: 'tcp://h:1', peer: /k/a.key}\n"
                 "  - {name: b, endpoint: 'tcp://h:2', modulation: bpsk, seed: 7}\n")
    config = load_config(TxConfig, f)
    links = dict(config.links())
    assert (links["a"].modulation, links["a"].security.peer, links["a"].endpoint) == ("16qam", "/k/a.key", "tcp://h:1")
    assert (links["b"].modulation, links["b"].seed, links["b"].receivers) == ("bpsk", 7, ())
    for text, message in [
        ("receivers: [{name: a, endpoint: x}, {name: a, endpoint: y}]", "expected unique names, got a more"),
        ("receivers: [{name: 'a b', endpoint: x}]", "receiver name: expected 1-32 letters"),
        ("receivers: [{name: a}]", "missing setting(s) endpoint"),
        ("receivers: [{name: a, endpoint: x, modulation: 7qam}]", "receivers: a: unknown modulation '7qam'"),
        ("receivers: [{name: a, endpoint: x, alpha_policy: fixed}]", "receivers: a: alpha_policy 'fixed' needs alpha"),
        ("receivers: [{name: a, endpoint: x, transport: sim}]", "unknown setting(s) transport"),
    ]:
        f.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(TxConfig, f)
        assert message in str(err.value)


def test_an_earlier_runs_batches_are_recalled_from_the_receiver_that_had_them(many: Any, tmp_path: Path) -> None:
    earlier = Journal(tmp_path / "tx-0.jsonl.journal")  # the first daemon's metrics_out + .journal
    labels = np.zeros(4, dtype=np.uint8)
    for rx, batch_id in (("a", 0), ("a", 1), ("b", 0), ("gone", 0)):
        earlier.put(Entry("killed", batch_id, 100 + batch_id, labels, {"batch": batch_id}, rx))
    m = many()
    assert sorted(m.link("a").recalls) == [("killed", 0), ("killed", 1)]
    assert sorted(m.link("b").recalls) == [("killed", 0)] and m.link("c").recalls == {}
    connected(m, "a", "b", "c")
    recalls = {n: [meta["batch_id"] for meta, _ in m.rx[n].take() if meta["kind"] == messages.KIND_RECALL]
               for n in "abc"}
    assert recalls == {"a": [0, 1], "b": [0], "c": []}
    # A receiver no longer in the config: its entry is kept for when it comes back, not recalled.
    assert ("gone", "killed", 0) in {e.slot for e in m.daemon.journal}


def test_a_links_events_and_rows_name_its_receiver(digits_bundle: Bundle, tmp_path: Path) -> None:
    from common.metrics import MetricsWriter
    from common.timesync import SyncMonitor
    from common.timesync.state import SyncState
    from tests.tx.test_link import Recorder

    telemetry = Recorder()
    sync = SyncMonitor(reader=lambda _: SyncState.unsynchronised("test", read_at_ns=0))
    station = Station(digits_bundle, "run-a", Journal(None), MetricsWriter(None), telemetry, sync)
    tx_end, _ = memory_pair()
    link = Link(TxConfig(gpsd="off"), station.for_receiver("b"), load_dataset("digits"), wire=tx_end,
                bearer=MemoryBearer(), name="b")
    try:
        link.on_reply(messages.ErrorReply("oversize", "too big", 9), 0)
        link._record({"batch": 9, "status": "lost"})
    finally:
        link.close()
    assert telemetry.named("rejected") == [{"code": "oversize", "batch": 9, "detail": "too big", "rx": "b"}]
    assert telemetry.records == [{"batch": 9, "status": "lost", "rx": "b"}]
