"""The soak benchmark's arithmetic: growth per 1,000 batches, and counting a growing metrics file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from common.bench.soak import _LineCounter, _slope_per_1000


@pytest.mark.parametrize(("batches", "values", "expected"), [
    ([0, 1000, 2000], [100.0, 101.0, 102.0], 1.0),
    ([100, 600, 1100], [50.0, 50.0, 50.0], 0.0),
    ([0, 500, 1000, 1500], [10.0, 9.5, 9.0, 8.5], -1.0),
])
def test_slope_per_1000(batches: list[int], values: list[float], expected: float) -> None:
    assert _slope_per_1000(batches, values) == pytest.approx(expected)


@pytest.mark.parametrize("batches", [[], [5], [7, 7]])
def test_slope_needs_two_distinct_points(batches: list[int]) -> None:
    assert math.isnan(_slope_per_1000(batches, [1.0] * len(batches)))


def test_line_counter_reads_only_what_is_new(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    counter = _LineCounter(path)
    assert counter.count() == 0  # absent yet
    path.write_text('{"a": 1}\n{"a": 2}\n{"a"')  # a partial last line is not a record yet
    assert counter.count() == 2
    with path.open("a") as f:
        f.write(': 3}\n')
    assert counter.count() == 3 and counter.offset == path.stat().st_size
