"""``semalign bench align``: streams of batches per scenario and alignment policy, scored on the test stream.

A scenario is an alpha, a sensor shift at TX and a value type; a policy is ``none``,
``reset`` (today's budget), ``reset-strong``, ``continual``, ``bank``, ``auto`` or ``e2e``.
Each (scenario, policy, seed) cell streams batches through the daemons' batch path
(``LoopbackLink``) and scores the receiver's model after every batch on the whole evaluation
split, shifted and encoded as TX would. Cells run in joblib processes, or on a Dask cluster.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import zmq
from threadpoolctl import threadpool_limits

from common.bench.flags import POLICIES, align_parser
from common.bench.paper import LoopbackLink, sources
from common.bench.report import machine, mean_std, write_csv
from common.config import build
from common.data.spec import Dataset, load_dataset
from common.errors import BenchError
from common.link.budget import byte_budget, dataset_link, n_max
from common.link.plan import LinkPlan
from common.ml.adapt import AdaptConfig, AdaptMode
from common.ml.bundle import Bundle, load_bundle
from common.ml.config import AlignPolicy
from common.ml.pretrain import ensure_bundle
from common.modulation import Modulation
from common.wire import payload as wire
from rx.pipeline import Receiver
from tx.shift import Shift

#: e2e retrains from scratch on every batch, so its accuracy does not depend on the batch
#: index; it runs on this many batches of each stream only (its cost dominates otherwise).
E2E_BATCHES = 2
COLUMNS = ("scenario", "policy", "seed", "batch", "alpha", "shift", "value_type", "n_train", "accuracy",
           "finetune_s", "gate", "action", "holdout_gain", "split")


@dataclass(frozen=True)
class Scenario:
    """What TX sends: ``alpha`` coefficients of images under ``shift``, as ``value_type``."""

    alpha: int
    shift: str = ""
    value_type: str = "float32"

    @property
    def name(self) -> str:
        parts = [f"a{self.alpha}", self.shift or "clean"]
        if self.value_type != "float32":
            parts.append(self.value_type)
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """``"40"``, ``"40/rotate:40"``, ``"40/rotate:40/int8"`` or ``"40//int8"``."""
        alpha, _, rest = text.partition("/")
        shift, _, value_type = rest.partition("/")
        try:
            scenario = cls(int(alpha), shift if shift != "clean" else "", value_type or "float32")
        except ValueError:
            raise BenchError(f"scenario: expected ALPHA[/SHIFT[/VALUE_TYPE]], got {text!r}") from None
        Shift(scenario.shift)
        wire.ValueType.parse(scenario.value_type)
        return scenario




@dataclass(frozen=True)
class Cell:
    dataset: str
    data_dir: str | None
    bundle: str
    scenario: Scenario
    policy: str
    seed: int
    batches: int
    split: str
    eval_images: int | None
    modulation: str = "64qam"
    #: AdaptConfig fields overridden for every policy (tuning on the validation split).
    overrides: tuple[tuple[str, Any], ...] = ()


def parse_overrides(text: str) -> tuple[tuple[str, Any], ...]:
    """``"continual_lr=5e-4 gate_skip=0.01 bank_start=blend"`` -> (field, value) pairs.

    A value is read as a JSON scalar (``5e-4``, ``3``, ``true``), else kept as text; the
    config loader then checks every pair against ``AdaptConfig`` as it would a YAML file.
    """
    out = []
    for item in text.split():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BenchError(f"--adapt-set: expected NAME=VALUE, got {item!r}")
        try:
            out.append((name, json.loads(value)))
        except ValueError:
            out.append((name, value))
    pairs = tuple(out)
    build(AdaptConfig, dict(pairs), "--adapt-set")
    return pairs


def policy_config(policy: str, seed: int, overrides: tuple[tuple[str, Any], ...] = ()) -> AdaptConfig:
    """The receiver's adaptation settings for a policy name of ``POLICIES``."""
    base = build(AdaptConfig, {**dict(overrides), "seed": seed}, "--adapt-set")
    if policy == "none":
        return replace(base, mode=AdaptMode.NONE, policy=AlignPolicy.RESET)
    if policy == "e2e":
        return replace(base, mode=AdaptMode.E2E, policy=AlignPolicy.RESET)
    if policy == "reset":
        return replace(base, policy=AlignPolicy.RESET)
    if policy == "reset-strong":
        return replace(base, policy=AlignPolicy.RESET, epochs=base.strong_epochs, lr=base.strong_lr)
    if policy in ("continual", "bank", "auto"):
        return replace(base, policy=AlignPolicy.parse(policy))
    raise BenchError(f"policy: expected one of {', '.join(POLICIES)}, got {policy!r}")


@functools.lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str | None) -> Dataset:
    return load_dataset(name, data_dir)


@functools.lru_cache(maxsize=2)
def _bundle(path: str) -> Bundle:
    return load_bundle(path)


def _encoded(bundle: Bundle, images: npt.NDArray[np.float32], alpha: int, value_type: wire.ValueType) -> torch.Tensor:
    """What RX reconstructs from ``images``: coefficients, quantised if int8, inverse-PCA'd."""
    coeffs: npt.NDArray[Any] = bundle.codec.encode(images, alpha)
    if value_type is wire.ValueType.INT8:
        coeffs = bundle.codec.quantise(coeffs)
    return torch.from_numpy(bundle.codec.decode(coeffs))


def run_cell(cell: Cell) -> list[dict[str, Any]]:
    """Stream ``cell.batches`` batches; one row per batch, scored on the evaluation split.

    One thread for torch and for numpy's BLAS, wherever the cell runs: a multi-threaded
    matmul sums in another order, and a last-digit difference in a PCA coefficient can flip a
    gate decision a few batches later (joblib's workers are limited to one BLAS thread, the
    parent process is not).
    """
    with threadpool_limits(limits=1):
        return _run_cell(cell)


def _run_cell(cell: Cell) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    dataset, bundle = _dataset(cell.dataset, cell.data_dir), _bundle(cell.bundle)
    src = sources(dataset, cell.split, cell.eval_images)
    sc = cell.scenario
    value_type = wire.ValueType.parse(sc.value_type)
    link_defaults = dataset_link(cell.dataset)
    modulation = Modulation.parse(cell.modulation)
    b_max = byte_budget(modulation, link_defaults.symbols_per_window, link_defaults.code_rate)
    t = link_defaults.t
    n = min(n_max(b_max, t, sc.alpha, value_type), len(src.pool.y))
    plan = LinkPlan(modulation, b_max, sc.alpha, t, n, value_type)
    # The evaluation images go through the same sensor and encoder as the batches.
    eval_shift = Shift(sc.shift, seed=10_000 + cell.seed)
    x_eval = _encoded(bundle, eval_shift.apply_flat(src.evaluation.x, dataset.image_shape), sc.alpha, value_type)
    shift = Shift(sc.shift, seed=cell.seed)
    rng = np.random.default_rng(cell.seed)
    receiver = Receiver(bundle, policy_config(cell.policy, cell.seed, cell.overrides))
    batches = min(cell.batches, E2E_BATCHES) if cell.policy == "e2e" else cell.batches
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    link = LoopbackLink(ctx, bundle)
    rows: list[dict[str, Any]] = []
    try:
        link.use(receiver)
        receiver.warm_up()
        for batch in range(batches):
            test_idx = rng.choice(len(src.evaluation.y), t, replace=False)
            train_idx = rng.choice(len(src.pool.y), n, replace=False)
            images = shift.apply_flat(np.concatenate([src.evaluation.x[test_idx], src.pool.x[train_idx]]),
                                      dataset.image_shape)
            sent = link.send(images, t, src.pool.y[train_idx], plan)
            correct = 0
            for start in range(0, len(src.evaluation.y), 4096):
                pred = receiver.adapter.predict(x_eval[start : start + 4096])
                correct += int((pred == src.evaluation.y[start : start + 4096]).sum())
            extra = sent.report.extra
            rows.append({
                "scenario": sc.name, "policy": cell.policy, "seed": cell.seed, "batch": batch,
                "alpha": sc.alpha, "shift": str(shift), "value_type": sc.value_type, "n_train": sent.report.n_train,
                "accuracy": correct / len(src.evaluation.y), "finetune_s": sent.report.latency_finetune_s,
                "gate": extra.get("gate"), "action": extra.get("align_action"),
                "holdout_gain": extra.get("holdout_gain"), "split": cell.split,
            })
    finally:
        link.close()
        ctx.term()
    return rows


def run_cells(cells: Sequence[Cell], *, jobs: int = 1, dask: str | Any | None = None,
              on_cell: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Every cell's rows: in joblib processes (``jobs``), or on the Dask cluster at ``dask``.

    ``on_cell`` sees each cell's rows as it finishes (in completion order), so a long sweep
    can save what it has measured so far.
    """
    done = on_cell or (lambda rows: None)
    if dask is not None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise BenchError("--dask needs the dask extra: pip install 'semalign[dask]'") from exc
        client = Client(dask)  # type: ignore[no-untyped-call]
        try:
            futures = client.map(run_cell, list(cells), pure=False)
            results: list[list[dict[str, Any]]] = client.gather(futures)  # type: ignore[no-untyped-call]
        finally:
            client.close()  # type: ignore[no-untyped-call]
        for rows in results:
            done(rows)
    elif jobs == 1:
        results = []
        for c in cells:
            results.append(run_cell(c))
            done(results[-1])
    else:
        from joblib import Parallel, delayed

        results = []
        for rows in Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(
                delayed(run_cell)(c) for c in cells):
            results.append(rows)
            done(rows)
    order = {(c.scenario.name, c.policy, c.seed): i for i, c in enumerate(cells)}
    results.sort(key=lambda rows: order.get((rows[0]["scenario"], rows[0]["policy"], rows[0]["seed"]), 0)
                 if rows else 0)
    return [row for rows in results for row in rows]


# -- summaries ---------------------------------------------------------------------------


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (scenario, policy): accuracy at batches 1, 3, 10 and the last, median C."""
    out = []
    keys = sorted({(r["scenario"], r["policy"]) for r in rows}, key=lambda k: (k[0], POLICIES.index(k[1])))
    for scenario, policy in keys:
        cell = [r for r in rows if r["scenario"] == scenario and r["policy"] == policy]
        last = max(r["batch"] for r in cell)
        line: dict[str, Any] = {"scenario": scenario, "policy": policy, "seeds": len({r["seed"] for r in cell}),
                                "batches": last + 1}
        for label, b in (("b1", 0), ("b3", 2), ("b10", 9), ("last", last)):
            mean, std = mean_std(r["accuracy"] for r in cell if r["batch"] == b)
            line[f"acc_{label}"], line[f"std_{label}"] = mean, std
        line["acc_mean"] = mean_std(r["accuracy"] for r in cell)[0]
        line["median_c_ms"] = 1000 * statistics.median(r["finetune_s"] for r in cell)
        line["n_train"] = cell[0]["n_train"]
        out.append(line)
    return out


def format_tables(summary: Sequence[dict[str, Any]]) -> str:
    """A markdown table per scenario (accuracy in %, mean +- std over seeds; C in ms)."""
    def pct(line: dict[str, Any], label: str) -> str:
        mean, std = line[f"acc_{label}"], line[f"std_{label}"]
        return "-" if mean != mean else f"{100 * mean:.2f} ± {100 * std:.2f}"

    blocks = []
    for scenario in dict.fromkeys(s["scenario"] for s in summary):
        lines = [s for s in summary if s["scenario"] == scenario]
        head = (f"**{scenario}** (N = {lines[0]['n_train']} training vectors per batch)\n\n"
                "| policy | batch 1 | batch 3 | batch 10 | last batch | median C ms |\n|---|---|---|---|---|---|")
        body = [f"| {s['policy']} | {pct(s, 'b1')} | {pct(s, 'b3')} | {pct(s, 'b10')} | {pct(s, 'last')} "
                f"| {s['median_c_ms']:.1f} |" for s in lines]
        blocks.append("\n".join([head, *body]))
    return "\n\n".join(blocks)


def versus_e2e(rows: Sequence[dict[str, Any]]) -> str:
    """Each policy against ``e2e`` on the same received samples (the batches ``e2e`` ran).

    The goal: at least as accurate at most a third of e2e's C. Accuracy is the mean over the
    first ``E2E_BATCHES`` batches and the seeds; C the mean fine-tuning time over them.
    """
    lines = ["| scenario | policy | accuracy | e2e accuracy | C ms | e2e C ms | C / e2e C | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        e2e = [r for r in rows if r["scenario"] == scenario and r["policy"] == "e2e"]
        if not e2e:
            continue
        batches = {r["batch"] for r in e2e}
        e2e_acc = float(np.mean([r["accuracy"] for r in e2e]))
        e2e_c = float(np.mean([r["finetune_s"] for r in e2e]))
        for policy in POLICIES:
            if policy == "e2e":
                continue
            cell = [r for r in rows if r["scenario"] == scenario and r["policy"] == policy and r["batch"] in batches]
            if not cell:
                continue
            acc = float(np.mean([r["accuracy"] for r in cell]))
            c = float(np.mean([r["finetune_s"] for r in cell]))
            ratio = c / e2e_c if e2e_c > 0 else float("nan")
            misses = [why for why, missed in (("less accurate", acc < e2e_acc),
                                               ("over 1/3 of the C", not ratio <= 1 / 3)) if missed]
            why = ", ".join(misses) or "met"
            lines.append(f"| {scenario} | {policy} | {100 * acc:.2f} | {100 * e2e_acc:.2f} | {1000 * c:.1f} "
                         f"| {1000 * e2e_c:.0f} | {ratio:.3f} | {why} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def plot(rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Per scenario: accuracy vs batch index and C per batch, one line per policy (seed mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        fig, (ax_acc, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
        for policy in POLICIES:
            cell = [r for r in rows if r["scenario"] == scenario and r["policy"] == policy]
            if not cell:
                continue
            batches = sorted({r["batch"] for r in cell})
            acc = [100 * np.mean([r["accuracy"] for r in cell if r["batch"] == b]) for b in batches]
            c = [1000 * np.mean([r["finetune_s"] for r in cell if r["batch"] == b]) for b in batches]
            ax_acc.plot([b + 1 for b in batches], acc, marker="o", label=policy)
            ax_c.plot([b + 1 for b in batches], c, marker="o", label=policy)
        ax_acc.set(xlabel="batch", ylabel="accuracy on the evaluation split (%)", title=f"{scenario}: accuracy")
        ax_c.set(xlabel="batch", ylabel="C: fine-tuning time (ms)", title=f"{scenario}: C per batch", yscale="log")
        ax_acc.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"align_{scenario.replace(' ', '_').replace(':', '')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def bank_starts(bundle: Bundle, dataset: Dataset, alphas: Sequence[int], split: str = "validation") -> list[dict[str, Any]]:
    """Accuracy of the base and of its bank starts (nearest entry, blend) without fine-tuning."""
    import copy

    from common.ml.bank import BankStart, apply_start, load_bank
    from common.ml.model import load_model

    base = load_model(bundle)
    bank = load_bank(bundle, base)
    if bank is None:
        raise BenchError(f"{bundle.path} holds no adapter bank (semalign pretrain --bank ALPHAS)")
    src = sources(dataset, split)
    y = torch.from_numpy(src.evaluation.y)
    out = []
    for alpha in alphas:
        x = _encoded(bundle, src.evaluation.x, alpha, wire.ValueType.FLOAT32)
        row: dict[str, Any] = {"alpha": alpha}
        with torch.inference_mode():
            row["none"] = float((base(x).argmax(1) == y).float().mean())
            for how in BankStart:
                model = copy.deepcopy(base)
                apply_start(model, bank.start(alpha, how))
                row[how.value] = float((model(x).argmax(1) == y).float().mean())
        out.append(row)
    return out


#: Clip levels, in standard deviations of each component, that the int4 probe tries.
INT4_CLIPS = (1.5, 2.0, 2.5, 3.0, 4.0)


def int4_probe(bundle: Bundle, dataset: Dataset, alpha: int, shifts: Sequence[str] = ("", "rotate:40"),
               split: str = "validation") -> list[dict[str, Any]]:
    """Would 4-bit values pay? The base's accuracy (no fine-tuning) on ``split`` at ``alpha``.

    float32, the project's int8, and 4-bit codes (-7..7 per component, clipped at each of
    ``INT4_CLIPS`` standard deviations, no scale bytes), per shift. int4 is not a wire type:
    this measures what it would cost before anyone builds it.
    """
    from common.ml.model import load_model

    base = load_model(bundle)
    codec = bundle.codec
    if codec.scale is None:
        raise BenchError(f"{bundle.path} records no per-component scales")
    src = sources(dataset, split)
    y = torch.from_numpy(src.evaluation.y)
    out = []
    for spec in shifts:
        coeffs = codec.encode(Shift(spec, seed=1).apply_flat(src.evaluation.x, dataset.image_shape), alpha)
        variants: dict[str, npt.NDArray[Any]] = {"float32": coeffs}
        variants["int8"] = codec.quantise(coeffs)  # codes: decode scales them back, as RX does
        for k in INT4_CLIPS:
            step = (codec.scale[:alpha] * np.float32(k / 7)).astype(np.float32)
            variants[f"int4@{k}"] = (np.clip(np.rint(coeffs / step), -7, 7) * step).astype(np.float32)
        row: dict[str, Any] = {"shift": spec or "none"}
        with torch.inference_mode():
            for name, c in variants.items():
                row[name] = float((base(torch.from_numpy(codec.decode(c))).argmax(1) == y).float().mean())
        out.append(row)
    return out


# -- command line ------------------------------------------------------------------------


def align_main(argv: list[str] | None = None) -> int:
    args = align_parser().parse_args(argv)
    scenarios = [Scenario.parse(s) for s in args.scenarios.split(",") if s]
    policies = [s for s in args.policies.split(",") if s]
    overrides = parse_overrides(args.adapt_set)
    for policy in policies:
        policy_config(policy, 0, overrides)
    bundle = ensure_bundle(args.dataset, out=args.bundle, data_dir=args.data_dir,
                           bank=tuple(a for a in args.bank))
    if args.bank_starts:
        torch.set_num_threads(1)
        table = bank_starts(bundle, _dataset(args.dataset, args.data_dir), args.bank_starts, args.split)
        print("| alpha | none | nearest | blend |\n|---|---|---|---|")
        for r in table:
            print(f"| {r['alpha']} | {100 * r['none']:.2f} | {100 * r['nearest']:.2f} | {100 * r['blend']:.2f} |")
        return 0
    if args.int4_probe:
        torch.set_num_threads(1)
        rows = int4_probe(bundle, _dataset(args.dataset, args.data_dir), args.int4_probe, split=args.split)
        names = [k for k in rows[0] if k != "shift"]
        print(f"| shift | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
        for r in rows:
            print(f"| {r['shift']} | {' | '.join(f'{100 * r[k]:.2f}' for k in names)} |")
        return 0
    too_big = [s.name for s in scenarios if s.alpha > bundle.dims]
    if too_big:
        raise BenchError(f"scenarios {too_big} exceed the bundle's {bundle.dims} dims")
    cells = [Cell(args.dataset, args.data_dir, str(bundle.path), s, policy, seed, args.batches, args.split,
                  args.eval_images, overrides=overrides) for s in scenarios for policy in policies for seed in args.seeds]
    args.out.mkdir(parents=True, exist_ok=True)
    partial: list[dict[str, Any]] = []

    def save(rows: list[dict[str, Any]]) -> None:
        partial.extend(rows)
        write_csv(args.out / "align.partial.csv", partial, COLUMNS)

    rows = run_cells(cells, jobs=args.jobs, dask=args.dask, on_cell=save)
    report(rows, args.out, bundle, print_to=sys.stdout.write)
    (args.out / "align.partial.csv").unlink(missing_ok=True)
    return 0


def report(rows: Sequence[dict[str, Any]], out: Path, bundle: Bundle,
           print_to: Callable[[str], Any] | None = None) -> list[Path]:
    """Write align.csv, align.md (tables) and the plots under ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "align.csv", rows, COLUMNS)
    tables = format_tables(summarise(rows))
    env = machine()
    text = (f"bundle {bundle.hash[:12]} (bank {list(bundle.meta.bank)}), {env.get('cpu', '')}\n\n{tables}\n")
    versus = versus_e2e(rows)
    if versus:
        text += f"\n**Against e2e on the same received samples** (batches 1-{E2E_BATCHES})\n\n{versus}\n"
    (out / "align.md").write_text(text)
    paths = [out / "align.csv", out / "align.md", *plot(rows, out)]
    if print_to is not None:
        print_to(text)
    return paths
