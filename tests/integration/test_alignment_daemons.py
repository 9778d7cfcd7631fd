"""The two daemons on digits with a live sensor shift, int8 values and a forwarded adapter reset."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_daemons import endpoints, start_rx, start_tx
from tests.procs import metrics, wait_for
from tx.control import ControlRequest
from tx.ctl import request

pytestmark = pytest.mark.slow


def test_live_shift_value_type_and_reset(digits_bundle_dir: Path, tmp_path: Path) -> None:
    data_ep, ctl_ep = endpoints()
    rx = start_rx(digits_bundle_dir, data_ep, tmp_path)  # adapt.policy auto, the default
    tx = start_tx(digits_bundle_dir, data_ep, ctl_ep, tmp_path, "--batches", "7", "--max-inflight", "1",
                  "--interval", "0.4", "--modulation", "256qam")
    try:
        wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= 2, 60, "two acknowledged batches")
        bad = request(ctl_ep, ControlRequest("set-shift", "twist:3"))
        assert not bad["ok"] and "unknown shift" in bad["error"]
        shift = request(ctl_ep, ControlRequest("set-shift", "rotate:40"))
        assert shift["ok"] and shift["shift"] == "rotate:40"
        value = request(ctl_ep, ControlRequest("set-value-type", "int8"))
        assert value["ok"] and value["plan"]["value_type"] == "int8" and value["plan"]["n_max"] > 3.5 * 193
        switch = value["effective_from_batch"]
        assert shift["effective_from_batch"] == switch
        wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= switch + 2, 60, "batches after the switch")
        reset = request(ctl_ep, ControlRequest("reset-adapter"))
        assert reset["ok"] and "forwarded to RX" in reset["message"]
        cleared = request(ctl_ep, ControlRequest("clear-shift"))
        assert cleared["ok"] and cleared["shift"] == "none"
        assert tx.wait(90) == 0, tx.log_text()[-3000:]
    finally:
        tx.stop()
        rx.stop()
    records = metrics(tmp_path / "tx.jsonl")
    assert [r["batch"] for r in records] == list(range(7))
    assert all(r["status"] == "ok" and r["policy"] == "auto" and r["gate"] is not None for r in records)
    for r in records[:switch]:
        assert (r["shift"], r["value_type"]) == ("none", "float32")
        assert r["payload_bytes"] == 8 + (50 + r["n_train"]) * (4 + 4 * r["alpha"])
    for r in records[switch : switch + 2]:
        assert (r["shift"], r["value_type"]) == ("rotate:40", "int8")
        assert r["payload_bytes"] == 8 + (50 + r["n_train"]) * (4 + r["alpha"])
    assert records[-1]["shift"] == "none"
    # The shift costs accuracy that the base alone does not have: the gate sees it.
    assert max(r["gate"] for r in records[switch:switch + 2]) > min(r["gate"] for r in records[:switch])
    assert "adapt_reset" in rx.log_text()
    rx_records = metrics(tmp_path / "rx.jsonl")
    assert all("gate" in r and r["policy"] == "auto" for r in rx_records)


def test_a_plugin_failing_at_run_time_drops_its_shift_not_the_stream(digits_bundle_dir: Path, tmp_path: Path) -> None:
    data_ep, ctl_ep = endpoints()
    rx = start_rx(digits_bundle_dir, data_ep, tmp_path)
    plugin = "flaky"  # tests.fakes.shift_plugins:flaky: fine for two batches, then raises
    tx = start_tx(digits_bundle_dir, data_ep, ctl_ep, tmp_path, "--batches", "4", "--max-inflight", "1",
                  "--interval", "0.5", "--shift-plugins", "flaky=tests.fakes.shift_plugins:flaky",
                  "--shift", plugin)
    try:
        wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= 3, 60, "batches after the plugin failed")
        status = request(ctl_ep, ControlRequest("status"))["status"]
        assert status["shift"] == "none"
        assert repr(plugin) in status["shift_error"] and "RuntimeError" in status["shift_error"]
        assert tx.wait(90) == 0, tx.log_text()[-3000:]
    finally:
        tx.stop()
        rx.stop()
    records = metrics(tmp_path / "tx.jsonl")
    assert [r["batch"] for r in records] == [0, 1, 2, 3] and all(r["status"] == "ok" for r in records)
    assert [r["shift"] for r in records] == [plugin, plugin, "none", "none"]
    assert "shift_dropped" in tx.log_text() and "sensor model lost its calibration" in tx.log_text()


def test_set_shift_never_imports_code_and_a_plugins_system_exit_costs_one_batch(
        digits_bundle_dir: Path, tmp_path: Path) -> None:
    """Defect 3: ``set-shift sys:exit`` was imported and called, and TX exited at its next batch."""
    data_ep, ctl_ep = endpoints()
    rx = start_rx(digits_bundle_dir, data_ep, tmp_path)
    tx = start_tx(digits_bundle_dir, data_ep, ctl_ep, tmp_path, "--batches", "0", "--max-inflight", "1",
                  "--interval", "0.3", "--shift-plugins", "exits=tests.fakes.shift_plugins:exits")
    try:
        wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= 1, 60, "a first batch")
        for spec in ("sys:exit", "os:_exit", "noise:0.1+sys:exit"):
            refused = request(ctl_ep, ControlRequest("set-shift", spec))
            assert not refused["ok"] and "names code" in refused["error"], refused
        unknown = request(ctl_ep, ControlRequest("set-shift", "othersensor"))
        assert not unknown["ok"] and "unknown shift 'othersensor'" in unknown["error"], unknown
        assert request(ctl_ep, ControlRequest("status"))["status"]["shift"] == "none"
        chosen = request(ctl_ep, ControlRequest("set-shift", "exits"))
        assert chosen["ok"] and chosen["shift"] == "exits"
        wait_for(lambda: request(ctl_ep, ControlRequest("status"))["status"]["shift_error"], 30,
                 "the plugin's SystemExit to drop the shift")
        after = len(metrics(tmp_path / "tx.jsonl"))
        wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= after + 2, 60, "TX to keep streaming")
        status = request(ctl_ep, ControlRequest("status"))["status"]
        assert tx.proc.poll() is None
        assert status["shift"] == "none" and "SystemExit" in status["shift_error"] and status["lost"] == 0
    finally:
        tx.stop()
        rx.stop()
    records = metrics(tmp_path / "tx.jsonl")
    assert [r["batch"] for r in records] == list(range(len(records)))
    assert all(r["status"] == "ok" and r["shift"] == "none" for r in records)
    assert "shift_dropped" in tx.log_text()
