"""``semalign bench align`` on digits: two scenarios through joblib and a Dask LocalCluster."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from common.bench.align import (
    COLUMNS,
    Cell,
    Scenario,
    parse_overrides,
    policy_config,
    report,
    run_cells,
    summarise,
)
from common.data.spec import load_dataset
from common.errors import BenchError, ConfigError
from common.ml.bundle import Bundle
from common.ml.config import BankStart

pytestmark = pytest.mark.slow


def cells(bundle: Bundle) -> list[Cell]:
    scenarios = [Scenario(30), Scenario(30, "rotate:40", "int8")]
    return [Cell("digits", None, str(bundle.path), s, policy, 0, 2, "validation", None)
            for s in scenarios for policy in ("none", "auto")]


def check(rows: list[dict[str, object]]) -> None:
    assert len(rows) == 2 * 2 * 2
    assert {r["scenario"] for r in rows} == {"a30 clean", "a30 rotate:40 int8"}
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0  # type: ignore[arg-type]
        assert r["policy"] != "auto" or r["gate"] is not None
    shifted = [r for r in rows if r["scenario"] == "a30 rotate:40 int8" and r["policy"] == "none"]
    clean = [r for r in rows if r["scenario"] == "a30 clean" and r["policy"] == "none"]
    assert max(float(r["accuracy"]) for r in shifted) < min(float(r["accuracy"]) for r in clean)  # type: ignore[arg-type]


def test_joblib_cells_write_csv_tables_and_plots(digits_bundle: Bundle, tmp_path: Path) -> None:
    rows = run_cells(cells(digits_bundle), jobs=2)
    check(rows)
    paths = report(rows, tmp_path, digits_bundle)
    with (tmp_path / "align.csv").open() as f:
        read = list(csv.DictReader(f))
    assert tuple(read[0]) == COLUMNS and len(read) == len(rows)
    assert sorted(p.name for p in paths if p.suffix == ".png") == ["align_a30_clean.png", "align_a30_rotate40_int8.png"]
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix == ".png")
    assert "| auto |" in (tmp_path / "align.md").read_text()
    assert {s["policy"] for s in summarise(rows)} == {"none", "auto"}


def test_dask_local_cluster_gives_the_same_rows(digits_bundle: Bundle) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        rows = run_cells(cells(digits_bundle)[:2], dask=cluster.scheduler_address)
    local = run_cells(cells(digits_bundle)[:2])
    key = ("scenario", "policy", "batch", "accuracy", "n_train")
    assert [tuple(r[k] for k in key) for r in rows] == [tuple(r[k] for k in key) for r in local]


@pytest.mark.parametrize(("text", "ok"), [("40", True), ("40/rotate:40", True), ("40/rotate:40/int8", True),
                                          ("40//float16", True), ("x", False), ("40/twist", False),
                                          ("40//int4", False)])
def test_scenarios_parse(text: str, ok: bool) -> None:
    if ok:
        assert Scenario.parse(text).alpha == 40
    else:
        with pytest.raises(Exception):  # noqa: B017 - BenchError, ShiftError or ConfigError
            Scenario.parse(text)


def test_adapt_set_is_read_as_the_config_loader_reads_a_file() -> None:
    pairs = parse_overrides("continual_lr=5e-4 gate_samples=256 bank_start=blend gate_skip=0")
    cfg = policy_config("auto", 3, pairs)
    assert (cfg.continual_lr, cfg.gate_samples, cfg.bank_start, cfg.gate_skip, cfg.seed) == (
        5e-4, 256, BankStart.BLEND, 0.0, 3)
    with pytest.raises(ConfigError, match="--adapt-set: gate_samples: expected an integer"):
        parse_overrides("gate_samples=0.5")
    with pytest.raises(ConfigError, match=r"unknown setting.*gate_skp"):
        parse_overrides("gate_skp=0.01")
    with pytest.raises(ConfigError, match="gate_skip must be in"):
        parse_overrides("gate_skip=0.5")  # above gate_strong: AdaptConfig's own check
    with pytest.raises(BenchError, match="expected NAME=VALUE"):
        parse_overrides("gate_skip")


def test_unknown_policy_refused() -> None:
    with pytest.raises(BenchError):
        policy_config("magic", 0)


def test_int4_probe_scores_every_value_variant(digits_bundle: Bundle) -> None:
    from common.bench.align import INT4_CLIPS, int4_probe

    rows = int4_probe(digits_bundle, load_dataset("digits"), 20, shifts=("", "invert"))
    assert [r["shift"] for r in rows] == ["none", "invert"]
    for r in rows:
        assert set(r) == {"shift", "float32", "int8", *(f"int4@{k}" for k in INT4_CLIPS)}
        assert all(0.0 <= r[k] <= 1.0 for k in r if k != "shift")
    # int8's steps are fine enough to leave clean accuracy where float32 has it; inversion is not.
    assert abs(rows[0]["int8"] - rows[0]["float32"]) <= 0.02 and rows[1]["float32"] < rows[0]["float32"] - 0.3


def test_versus_e2e_says_where_a_policy_meets_the_goal_and_where_not() -> None:
    from common.bench.align import versus_e2e

    def rows(policy: str, acc: float, c: float, batches: int = 3) -> list[dict[str, object]]:
        return [{"scenario": "a40 clean", "policy": policy, "batch": b, "accuracy": acc, "finetune_s": c}
                for b in range(batches)]

    table = versus_e2e([*rows("e2e", 0.90, 3.0, batches=2), *rows("auto", 0.95, 0.01),
                        *rows("reset", 0.85, 0.5), *rows("bank", 0.96, 2.0)])
    by_policy = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert set(by_policy) == {"auto", "reset", "bank"}
    assert by_policy["auto"].endswith("| met |") and "| 0.003 |" in by_policy["auto"]
    assert by_policy["reset"].endswith("| less accurate |")
    assert by_policy["bank"].endswith("| over 1/3 of the C |")
    assert versus_e2e(rows("auto", 0.9, 0.1)) == ""  # no e2e run: no table


def test_a_cell_runs_on_one_blas_thread_wherever_it_runs(digits_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    # A multi-threaded BLAS sums in another order: in-process cells would then differ in the
    # last digits from joblib's (single-threaded) workers, enough to flip a gate decision.
    import threadpoolctl

    import common.bench.align as align

    seen: list[list[int]] = []

    def spy(cell: Cell) -> list[dict[str, object]]:
        seen.append([pool["num_threads"] for pool in threadpoolctl.threadpool_info()])
        return []

    monkeypatch.setattr(align, "_run_cell", spy)
    with threadpoolctl.threadpool_limits(limits=2):
        assert align.run_cell(cells(digits_bundle)[0]) == []
        outside = [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]
    assert seen and seen[0] and all(n == 1 for n in seen[0])
    assert outside and all(n == 2 for n in outside)  # the limit is lifted afterwards
