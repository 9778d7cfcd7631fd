"""``semalign bench many`` for real on digits: one TX, one then two RX processes, every field
of the JSON there and nothing lost; and the arithmetic of the scale ratio and saturation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.bench.many import add_ratios, delivery, many_main, saturation


def row(n: int, rate: float, busy: float) -> dict[str, Any]:
    return {"receivers": n, "aggregate_batches_s": rate, "host_cores_busy": busy}


def test_ratio_is_aggregate_over_n_times_the_one_receiver_rate() -> None:
    rows = [row(1, 100.0, 0.5), row(2, 180.0, 1.0), row(4, 200.0, 1.9)]
    add_ratios(rows)
    assert [r["scale_ratio"] for r in rows] == pytest.approx([1.0, 0.9, 0.5])
    assert saturation(rows, 2) == 4
    assert saturation(rows[:2], 2) is None


def test_delivery_counts_lost_rows_and_gaps_per_receiver(tmp_path: Path) -> None:
    path = tmp_path / "tx.jsonl"
    rows = [{"rx": "a", "batch": 0, "status": "ok"}, {"rx": "a", "batch": 2, "status": "ok"},
            {"rx": "b", "batch": 0, "status": "lost"}, {"rx": "b", "batch": 1, "status": "ok"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert delivery(path, ["a", "b", "c"]) == {"a": {"acked": 2, "lost": 0, "gaps": 1},
                                              "b": {"acked": 1, "lost": 1, "gaps": 0},
                                              "c": {"acked": 0, "lost": 0, "gaps": 0}}


@pytest.mark.slow
def test_one_and_two_receivers_report_every_figure_and_lose_nothing(digits_bundle_dir: Path, tmp_path: Path) -> None:
    assert many_main(["--receivers", "1,2", "--batches", "150", "--bundle", str(digits_bundle_dir),
                      "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "many.json").read_text())
    assert [r["receivers"] for r in result["scale"]] == [1, 2]
    assert "saturated_at" in result and result["dataset"] == "digits"
    for r in result["scale"]:
        assert r["aggregate_batches_s"] > 0 and r["window_s"] > 0
        per = r["per_receiver_batches_s"]
        assert 0 < per["min"] <= per["median"] <= per["max"]
        assert r["tx_cpu_ms_per_batch"] > 0 and 0 < r["cores_busy"] <= r["host_cores_busy"] * 1.05
        assert r["tx_rss_mb"] > 0 and r["rx_rss_mb_median"] > 0 and r["rx_rss_mb_max"] >= r["rx_rss_mb_median"]
        assert r["acked"] == 150 * r["receivers"], r
        assert r["lost"] == 0 and r["gaps"] == 0 and r["tx_exit"] == 0
    assert result["scale"][0]["scale_ratio"] == pytest.approx(1.0)
    assert result["scale"][1]["scale_ratio"] > 0
