"""What ``semalign bench paper`` reports: summaries over seeds, goal checks, CSV files and plots.

Everything here works on plain row dicts; the experiment that produces them is ``paper.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.bench.flags import METHODS
from common.ml.adapt import AdaptConfig

#: The paper's headline LoRA accuracy on MNIST.
PAPER_ACCURACY = 0.976

PAPER_COLUMNS: tuple[str, ...] = (
    "dataset", "modulation", "b_max", "t", "alpha", "n_max", "n_train", "payload_bytes",
    "seed", "method", "accuracy", "eval_split", "eval_images", "batch_accuracy",
    "comm_s", "finetune_s", "classify_s", "e2e_s", "encode_s", "parse_s", "reconstruct_s",
    "train_loss", "epochs", "threads",
)
CURVE_COLUMNS: tuple[str, ...] = (
    "alpha", "seed", "method", "epochs", "n_train", "finetune_s", "accuracy",
)
TARGET_COLUMNS: tuple[str, ...] = (
    "alpha", "seed", "target", "target_acc", "lora_s", "lora_epochs", "e2e_s", "e2e_epochs", "ratio",
)


# -- environment -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The CPU, cores, load and library versions a result was measured with."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and (population) std of the finite values; NaN, NaN when there are none."""
    arr = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std())


# -- summaries ---------------------------------------------------------------------------


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds for each (alpha, method)."""
    keys = sorted({(r["alpha"], r["method"]) for r in rows}, key=lambda k: (-k[0], METHODS.index(k[1]) if k[1] in METHODS else 9))
    out = []
    for alpha, method in keys:
        group = [r for r in rows if r["alpha"] == alpha and r["method"] == method]
        s: dict[str, Any] = {"alpha": alpha, "method": method, "seeds": len(group),
                             "n_train": group[0]["n_train"], "payload_bytes": group[0]["payload_bytes"]}
        for col in ("accuracy", "batch_accuracy", "comm_s", "finetune_s", "classify_s", "e2e_s"):
            s[col], s[col + "_std"] = mean_std(r[col] for r in group)
        out.append(s)
    return out


def time_to_target(
    curves: Sequence[dict[str, Any]], adapt: AdaptConfig, fixed_target: float
) -> list[dict[str, Any]]:
    """Per alpha and seed: the shortest measured fine-tune reaching a target, for LoRA and E2E.

    Targets: what E2E reaches with its configured epochs (``e2e``), what LoRA reaches with
    its configured epochs (``lora``), and a fixed accuracy (``fixed``); all from the same
    curve runs. ``None`` means no budget on the curve reached the target.
    """
    configured = {"lora": adapt.epochs, "e2e": adapt.e2e_epochs}
    out = []
    for alpha, seed in sorted({(c["alpha"], c["seed"]) for c in curves}, key=lambda k: (-k[0], k[1])):
        mine = [c for c in curves if (c["alpha"], c["seed"]) == (alpha, seed)]
        targets = {"fixed": fixed_target}
        for method, epochs in configured.items():
            at = [c["accuracy"] for c in mine if c["method"] == method and c["epochs"] == epochs]
            if at:
                targets[method] = at[0]
        for name, target in targets.items():
            rec: dict[str, Any] = {"alpha": alpha, "seed": seed, "target": name, "target_acc": target}
            for method in ("lora", "e2e"):
                hits = [c for c in mine if c["method"] == method and c["accuracy"] >= target]
                best = min(hits, key=lambda c: c["finetune_s"]) if hits else None
                rec[f"{method}_s"] = best["finetune_s"] if best else None
                rec[f"{method}_epochs"] = best["epochs"] if best else None
            lo, e2 = rec["lora_s"], rec["e2e_s"]
            rec["ratio"] = lo / e2 if lo is not None and e2 else None
            out.append(rec)
    return out


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    head = (f"{'alpha':>5} {'N':>5} {'bytes':>7} {'method':>6} {'accuracy':>15} {'batch acc':>9} "
            f"{'comm s':>15} {'fine-tune s':>15} {'classify s':>11} {'e2e s':>15}")
    lines = [head]
    for s in summary:
        lines.append(
            f"{s['alpha']:>5} {s['n_train']:>5} {s['payload_bytes']:>7} {s['method']:>6} "
            f"{_pm(s['accuracy'], s['accuracy_std'], 4):>15} {s['batch_accuracy']:>9.3f} "
            f"{_pm(s['comm_s'], s['comm_s_std'], 4):>15} {_pm(s['finetune_s'], s['finetune_s_std'], 3):>15} "
            f"{s['classify_s']:>11.4f} {_pm(s['e2e_s'], s['e2e_s_std'], 3):>15}"
        )
    return "\n".join(lines)


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'alpha':>5} {'seed':>4} {'target':>6} {'acc':>7} {'LoRA s (ep)':>13} {'E2E s (ep)':>13} {'ratio':>7}"]
    for r in targets:
        lora = f"{r['lora_s']:.3f} ({r['lora_epochs']})" if r["lora_s"] is not None else "not reached"
        e2e = f"{r['e2e_s']:.3f} ({r['e2e_epochs']})" if r["e2e_s"] is not None else "not reached"
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        lines.append(f"{r['alpha']:>5} {r['seed']:>4} {r['target']:>6} {r['target_acc']:>7.4f} "
                     f"{lora:>13} {e2e:>13} {ratio:>7}")
    return "\n".join(lines)


def goals(summary: Sequence[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The issue's accuracy goals, checked on the means over seeds."""
    by = {(s["alpha"], s["method"]): s for s in summary}
    alphas = sorted({s["alpha"] for s in summary}, reverse=True)
    out = []
    if any(m == "lora" for _, m in by):
        high = [a for a in alphas if a >= 60 and (a, "lora") in by]
        low = [a for a in high if by[(a, "lora")]["accuracy"] < PAPER_ACCURACY]
        if high:
            out.append((f"LoRA accuracy >= {PAPER_ACCURACY:.1%} at every alpha >= 60", not low,
                        f"below at alpha {low}" if low else f"met at alpha {high}"))
    if any(m == "e2e" for _, m in by) and any(m == "lora" for _, m in by):
        worse = [a for a in alphas if (a, "e2e") in by and (a, "lora") in by
                 and by[(a, "lora")]["accuracy"] < by[(a, "e2e")]["accuracy"]]
        out.append(("LoRA accuracy >= end-to-end at every alpha", not worse,
                    f"below at alpha {worse}" if worse else "met at every alpha measured"))
    return out


def _pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f}+-{std:.{digits}f}"


# -- output ------------------------------------------------------------------------------


def write_json(out: Path, name: str, result: dict[str, Any]) -> Path:
    """A benchmark's figures as ``out/name`` (sorted keys, indented), and say so."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"\nwrote {path}")
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot(
    summary: Sequence[dict[str, Any]], curves: Sequence[dict[str, Any]], out: Path, title: str
) -> list[Path]:
    """Figures 3 (latency vs dimension) and 4 (accuracy vs dimension), and accuracy vs
    fine-tune time from the curves; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'semalign[plot]'): plots skipped", file=sys.stderr)
        return []
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHODS if any(s["method"] == m for s in summary)]
    labels = {"none": "no adaptation", "lora": "LoRA", "e2e": "end-to-end"}
    styles = {"none": ("tab:gray", "s"), "lora": ("tab:blue", "o"), "e2e": ("tab:red", "^")}

    def series(method: str, col: str) -> tuple[list[int], list[float], list[float]]:
        pts = sorted((s["alpha"], s[col], s[col + "_std"]) for s in summary if s["method"] == method)
        return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]

    written = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for m in methods:
        x, y, e = series(m, "e2e_s")
        ax1.errorbar(x, y, yerr=e, label=labels[m], color=styles[m][0], marker=styles[m][1], capsize=3)
    ax1.set(xlabel="PCA dimension alpha", ylabel="end-to-end latency (s)", title="(B-A)+C+D per method")
    ax1.legend()
    ax1.grid(alpha=0.3)
    parts = (("comm_s", "comm B-A"), ("finetune_s", "fine-tune C"), ("classify_s", "classify D"))
    focus = "lora" if "lora" in methods else methods[0]
    for col, name in parts:
        x, y, e = series(focus, col)
        ax2.errorbar(x, y, yerr=e, label=name, marker="o", capsize=3)
    ax2.set(xlabel="PCA dimension alpha", ylabel="seconds", yscale="log", title=f"{labels[focus]} latency breakdown")
    ax2.legend()
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle(f"Latency vs dimension ({title})")
    fig.tight_layout()
    path = out / "fig3_latency.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        x, y, e = series(m, "accuracy")
        # "no adaptation" often lies on top of LoRA: dashed and hollow, so both stay visible.
        ax.errorbar(x, [v * 100 for v in y], yerr=[v * 100 for v in e], label=labels[m],
                    color=styles[m][0], marker=styles[m][1], capsize=3,
                    ls="--" if m == "none" else "-", mfc="none" if m == "none" else styles[m][0])
    ax.axhline(PAPER_ACCURACY * 100, color="k", ls=":", lw=1, label=f"paper LoRA {PAPER_ACCURACY:.1%}")
    ax.set(xlabel="PCA dimension alpha", ylabel="accuracy (%)", title=f"Accuracy vs dimension ({title})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "fig4_accuracy.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append(path)

    alphas = sorted({c["alpha"] for c in curves})
    if alphas:
        shown = sorted({alphas[0], alphas[len(alphas) // 2], alphas[-1]}, reverse=True)
        fig, ax = plt.subplots(figsize=(6, 4))
        for alpha, ls in zip(shown, ("-", "--", ":"), strict=False):
            for m in ("lora", "e2e"):
                pts = [(c["finetune_s"], c["accuracy"]) for c in sorted(curves, key=lambda c: c["epochs"])
                       if c["alpha"] == alpha and c["method"] == m and c["seed"] == curves[0]["seed"]]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] * 100 for p in pts], ls=ls, marker=styles[m][1],
                            color=styles[m][0], label=f"{labels[m]}, alpha {alpha}")
        ax.set(xlabel="fine-tune time C (s), one fit per epoch budget", ylabel="accuracy (%)", xscale="log",
               title=f"Accuracy vs fine-tune time ({title})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        path = out / "fig5_time_to_accuracy.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
