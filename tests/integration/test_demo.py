"""``semalign demo`` end to end as a user runs it, and the daemon pair on real MNIST."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.runtime import free_tcp_port
from tests.procs import ROOT, Daemon, metrics

pytestmark = pytest.mark.slow


def test_demo_switches_modulation_and_exits_zero(digits_bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli", "demo", "--batches", "4", "--bundle", str(digits_bundle_dir),
         "--metrics-out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ctl set-modulation 64qam" in proc.stdout
    assert "4/4 batches acknowledged" in proc.stdout
    records = metrics(out)
    required = {"batch", "modulation", "alpha", "b_max", "n_test", "n_train", "payload_bytes", "accuracy",
                "latency_comm_s", "latency_finetune_s", "latency_classify_s", "latency_e2e_s", "adapt"}
    assert len(records) == 4 and all(required <= r.keys() for r in records)
    assert records[0]["modulation"] == "256qam"
    assert records[-1]["modulation"] == "64qam" and records[-1]["alpha"] == 30
    rx_records = metrics(tmp_path / "work" / "rx-metrics.jsonl")
    assert len(rx_records) == 4 and all(required <= r.keys() for r in rx_records)


def test_daemons_on_mnist(mnist_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "mnist-bundle"
    build = Daemon("pretrain", ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--dims", "60",
                                "--epochs", "2", "--out", str(bundle)], tmp_path / "pretrain.log")
    assert build.wait(300) == 0, build.log_text()
    data_ep, ctl_ep = f"tcp://127.0.0.1:{free_tcp_port()}", f"tcp://127.0.0.1:{free_tcp_port()}"
    common = ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--bundle", str(bundle)]
    rx = Daemon("rx", [*common, "--bind", data_ep], tmp_path / "rx.log")
    tx = Daemon("tx", [*common, "--endpoint", data_ep, "--control", ctl_ep, "--batches", "2",
                       "--modulation", "64qam", "--metrics-out", str(tmp_path / "tx.jsonl")], tmp_path / "tx.log")
    try:
        assert tx.wait(300) == 0, tx.log_text()[-3000:]
    finally:
        tx.stop()
        rx.stop()
    records = metrics(tmp_path / "tx.jsonl")
    # dims=60 at 64QAM: alpha = round(60 * 6 / 8) = 45; B_max = 375000, t = 100.
    assert [(r["alpha"], r["b_max"], r["n_test"]) for r in records] == [(45, 375000, 100)] * 2
    assert all(r["n_train"] == (375000 - 8 - 100 * 184) // 184 for r in records)
    assert all(r["accuracy"] > 0.85 for r in records)


def test_sim_transport_fade_forces_modulation_down(digits_bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli", "demo", "--transport", "sim", "--batches", "6",
         "--snr-profile", "37 dB, drop 7 dB at batch 3", "--bundle", str(digits_bundle_dir),
         "--metrics-out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = metrics(out)
    assert [r["batch"] for r in records] == list(range(6))
    before, faded, after = records[:3], records[3], records[4:]
    assert all((r["modulation"], r["alpha"], r["frames_lost"], r["vectors_lost"]) == ("256qam", 40, 0, 0)
               for r in before)
    assert all(r["snr_db"] > 34 for r in before)
    # The first batch sent into the fade still goes at 256QAM: frames fail their CRC and are
    # dropped, the loss is reported, and whatever arrived whole is still used.
    assert faded["modulation"] == "256qam" and faded["frames_lost"] > 0 and faded["vectors_lost"] > 0
    assert faded["snr_db"] < 32
    assert faded["n_test_delivered"] + faded["n_train"] == 50 + faded["n_max"] - faded["vectors_lost"]
    assert faded["n_test_delivered"] + faded["n_train"] > 0
    # AMC reads RX's SNR report and steps down; alpha and N_max follow.
    assert all((r["modulation"], r["alpha"], r["b_max"], r["n_max"]) == ("64qam", 30, 30000, 191) for r in after)
    assert all(r["frames_lost"] == 0 and r["accuracy"] > 0.8 for r in after)
    channel_log = (tmp_path / "work" / "channel.log").read_text()
    assert channel_log.count('"channel_batch"') >= 6
