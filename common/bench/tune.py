"""Hyper-parameter search for per-batch adaptation, scored on a validation half of the pool.

``python -m common.bench.tune --grid "lr=1e-4,3e-4 epochs=5,10"``: each configuration
fine-tunes with the real ``Adapter`` on N_max samples drawn from pool[:half] and is scored on
pool[half:]. The test stream is never loaded into the search.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.bench.flags import DEFAULT_MODULATION, add_adapt_flags, int_list
from common.bench.paper import accuracy, adapt_config, reconstruct, sources
from common.bench.report import mean_std, write_csv
from common.data.spec import DATASET_NAMES, get_spec, load_dataset
from common.errors import BenchError
from common.link.budget import byte_budget, dataset_link, n_max
from common.log import progress
from common.ml.adapt import AdaptConfig, Adapter, AdaptMode
from common.ml.bundle import default_bundle_dir
from common.ml.model import load_model
from common.ml.pretrain import ensure_bundle
from common.modulation import Modulation

COLUMNS = ("config", "alpha", "seed", "n_train", "finetune_s", "accuracy")


def parse_grid(text: str) -> list[dict[str, Any]]:
    """``"lr=1e-4,3e-4 epochs=5,10 mode=lora"`` -> the cartesian product as AdaptConfig overrides."""
    types = {f.name: f.type for f in fields(AdaptConfig)}
    axes: list[list[tuple[str, Any]]] = []
    for item in text.split():
        name, _, values = item.partition("=")
        if name not in types or not values:
            raise BenchError(f"--grid: expected NAME=V1,V2 with NAME an AdaptConfig field, got {item!r}")
        conv: Any = AdaptMode.parse if name == "mode" else (int if types[name] in (int, "int") else float)
        axes.append([(name, conv(v)) for v in values.split(",")])
    grid: list[dict[str, Any]] = []
    for combo in itertools.product(*axes):
        overrides = dict(combo)
        if overrides.get("mode") is AdaptMode.NONE:
            overrides = {"mode": AdaptMode.NONE}  # nothing else applies without adaptation
        if overrides not in grid:
            grid.append(overrides)
    return grid or [{}]


def label(overrides: dict[str, Any]) -> str:
    parts = [f"{k}={v.value if isinstance(v, AdaptMode) else v}" for k, v in overrides.items()]
    return " ".join(parts) or "defaults"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.bench.tune", description=__doc__)
    p.add_argument("--dataset", default="mnist", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--bundle", type=Path)
    p.add_argument("--alphas", type=int_list, default=(150, 100, 60, 40))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--modulation", default=DEFAULT_MODULATION)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grid", default="", help='space-separated NAME=V1,V2 (AdaptConfig fields), e.g. "lr=1e-4,3e-4 epochs=5,10"')
    p.add_argument("--out", type=Path, help="write every measurement to this CSV")
    add_adapt_flags(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = adapt_config(args)
    grid = parse_grid(args.grid)
    link = dataset_link(args.dataset)
    b_max = byte_budget(Modulation.parse(args.modulation), link.symbols_per_window, link.code_rate)
    bundle = ensure_bundle(args.dataset, out=args.bundle or default_bundle_dir(args.dataset),
                           data_dir=args.data_dir, dims=get_spec(args.dataset).pretrain.dims)
    src = sources(load_dataset(args.dataset, args.data_dir), "validation")
    print(f"validation: fine-tune samples from pool[:{len(src.pool.y)}], scored on the other "
          f"{len(src.evaluation.y)} pool images; B_max={b_max}, t={link.t}; base {base}", flush=True)
    model = load_model(bundle)
    Adapter(model, base).fit(torch.rand(8, bundle.meta.input_dim), torch.zeros(8, dtype=torch.int64))
    rows: list[dict[str, Any]] = []
    for alpha in args.alphas:
        x_val = reconstruct(bundle, src.evaluation.x, alpha)
        n = min(n_max(b_max, link.t, alpha), len(src.pool.y))
        for seed in range(args.seeds):
            idx = np.random.default_rng([seed, alpha]).choice(len(src.pool.y), size=n, replace=False)
            x = reconstruct(bundle, src.pool.x[idx], alpha)
            y = torch.from_numpy(src.pool.y[idx])
            for overrides in progress(grid, f"alpha {alpha} seed {seed}"):
                adapter = Adapter(model, replace(base, seed=seed, **overrides))
                stats = adapter.fit(x, y)
                rows.append({"config": label(overrides), "alpha": alpha, "seed": seed, "n_train": n,
                             "finetune_s": stats.seconds,
                             "accuracy": accuracy(adapter, x_val, src.evaluation.y)})
    if args.out:
        write_csv(args.out, rows, COLUMNS)
    alphas = list(args.alphas)
    print(f"\n{'config':<40} " + " ".join(f"{'a=' + str(a):>14}" for a in alphas) + f" {'mean':>7} {'C s':>6}")
    results = []
    for overrides in grid:
        name = label(overrides)
        mine = [r for r in rows if r["config"] == name]
        per = [mean_std(r["accuracy"] for r in mine if r["alpha"] == a) for a in alphas]
        results.append((float(np.mean([m for m, _ in per])), name, per,
                        float(np.mean([r["finetune_s"] for r in mine]))))
    for mean, name, per, c in sorted(results, reverse=True):
        cells = " ".join(f"{m:.4f}+-{s:.4f}" for m, s in per)
        print(f"{name:<40} {cells} {mean:>7.4f} {c:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
