"""``bench system --only curve`` runs end to end and reports both links (figures, not timing asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.bench.system import bench_curve


def test_bench_curve_reports_plain_and_curve_figures(tmp_path: Path) -> None:
    result = bench_curve(size=10_000, count=5, rounds=1, workdir=tmp_path)
    for key in ("plain_mb_s", "curve_mb_s", "plain_batches_s", "curve_batches_s", "goodput_ratio", "rate_ratio"):
        assert result[key] > 0, key
    assert result["goodput_ratio"] == pytest.approx(result["goodput_ratio_min"])  # one round: one ratio
    assert (tmp_path / "allow" / "tx.key").is_file() and not (tmp_path / "allow" / "tx.key_secret").exists()
