"""One TX and three real RX processes over tcp loopback on digits: batches flow to all three,
a command for one receiver changes that one only, and one receiver killed for a few seconds
stops neither other while nothing is lost on any. The steering goes through ``semalign ctl --rx``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.runtime import free_tcp_port
from tests.integration.test_daemons import start_rx
from tests.procs import Daemon, metrics, wait_for
from tx.control import ControlRequest
from tx.ctl import main as ctl
from tx.ctl import request

pytestmark = pytest.mark.slow

BATCHES = 30


def acked(ctl_ep: str) -> dict[str, int]:
    reply = request(ctl_ep, ControlRequest("status"))
    return {name: each["status"]["acked"] for name, each in reply["receivers"].items()}


def test_three_receivers_one_steered_one_killed_and_back(digits_bundle_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    eps = {name: f"tcp://127.0.0.1:{free_tcp_port()}" for name in "abc"}
    ctl_ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    rxs: dict[str, Daemon] = {name: start_rx(digits_bundle_dir, ep, tmp_path, name=name) for name, ep in eps.items()}
    tx = Daemon("tx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--control", ctl_ep,
                       "--receivers", *(f"{name}={ep}" for name, ep in eps.items()), "--modulation", "256qam",
                       "--batches", str(BATCHES), "--interval", "0.2", "--max-inflight", "1",
                       "--ack-timeout", "2", "--max-attempts", "8", "--metrics-out", str(tmp_path / "tx.jsonl")],
                tmp_path / "tx.log")
    back = None
    try:
        wait_for(lambda: min(acked(ctl_ep).values()) >= 2, 90, "two acknowledged batches at each receiver")
        assert ctl(["--tx", ctl_ep, "--json", "--rx", "b", "set-modulation", "64qam"]) == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["ok"] and reply["rx"] == "b" and list(reply["receivers"]) == ["b"], reply
        switch = reply["effective_from_batch"]

        rxs["c"].kill()
        wait_for(lambda: request(ctl_ep, ControlRequest("status", rx="c"))["receivers"]["c"]["status"]["inflight"] > 0, 20,
                 "TX to hold c's unacknowledged batch while c is down")
        before = acked(ctl_ep)
        wait_for(lambda: all(acked(ctl_ep)[n] >= min(before[n] + 3, BATCHES) for n in "ab"), 30,
                 "a and b to go on while c is down")
        assert acked(ctl_ep)["c"] == before["c"]
        back = start_rx(digits_bundle_dir, eps["c"], tmp_path, name="c-back")
        assert tx.wait(120) == 0, tx.log_text()[-3000:]
    finally:
        tx.stop()
        for rx in rxs.values():
            rx.stop()
        if back is not None:
            back.stop()

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in "abc"}
    for row in metrics(tmp_path / "tx.jsonl"):
        rows[row["rx"]].append(row)
    for name, each in rows.items():
        assert sorted(r["batch"] for r in each) == list(range(BATCHES)), name  # nothing lost, none twice
        assert all(r["status"] == "ok" for r in each), name
    assert 2 <= switch < BATCHES
    assert all(r["modulation"] == "256qam" for n in "ac" for r in rows[n])
    assert [r["modulation"] for r in sorted(rows["b"], key=lambda r: r["batch"])] == \
        ["256qam"] * switch + ["64qam"] * (BATCHES - switch)
    assert metrics(tmp_path / "c-back.jsonl"), "the restarted c served nothing"
    served = {name: {r["batch"] for r in metrics(tmp_path / f"{name}.jsonl")} for name in "ab"}
    assert served == {"a": set(range(BATCHES)), "b": set(range(BATCHES))}
