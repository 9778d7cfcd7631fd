"""The bench suites' command lines, apart from the suites: ``bench paper --help`` costs no torch.

``paper_main``/``align_main`` here parse first (``--help`` and bad flags end there) and only
then import the suite, which imports torch, and run it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.data.spec import DATASET_NAMES

#: The adaptation methods compared, in the order tables and plots show them.
METHODS: tuple[str, ...] = ("none", "lora", "e2e")
DEFAULT_MODULATION = "64qam"
#: Epoch budgets of the time-to-accuracy runs (each a separate fit from the frozen base).
CURVE_EPOCHS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)

POLICIES = ("none", "reset", "reset-strong", "continual", "bank", "auto", "e2e")
DEFAULT_BANK = (150, 100, 60, 40, 20, 10)
#: The full matrix the issue asks for: clean at the paper's alphas and low alphas, each shift
#: family at alpha 100 and 40, and the value types at alpha 40.
FULL_SCENARIOS = (
    *(f"{a}" for a in (150, 100, 60, 40, 20, 10, 5)),
    *(f"{a}/{s}" for s in ("rotate:40", "invert", "noise:0.3", "blur:1", "scale:0.8") for a in (100, 40)),
    "40//float16", "40//int8", "40/rotate:40/int8",
)
ALIGN_DESCRIPTION = (
    "Streams of batches per scenario (alpha, sensor shift at TX, value type) and alignment policy "
    f"({', '.join(POLICIES)}), scored on the test stream. Cells run in joblib processes, or on a Dask cluster."
)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_adapt_flags(p: argparse.ArgumentParser) -> None:
    """Flags overriding ``AdaptConfig`` defaults (the ``adapt`` section of rx.yaml)."""
    g = p.add_argument_group("adaptation (defaults: common.ml.adapt.AdaptConfig)")
    g.add_argument("--rank", type=int)
    g.add_argument("--lora-alpha", type=float)
    g.add_argument("--epochs", type=int, help="LoRA epochs")
    g.add_argument("--lr", type=float, help="LoRA learning rate")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--e2e-epochs", type=int)
    g.add_argument("--e2e-lr", type=float)


def paper_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semalign bench paper",
        description="Reproduce the paper's accuracy and latency vs PCA dimension (Figures 3 and 4).",
    )
    p.add_argument("--dataset", default="mnist", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path, help="directory with the IDX files (mnist, fashion-mnist)")
    p.add_argument("--bundle", type=Path, help="bundle directory (default: cache dir; built if absent)")
    p.add_argument("--out", type=Path, required=True, help="directory for paper.csv, curves.csv and plots")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (sample draws and adapter init)")
    p.add_argument("--alphas", type=int_list, help="comma-separated alphas (default 150,140,...,40)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of none,lora,e2e")
    p.add_argument("--modulation", default=DEFAULT_MODULATION)
    p.add_argument("--t", type=int, help="test vectors per batch (default: the dataset spec's)")
    p.add_argument("--symbols-per-window", type=int)
    p.add_argument("--code-rate", type=float)
    p.add_argument("--b-max", type=int, help="byte budget; overrides the modulation's")
    p.add_argument("--max-train", type=int, help="cap on training samples per batch (default: N_max)")
    p.add_argument("--eval", dest="split", default="test", choices=("test", "validation"),
                   help="score on the test stream, or on a validation half of the pool (for tuning)")
    p.add_argument("--eval-images", type=int, help="score on the first N evaluation images (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--curve-seeds", type=int, default=1,
                   help="seeds for which time-to-accuracy curves are measured (0: none)")
    p.add_argument("--curve-epochs", type=int_list, default=CURVE_EPOCHS)
    p.add_argument("--target-acc", type=float, default=0.95, help="fixed accuracy target of the time-to-target table")
    p.add_argument("--no-plot", action="store_true")
    add_adapt_flags(p)
    return p


def align_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semalign bench align", description=ALIGN_DESCRIPTION)
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-dir")
    p.add_argument("--bundle", type=Path, help="bundle directory (default: the cache's, built with a bank)")
    p.add_argument("--bank", type=int_list, default=DEFAULT_BANK,
                   help="bank alphas the bundle must hold (built on first use)")
    p.add_argument("--scenarios", default=",".join(FULL_SCENARIOS),
                   help="comma-separated ALPHA[/SHIFT[/VALUE_TYPE]] (default: the full matrix)")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--seeds", type=int_list, default=(0, 1, 2))
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="score on the test stream, or tune on the pool's validation half")
    p.add_argument("--eval-images", type=int, help="score on the first N evaluation images only")
    p.add_argument("--adapt-set", default="", metavar="'NAME=V ...'",
                   help="override AdaptConfig fields for every policy (tune with --split validation)")
    p.add_argument("--jobs", type=int, default=2, help="joblib processes")
    p.add_argument("--dask", metavar="SCHEDULER", help="run the cells on this Dask scheduler instead")
    p.add_argument("--out", type=Path, default=Path("results/align"))
    p.add_argument("--bank-starts", type=int_list, metavar="ALPHAS",
                   help="instead of streams: the bank's nearest and blended starts at these alphas, "
                        "no fine-tuning, scored on --split")
    p.add_argument("--int4-probe", type=int, metavar="ALPHA",
                   help="instead of streams: the base's accuracy at ALPHA with float32, int8 and 4-bit "
                        "values at several clips, clean and rotated 40 deg, scored on --split")
    return p


def paper_main(argv: list[str]) -> int:
    paper_parser().parse_args(argv)  # --help and bad flags end here, before torch loads
    from common.bench.paper import paper_main as run

    return run(argv)


def align_main(argv: list[str] | None = None) -> int:
    align_parser().parse_args(argv)  # --help and bad flags end here, before torch loads
    from common.bench.align import align_main as run

    return run(argv)
