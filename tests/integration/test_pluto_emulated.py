"""``semalign demo --transport pluto --emulate``: both daemons through real libiio to two emulated Plutos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.common.radio.emu.conftest import needs_libiio
from tests.procs import ROOT, metrics

pytestmark = [pytest.mark.slow, needs_libiio]


def test_demo_over_emulated_plutos(digits_bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli", "demo", "--transport", "pluto", "--emulate", "--batches", "3",
         "--snr-profile", "33 dB", "--interval", "0.2", "--bundle", str(digits_bundle_dir),
         "--metrics-out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3/3 batches acknowledged" in proc.stdout
    records = metrics(out)
    # Every burst went over the (emulated) air: nothing but the envelope rode ZeroMQ.
    assert all(r["wire_bytes"] == 0 and r["status"] == "ok" for r in records)
    assert all(abs(r["snr_db"] - 33.0) < 2.5 for r in records)
    # 33 dB is below 256QAM's AMC threshold: TX steps down to 64QAM after the first report.
    assert records[-1]["modulation"] == "64qam"
    served = (tmp_path / "work" / "pluto-emu.log").read_text()
    assert "bad_sessions=0" in served and "blocks_written=" in served
