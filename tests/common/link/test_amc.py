"""AMC policy: the threshold table, hysteresis tables, and the bench entry point.

The threshold table is derived from the BER closed forms; a test keeps code and docs equal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from common.bench.modem import bench_modem_main
from common.errors import ConfigError
from common.link.amc import DEFAULT_THRESHOLDS, AmcPolicy, threshold_table
from common.modulation import Modulation
from common.phy.theory import ber_awgn

B, Q, M16, M64, M256 = (Modulation.BPSK, Modulation.QPSK, Modulation.QAM16, Modulation.QAM64,
                        Modulation.QAM256)


def test_default_table_is_derived_from_ber_curves() -> None:
    assert threshold_table() == DEFAULT_THRESHOLDS
    for mod, thr in DEFAULT_THRESHOLDS.items():
        # At its threshold each modulation is >= 1 dB above the BER-1e-6 point.
        assert float(ber_awgn(mod, thr - 1.0)) <= 1e-6
        assert float(ber_awgn(mod, thr - 1.5)) > 1e-6  # and not wastefully far above it


def test_table_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "sdr.md").read_text(encoding="utf-8")
    for mod, thr in DEFAULT_THRESHOLDS.items():
        assert f"| {mod.value} " in doc and f"{thr:.1f}" in doc


# Each row: reported SNR (dB) -> modulation chosen, starting from BPSK, hysteresis 2 dB.
HYSTERESIS_TABLE = [
    (14.0, B),   # below QPSK's 15
    (16.0, B),   # above 15 but not 15 + 2: stay
    (17.5, Q),   # above QPSK + hysteresis: up
    (15.5, Q),   # inside the band: hold
    (14.9, B),   # below QPSK's threshold: down at once
    (40.0, M256),  # a clean link jumps straight to the top
    (34.5, M256),  # within hysteresis, but above 256QAM's threshold: hold
    (33.9, M64),   # below 34: immediately the best that fits
    (29.0, M64),
    (22.0, M16),  # several steps down in one report
    (math.nan, B),  # nothing decoded: back to the most robust
    (23.4, Q),  # 16QAM needs 21.5 + 2 = 23.5 to go up; QPSK's 15 + 2 is met
    (23.6, M16),
]


def test_hysteresis_table() -> None:
    policy = AmcPolicy()
    for snr, expected in HYSTERESIS_TABLE:
        assert policy.update(snr) is expected, (snr, expected, policy.current)


def test_up_after_requires_consecutive_reports() -> None:
    policy = AmcPolicy(up_after=3)
    assert [policy.update(s).value for s in (30, 30, 16, 30, 30, 30)] == [
        "bpsk", "bpsk", "bpsk", "bpsk", "bpsk", "64qam"
    ]
    # A down-switch is never delayed.
    assert policy.update(20.0) is Q


def test_custom_table_allowed_and_initial() -> None:
    policy = AmcPolicy({Q: 10.0, M64: 20.0, M256: 30.0}, hysteresis_db=0.0, initial=M64)
    assert policy.current is M64
    assert policy.update(25.0) is M64
    assert policy.update(30.0) is M256
    assert policy.update(5.0) is Q  # lowest allowed even below every threshold
    policy.reset()
    assert policy.current is M64
    limited = AmcPolicy(allowed=[Q, M16])
    assert limited.update(60.0) is M16 and limited.best_for(0.0) is Q


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"thresholds": {Q: 20.0, M16: 10.0}}, "increase"),
        ({"thresholds": {}}, "empty"),
        ({"thresholds": {Q: math.inf}}, "finite"),
        ({"hysteresis_db": -1.0}, "hysteresis"),
        ({"up_after": 0}, "up_after"),
        ({"allowed": [M256], "thresholds": {Q: 3.0}}, "no AMC threshold"),
        ({"initial": M256, "allowed": [Q]}, "initial"),
    ],
)
def test_policy_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AmcPolicy(**kwargs)  # type: ignore[arg-type]


def test_bench_runs_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_modem_main(["--payload-bytes", "3000", "--goodput-bytes", "2000", "--repeat", "1",
                             "--snr", "12,40", "--modulations", "qpsk,256qam", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["modulation"]: r for r in report["throughput"]}
    assert set(rows) == {"qpsk", "256qam"} and all(r["payload_ok"] for r in rows.values())
    assert all(r["combined_samples_per_s"] > 0 for r in rows.values())
    good = {(r["modulation"], r["snr_db"]): r for r in report["goodput"]}
    assert good[("256qam", 40.0)]["success_ratio"] == 1.0
    assert good[("256qam", 12.0)]["success_ratio"] == 0.0
    assert all(r["corrupt_valid_bytes"] == 0 for r in report["goodput"])
    assert bench_modem_main(["--payload-bytes", "1000", "--goodput-bytes", "500", "--repeat", "1",
                             "--snr", "30", "--modulations", "bpsk"]) == 0
    assert "goal" in capsys.readouterr().out
