"""A TX killed with a batch in flight: restarted, it recalls RX's report of that batch and scores it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_daemons import endpoints, start_rx, start_tx
from tests.procs import metrics, wait_for

pytestmark = pytest.mark.slow

#: Kills tried until one lands while a batch is in flight (nearly always the first).
KILL_TRIES = 5


def _journaled(path: Path) -> list[dict[str, object]]:
    try:
        return list(json.loads(path.read_text())["entries"])
    except (OSError, ValueError, KeyError):
        return []


def test_a_killed_tx_scores_its_in_flight_batch_after_restart(digits_bundle_dir: Path, tmp_path: Path) -> None:
    """Defect 19: the batch RX processed while TX was being killed was never scored."""
    data_ep, ctl_ep = endpoints()
    journal = tmp_path / "tx.jsonl.journal"  # beside metrics_out, the default
    rx = start_rx(digits_bundle_dir, data_ep, tmp_path)
    tx2 = None
    try:
        owed: list[dict[str, object]] = []
        for _ in range(KILL_TRIES):
            tx = start_tx(digits_bundle_dir, data_ep, ctl_ep, tmp_path, "--batches", "0", "--max-inflight", "1",
                          "--interval", "0", "--ack-timeout", "2")
            try:
                wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= 2 and _journaled(journal), 60,
                         "batches scored and one in flight")
            finally:
                tx.kill()  # SIGKILL: no handler runs, the journal is what the run left
            owed = _journaled(journal)
            if owed:
                break
        assert owed, "no kill landed while a batch was in flight"
        old_run = str(owed[0]["run"])
        owed_ids = {int(str(e["batch_id"])) for e in owed}
        # RX finishes the batch whose sender died (one message at a time, so before any recall):
        # its report goes nowhere, and stays in RX's cache under the old run's id.
        tx2 = start_tx(digits_bundle_dir, data_ep, ctl_ep, tmp_path, "--batches", "3", "--max-inflight", "1",
                       "--ack-timeout", "2")
        assert tx2.wait(120) == 0, tx2.log_text()[-3000:]
    finally:
        if tx2 is not None:
            tx2.stop()
        rx.stop()
    assert not journal.exists(), "the restarted TX left its journal behind"
    records = metrics(tmp_path / "tx.jsonl")
    recovered = [r for r in records if r.get("recovered")]
    assert {r["batch"] for r in recovered} == owed_ids
    assert all(r["recovered_from"] == old_run and r["run"] != old_run for r in recovered)
    rx_seen = {r["batch"] for r in metrics(tmp_path / "rx.jsonl") if r["tx_run"] == old_run}
    # Nothing the link delivered is lost: every batch RX processed for the killed run is
    # scored, by that run or by the restarted one; only a batch that never reached RX may be lost.
    scored_by_old = {r["batch"] for r in records if r["run"] == old_run and r["status"] == "ok"}
    scored_recovered = {r["batch"] for r in recovered if r["status"] == "ok"}
    assert rx_seen <= scored_by_old | scored_recovered
    assert owed_ids & rx_seen, "RX never processed the in-flight batch: nothing was recalled"
    for r in recovered:
        if r["batch"] in rx_seen:
            assert r["status"] == "ok" and r["accuracy"] is not None and r["n_test_delivered"] == r["n_test"]
            assert r["attempts"] is None and r["latency_comm_s"] is not None
        else:
            assert r["status"] == "lost" and "no report" in r["reason"]
    # Recalled from RX's cache, not processed again.
    rx_rows = [(r["tx_run"], r["batch"]) for r in metrics(tmp_path / "rx.jsonl")]
    assert len(rx_rows) == len(set(rx_rows))
    assert "report_recalled" in rx.log_text() and "batch_recovered" in tx2.log_text()
    restarted = recovered[0]["run"]
    new = [r for r in records if r["run"] == restarted and not r.get("recovered")]
    assert [r["batch"] for r in new] == [0, 1, 2] and all(r["status"] == "ok" for r in new)
