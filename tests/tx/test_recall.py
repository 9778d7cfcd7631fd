"""TX's side of a recall: an earlier run's batches come back from the journal and are scored
by run, never mistaken for this run's batches of the same id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.data.spec import load_dataset
from common.ml.bundle import Bundle
from common.runtime import free_tcp_port
from common.wire import messages
from tests.procs import metrics
from tx.config import TxConfig
from tx.daemon import TxDaemon
from tx.journal import Entry, Journal, entry_labels
from tx.link import Link

LABELS = np.array([1, 2, 3, 4], dtype=np.int64)


def _report(batch_id: int, run: str | None, predictions: list[int]) -> messages.Report:
    return messages.Report(batch_id=batch_id, attempt=0, predictions=bytes(predictions), n_test=len(predictions),
                           n_train=10, alpha=40, adapt="lora", t_b_ns=2, latency_comm_s=0.01,
                           latency_finetune_s=0.1, latency_classify_s=0.01, latency_e2e_s=0.12, run=run)


@pytest.fixture
def link(digits_bundle: Bundle, tmp_path: Path) -> Iterator[Link]:
    earlier = Journal(tmp_path / "tx.jsonl.journal")  # what a killed run left beside its metrics
    for batch_id in (0, 1, 2):
        earlier.put(Entry("killed", batch_id, 100 + batch_id, entry_labels(LABELS), {"batch": batch_id, "alpha": 40}))
    config = TxConfig(endpoint=f"tcp://127.0.0.1:{free_tcp_port()}", control=f"tcp://127.0.0.1:{free_tcp_port()}",
                      gpsd="off", metrics_out=str(tmp_path / "tx.jsonl"))
    tx = TxDaemon(config, digits_bundle, load_dataset("digits"))
    try:
        yield tx.link  # the daemon's one receiver: the journal's batches are recalled from it
    finally:
        tx.close()


def test_an_earlier_runs_reports_are_scored_and_this_runs_batch_of_the_same_id_untouched(
        link: Link, tmp_path: Path) -> None:
    """Defect 19: the killed run's batches are recalled by run; batch 0 of this run is another batch."""
    assert sorted(link.recalls) == [("killed", 0), ("killed", 1), ("killed", 2)]
    current = link.inflight.add(link.build())  # this run's batch 0, in flight
    assert current.batch_id == 0

    link.on_reply(_report(0, "killed", [1, 2, 0, 0xFF]), 0)  # 2 right, 1 wrong, 1 not delivered
    link.on_reply(messages.ErrorReply(messages.RECALL_UNKNOWN, "none here", 1, run="killed"), 0)
    link.on_reply(_report(0, "someone-else", [1, 2, 3, 4]), 0)  # no such recall: stale
    link.on_reply(_report(2, "killed", [1, 2]), 0)  # the journal holds 4 labels: refused

    assert link.inflight.get(0) is current and link.counters["lost"] == 0
    assert link.recalls == {} and link.finished() is False  # still this run's batch in flight
    assert link.counters["recovered"] == 1 and link.counters["recovered_lost"] == 2
    assert link.counters["stale_reports"] == 1
    link.station.metrics.close()
    rows = {r["batch"]: r for r in metrics(tmp_path / "tx.jsonl")}
    assert all(r["recovered"] and r["recovered_from"] == "killed" and r["run"] == link.run_id for r in rows.values())
    assert (rows[0]["status"], rows[0]["accuracy"], rows[0]["n_test_delivered"]) == ("ok", 2 / 3, 3)
    assert rows[0]["attempts"] is None and rows[0]["alpha"] == 40
    assert rows[1]["status"] == "lost" and "no report" in rows[1]["reason"]
    assert rows[2]["status"] == "lost" and "4 test labels" in rows[2]["reason"]
    # What is left in the journal is this run's batch 0 alone (journaled at its first send).
    assert [e.key for e in Journal(tmp_path / "tx.jsonl.journal").load()] == []
    link.send(current, 0)
    assert [e.key for e in Journal(tmp_path / "tx.jsonl.journal").load()] == [(link.run_id, 0)]
