"""Smoke tests of ``semalign bench paper|system`` on digits: output structure, never speed."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common import errors
from common.bench.paper import paper_main
from common.bench.report import PAPER_COLUMNS, goals, time_to_target
from common.bench.system import system_main
from common.bench.tune import parse_grid
from common.errors import ConfigError
from common.link.budget import dataset_link, n_max
from common.ml.adapt import AdaptConfig, Adapter, AdaptMode
from common.ml.model import MLP
from common.ml.pretrain import ensure_bundle
from common.wire import payload as wire


@pytest.fixture(scope="module")
def digits_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-bundle") / "digits"
    ensure_bundle("digits", out=out)
    return out


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_bench_paper_writes_one_row_per_alpha_seed_method(
    digits_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "paper"
    code = paper_main([
        "--dataset", "digits", "--bundle", str(digits_bundle_dir), "--out", str(out),
        "--alphas", "30,20", "--seeds", "1", "--max-train", "60", "--curve-epochs", "1,2",
        "--epochs", "2", "--e2e-epochs", "3", "--no-plot",
    ])
    assert code == 0
    columns, rows = read_rows(out / "paper.csv")
    assert tuple(columns) == PAPER_COLUMNS
    assert sorted((int(r["alpha"]), r["method"]) for r in rows) == sorted(
        (a, m) for a in (30, 20) for m in ("none", "lora", "e2e"))
    t = dataset_link("digits").t
    for r in rows:
        for key in ("accuracy", "batch_accuracy"):
            assert 0.0 <= float(r[key]) <= 1.0, (key, r)
        alpha, n = int(r["alpha"]), int(r["n_train"])
        assert n == min(60, int(r["n_max"]))
        assert int(r["n_max"]) == n_max(int(r["b_max"]), t, alpha)
        assert int(r["payload_bytes"]) == wire.payload_size(t, n, alpha)
        assert int(r["eval_images"]) > t and r["eval_split"] == "test"
        assert float(r["comm_s"]) >= 0 and float(r["classify_s"]) > 0
        assert float(r["e2e_s"]) == pytest.approx(
            float(r["comm_s"]) + float(r["finetune_s"]) + float(r["classify_s"]), rel=1e-4)
        assert float(r["finetune_s"]) >= 0
        assert int(r["epochs"]) == {"none": 0, "lora": 2, "e2e": 3}[r["method"]]
    _, curves = read_rows(out / "curves.csv")
    # Budgets 1 and 2 plus each method's configured epochs (2 for LoRA, 3 for E2E).
    assert sorted({(c["method"], int(c["epochs"])) for c in curves}) == [
        ("e2e", 1), ("e2e", 2), ("e2e", 3), ("lora", 1), ("lora", 2)]
    assert all(0.0 <= float(c["accuracy"]) <= 1.0 for c in curves)
    assert (out / "targets.csv").is_file()
    printed = capsys.readouterr().out
    assert "N_max per alpha: 30:191, 20:307" in printed and "B_max=30000" in printed


def test_bench_paper_validation_split_and_bad_options(digits_bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "val"
    assert paper_main([
        "--dataset", "digits", "--bundle", str(digits_bundle_dir), "--out", str(out), "--alphas", "10",
        "--seeds", "1", "--methods", "none", "--eval", "validation", "--curve-seeds", "0", "--no-plot",
    ]) == 0
    _, rows = read_rows(out / "paper.csv")
    assert [r["method"] for r in rows] == ["none"] and rows[0]["eval_split"] == "validation"
    assert not (out / "curves.csv").exists()
    with pytest.raises(ConfigError, match="methods"):
        paper_main(["--dataset", "digits", "--out", str(out), "--methods", "lora,magic"])
    with pytest.raises(ConfigError, match="outside the bundle"):
        paper_main(["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--out", str(out),
                    "--alphas", "41", "--seeds", "1"])


def test_time_to_target_and_goals_tables() -> None:
    curves = [
        {"alpha": 40, "seed": 0, "method": "lora", "epochs": 1, "finetune_s": 0.1, "accuracy": 0.97},
        {"alpha": 40, "seed": 0, "method": "lora", "epochs": 5, "finetune_s": 0.5, "accuracy": 0.98},
        {"alpha": 40, "seed": 0, "method": "e2e", "epochs": 10, "finetune_s": 1.0, "accuracy": 0.90},
        {"alpha": 40, "seed": 0, "method": "e2e", "epochs": 30, "finetune_s": 3.0, "accuracy": 0.93},
    ]
    got = {r["target"]: r for r in time_to_target(curves, AdaptConfig(epochs=5, e2e_epochs=30), 0.95)}
    assert got["e2e"]["target_acc"] == 0.93
    assert (got["e2e"]["lora_s"], got["e2e"]["e2e_s"]) == (0.1, 3.0)
    assert got["e2e"]["ratio"] == pytest.approx(0.1 / 3.0)
    assert got["lora"]["e2e_s"] is None and got["lora"]["ratio"] is None
    assert got["fixed"]["lora_epochs"] == 1 and got["fixed"]["e2e_s"] is None
    summary = [{"alpha": a, "method": m, "accuracy": acc} for a, m, acc in
               [(60, "lora", 0.98), (60, "e2e", 0.9), (40, "lora", 0.9), (40, "e2e", 0.95)]]
    verdicts = {name: ok for name, ok, _ in goals(summary)}
    assert verdicts == {"LoRA accuracy >= 97.6% at every alpha >= 60": True,
                        "LoRA accuracy >= end-to-end at every alpha": False}


def test_tune_grid_is_a_cartesian_product_of_adapt_fields() -> None:
    grid = parse_grid("lr=1e-4,2e-4 epochs=3,5 mode=lora")
    assert len(grid) == 4 and grid[0] == {"lr": 1e-4, "epochs": 3, "mode": AdaptMode.LORA}
    assert parse_grid("") == [{}]


def test_cached_first_layer_trains_exactly_like_the_plain_lora_model() -> None:
    """The fine-tune fast path (frozen first layer computed once per fit) changes no number."""
    import common.ml.adapt as adapt

    torch.manual_seed(0)
    base = MLP(20, (16, 8), 4)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(100, 20, generator=gen), torch.randint(0, 4, (100,), generator=gen)
    fast = Adapter(base, AdaptConfig(epochs=3, lr=1e-2, batch_size=16))
    fast_stats = fast.fit(x, y, seed=2)
    plain = Adapter(base, AdaptConfig(epochs=3, lr=1e-2, batch_size=16))
    original = adapt.lora_trainer
    adapt.lora_trainer = lambda model, inputs: (model, inputs)
    try:
        plain_stats = plain.fit(x, y, seed=2)
    finally:
        adapt.lora_trainer = original
    assert math.isclose(fast_stats.final_loss, plain_stats.final_loss, rel_tol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(fast.model(x), plain.model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("t", "n", "scale"), [(3, 5, 1e30), (0, 30_000, 1.0), (2, 40_000, 1e20)])
def test_payload_fast_paths_keep_exact_semantics(t: int, n: int, scale: float) -> None:
    """Huge finite values and high vector indices (headers that read as huge floats) overflow
    the fast finiteness check; the exact fallback must still accept them, and still refuse NaN."""
    rng = np.random.default_rng(0)
    test = rng.standard_normal((t, 1)).astype(np.float32) * np.float32(scale)
    train = rng.standard_normal((n, 1)).astype(np.float32) * np.float32(scale)
    labels = rng.integers(0, 10, n)
    buf = wire.build(test, train, labels)
    got = wire.parse(buf, max_alpha=1, num_classes=10)
    np.testing.assert_array_equal(got.train, train)
    np.testing.assert_array_equal(got.train_labels, labels)
    bad = bytearray(buf)
    bad[-4:] = np.float32("nan").tobytes()
    with pytest.raises(errors.NonFiniteValue):
        wire.parse(bytes(bad), max_alpha=1, num_classes=10)


def test_bench_system_reports_every_section(digits_bundle_dir: Path, tmp_path: Path) -> None:
    code = system_main([
        "--dataset", "digits", "--bundle", str(digits_bundle_dir), "--only", "payload,transport,rx",
        "--alphas", "30,10", "--rounds", "1", "--payload-mb", "0.01", "--messages", "3",
        "--rx-batches", "1", "--threads", "1", "--out", str(tmp_path),
    ])
    assert code == 0
    result = json.loads((tmp_path / "system.json").read_text())
    assert [r["alpha"] for r in result["payload"]] == [30, 10]
    for r in result["payload"]:
        assert r["build_mb_s"] > 0 and r["parse_mb_s"] > 0 and r["build_ratio"] > 0
    assert result["transport"]["raw_mb_s"] > 0 and result["transport"]["ratio"] > 0
    assert {(r["threads"], r["alpha"]) for r in result["rx"]} == {(1, 30), (1, 10)}
    assert all(r["finetune_samples_s"] > 0 for r in result["rx"])
    assert result["machine"]["cores"] >= 1


def test_bench_floor_breaks_rx_down_beside_its_floor(digits_bundle_dir: Path) -> None:
    from common.bench.system import FLOOR_PARTS, bench_floor

    f = bench_floor("digits", None, digits_bundle_dir, "64qam", 4)
    assert (f["alpha"], f["t"], f["n"], f["batches"]) == (30, 50, 191, 4)  # digits at 64QAM
    assert sum(f["actions"].values()) == 4 and f["policy"] == "auto"
    assert all(f[k] >= 0 for k in FLOOR_PARTS) and f["gate_s"] > 0 and f["classify_s"] > 0
    # The floor is parse + one forward pass over every received vector; RX does at least a pass
    # over the test vectors and the gate's, so neither clock can put it at nothing.
    assert f["floor_s"] > 0 and f["floor_cpu_s"] > 0 and f["ratio"] > 0 and f["cpu_ratio"] > 0


@pytest.mark.slow
def test_bench_system_runs_the_real_daemons(digits_bundle_dir: Path, tmp_path: Path) -> None:
    assert system_main([
        "--dataset", "digits", "--bundle", str(digits_bundle_dir), "--only", "daemons",
        "--daemon-batches", "3", "--floor-batches", "2", "--out", str(tmp_path),
    ]) == 0
    result = json.loads((tmp_path / "system.json").read_text())
    d = result["daemons"]
    assert d["gate_s"] >= 0 and d["fold_s"] >= 0 and d["images_s"] >= 0
    assert result["floor"]["batches"] == 2 and result["floor"]["floor_s"] > 0
    assert d["batches"] == 3 and d["batches_per_s"] > 0
    assert d["rx_peak_mb"] > 50 and d["tx_peak_mb"] > 50
    assert (d["alpha"], d["n_train"]) == (30, 191)  # digits at 64QAM
