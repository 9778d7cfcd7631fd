"""``semalign bench paper``: the paper's experiment (its Figures 3 and 4) through the real code.

TX's ``BatchBuilder``, the ZeroMQ bearer on tcp loopback and RX's ``BatchHandler`` (the
daemons' own batch path) for every alpha, seed and adaptation method.
Summaries, goal checks, CSV files and plots are ``common.bench.report``'s.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import zmq

from common.bench.flags import METHODS, paper_parser
from common.bench.report import (
    CURVE_COLUMNS,
    PAPER_COLUMNS,
    TARGET_COLUMNS,
    format_table,
    format_targets,
    goals,
    machine,
    plot,
    summarise,
    time_to_target,
    write_csv,
)
from common.clock import realtime_ns
from common.data.spec import Dataset, Split, get_spec, load_dataset
from common.errors import BenchError, ConfigError, TransportError, Unreachable
from common.link import budget
from common.link.plan import LinkPlan
from common.log import progress
from common.ml.adapt import AdaptConfig, Adapter, AdaptMode
from common.ml.alignment import Alignment
from common.ml.bundle import Bundle, default_bundle_dir
from common.ml.config import AlignPolicy
from common.ml.model import load_model
from common.ml.pretrain import ensure_bundle
from common.modulation import Modulation
from common.timesync import SyncState
from common.transport.base import Transport
from common.transport.zmq import DealerWire, RouterWire, ZmqBearer
from common.wire import messages
from common.wire import payload as wire
from rx.handler import BatchHandler
from rx.pipeline import Receiver
from tx.batches import BatchBuilder

#: The paper's sweep: alpha = 150, 140, ..., 40 at 64QAM.
DEFAULT_ALPHAS: tuple[int, ...] = tuple(range(150, 39, -10))
#: How long the TX side of the loopback link waits for RX's report.
LINK_TIMEOUT_S = 300.0
POLL_MS = 50

# -- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """Where TX draws fine-tuning samples from and what the adapted model is scored on.

    ``test``: the pool supplies training samples and the test stream is scored (the paper's
    protocol). ``validation``: the first half of the pool supplies training samples and the
    second half is scored, so hyper-parameters can be tuned without looking at the test stream.
    """

    split: str
    pool: Split
    evaluation: Split


def sources(dataset: Dataset, split: str, eval_images: int | None = None) -> Sources:
    if split == "test":
        pool, evaluation = dataset.pool, dataset.test
    elif split == "validation":
        half = len(dataset.pool.y) // 2
        pool = Split(dataset.pool.x[:half], dataset.pool.y[:half])
        evaluation = Split(dataset.pool.x[half:], dataset.pool.y[half:])
    else:
        raise BenchError(f"evaluation split: expected test or validation, got {split!r}")
    if eval_images is not None and eval_images < len(evaluation.y):
        evaluation = Split(np.ascontiguousarray(evaluation.x[:eval_images]), evaluation.y[:eval_images])
    return Sources(split, pool, evaluation)


def reconstruct(bundle: Bundle, images: npt.NDArray[np.float32], alpha: int) -> torch.Tensor:
    """What RX sees of ``images`` at ``alpha``: float32 PCA coefficients, inverse-PCA'd."""
    return torch.from_numpy(bundle.codec.decode(bundle.codec.encode(images, alpha)))


@torch.inference_mode()
def accuracy(adapter: Alignment, x: torch.Tensor, y: npt.NDArray[np.int64]) -> float:
    """Accuracy of the adapter's current model on ``x`` [n, D], in chunks to bound memory."""
    correct = 0
    for start in range(0, len(y), 4096):
        pred = adapter.predict(x[start : start + 4096])
        correct += int((pred == y[start : start + 4096]).sum())
    return correct / len(y) if len(y) else float("nan")


# -- the loopback link -------------------------------------------------------------------


class LoopbackLink:
    """The daemons' batch path on tcp loopback: ``BatchBuilder`` -> bearer -> ``BatchHandler``.

    TX's side builds and sends in the caller's thread; RX's side is a ROUTER served by one
    thread running the handler the caller picked through ``use``, so the A and B stamps,
    the comm latency record and the report are the daemons' own.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], bundle: Bundle) -> None:
        self.bundle = bundle
        self.builder = BatchBuilder(bundle, transport=Transport.ZMQ)
        self.bearer = ZmqBearer()
        self._handler: BatchHandler | None = None
        self._stop = threading.Event()
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._ctx = ctx
        self._thread = threading.Thread(target=self._serve, name="bench-rx", daemon=True)
        self._thread.start()
        ready = self._ready.get(timeout=30)
        if isinstance(ready, BaseException):
            raise TransportError(f"benchmark receiver failed to start: {ready}") from ready
        self.endpoint = ready
        self.wire = DealerWire(ctx, ready)
        self._batch = 0

    def use(self, receiver: Receiver) -> None:
        self._handler = BatchHandler(self.bundle, receiver, {Transport.ZMQ: self.bearer}, _same_host,
                                     max_message_bytes=MAX_MESSAGE_BYTES)

    def _serve(self) -> None:
        try:
            rx = RouterWire(self._ctx, "tcp://127.0.0.1:*")
        except zmq.ZMQError as exc:
            self._ready.put(exc)
            return
        self._ready.put(rx.endpoint)
        try:
            while not self._stop.is_set():
                if not rx.poll(POLL_MS):
                    continue
                peer, frames = rx.recv()
                received_ns = realtime_ns()
                handler = self._handler
                if handler is None:
                    reply = messages.ErrorReply("bench", "no receiver chosen").encode()
                else:
                    reply = handler.handle(frames, received_ns=received_ns).reply
                rx.reply(peer, reply)
        finally:
            rx.close()

    def send(self, images: npt.NDArray[np.float32], t: int, labels: npt.NDArray[np.int64],
             plan: LinkPlan) -> Sent:
        """``images`` holds the t test images then the training images with ``labels``."""
        batch = self.builder.encode(images, t, labels, plan, self._batch)
        self._batch += 1
        deadline = time.monotonic() + LINK_TIMEOUT_S
        while True:  # the DEALER connects in the background at first
            try:
                self.bearer.send(self.wire, batch.envelope, batch.payload)
                break
            except Unreachable:
                if time.monotonic() > deadline:
                    raise TransportError("the benchmark receiver never connected") from None
                time.sleep(0.01)
        if not self.wire.socket.poll(int(LINK_TIMEOUT_S * 1000)):
            raise TransportError(f"no report from the benchmark receiver within {LINK_TIMEOUT_S:g} s")
        frames = self.wire.recv()
        reply = messages.decode_reply(frames[0]) if frames else None
        if isinstance(reply, messages.ErrorReply):
            raise BenchError(f"receiver rejected the batch: {reply.code}: {reply.message}")
        if not isinstance(reply, messages.Report):
            raise BenchError(f"unexpected reply {type(reply).__name__}")
        return Sent(reply, len(batch.payload), batch.encode_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.wire.close()


#: Both ends run on this host, so B - A is read off one clock; no sync state is claimed.
def _same_host() -> SyncState:
    return SyncState.unsynchronised("benchmark: TX and RX share this host's clock", read_at_ns=realtime_ns())


#: RX's message-size limit on the benchmark link (the daemons' default).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Sent:
    report: messages.Report
    payload_bytes: int
    encode_s: float


# -- options -----------------------------------------------------------------------------


def adapt_config(args: argparse.Namespace) -> AdaptConfig:
    names = {f.name for f in fields(AdaptConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None and k != "mode"}
    return replace(AdaptConfig(), **overrides)


def method_config(base: AdaptConfig, method: str, seed: int) -> AdaptConfig:
    # The paper's procedure: every batch from the frozen base (bench align compares policies).
    return replace(base, mode=AdaptMode.parse(method), seed=seed, policy=AlignPolicy.RESET)


# -- the experiment ----------------------------------------------------------------------


@dataclass(frozen=True)
class PaperPlan:
    dataset: str
    modulation: Modulation
    b_max: int
    t: int
    alphas: tuple[int, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    adapt: AdaptConfig
    split: str
    eval_images: int | None
    max_train: int | None
    threads: int
    curve_seeds: int
    curve_epochs: tuple[int, ...]
    target_acc: float

    def n_max(self, alpha: int) -> int:
        return budget.n_max(self.b_max, self.t, alpha)

    def link_plan(self, alpha: int, n_max: int) -> LinkPlan:
        """The plan TX's batch builder gets: the paper's budget at a fixed alpha, float32 values."""
        return LinkPlan(self.modulation, self.b_max, alpha, self.t, n_max, wire.ValueType.FLOAT32)


def run_paper(plan: PaperPlan, bundle: Bundle, dataset: Dataset) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the sweep; returns the paper.csv rows and the curves.csv rows."""
    torch.set_num_threads(plan.threads)
    src = sources(dataset, plan.split, plan.eval_images)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    link = LoopbackLink(ctx, bundle)
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    try:
        receivers = {(seed, method): _receiver(plan, bundle, src, link, method, seed)
                     for seed in plan.seeds for method in plan.methods}
        jobs = [(alpha, seed) for alpha in plan.alphas for seed in plan.seeds]
        evaluation: dict[int, torch.Tensor] = {}  # the current alpha's reconstructed images only
        for alpha, seed in progress(jobs, "bench paper"):
            if alpha not in evaluation:
                evaluation.clear()
                evaluation[alpha] = reconstruct(bundle, src.evaluation.x, alpha)
            x_eval = evaluation[alpha]
            batch = _draw(plan, src, alpha, seed)
            for method in plan.methods:
                receiver = receivers[(seed, method)]
                link.use(receiver)
                sent = link.send(batch.images, plan.t, batch.labels, plan.link_plan(alpha, batch.n_max))
                rows.append(_row(plan, alpha, seed, method, batch, sent, receiver, x_eval, src))
            if seed in plan.seeds[: plan.curve_seeds]:
                curves.extend(_curve(plan, bundle, alpha, seed, batch, x_eval, src))
    finally:
        link.close()
        ctx.term()
    return rows, curves


def _receiver(
    plan: PaperPlan, bundle: Bundle, src: Sources, link: LoopbackLink, method: str, seed: int
) -> Receiver:
    """A receiver for one method and seed, warmed up by one small batch through the link.

    The warm-up runs in the link's RX thread, so lazy torch initialisation is not billed to
    the first measured batch (the daemon warms up the same way before serving).
    """
    receiver = Receiver(bundle, method_config(plan.adapt, method, seed), threads=plan.threads)
    link.use(receiver)
    alpha = plan.alphas[0]
    n = min(8, len(src.pool.y))
    images = np.concatenate([src.evaluation.x[:1], src.pool.x[:n]])
    link.send(images, 1, src.pool.y[:n], plan.link_plan(alpha, plan.n_max(alpha)))
    return receiver


@dataclass(frozen=True)
class Batch:
    images: npt.NDArray[np.float32]  # [t + n, D]: t test images, then n training images
    test_labels: npt.NDArray[np.int64]  # [t]
    labels: npt.NDArray[np.int64]  # [n]
    n_max: int


def _draw(plan: PaperPlan, src: Sources, alpha: int, seed: int) -> Batch:
    """t test images from the evaluation split and N_max training images from the pool."""
    rng = np.random.default_rng([seed, alpha])
    n_max = plan.n_max(alpha)
    n = min(n_max, len(src.pool.y), plan.max_train if plan.max_train is not None else n_max)
    t = min(plan.t, len(src.evaluation.y))
    if t < plan.t:
        raise BenchError(f"t={plan.t} exceeds the {len(src.evaluation.y)} evaluation images")
    test_idx = rng.choice(len(src.evaluation.y), size=t, replace=False)
    train_idx = rng.choice(len(src.pool.y), size=n, replace=False)
    images = np.concatenate([src.evaluation.x[test_idx], src.pool.x[train_idx]])
    return Batch(images, src.evaluation.y[test_idx], src.pool.y[train_idx], n_max)


def _row(
    plan: PaperPlan, alpha: int, seed: int, method: str, batch: Batch, sent: Sent,
    receiver: Receiver, x_eval: torch.Tensor, src: Sources,
) -> dict[str, Any]:
    r = sent.report
    preds = np.frombuffer(r.predictions, dtype=np.uint8)
    cfg = receiver.adapt
    epochs = {AdaptMode.LORA: cfg.epochs, AdaptMode.E2E: cfg.e2e_epochs}.get(cfg.mode, 0)
    return {
        "dataset": plan.dataset, "modulation": plan.modulation.value, "b_max": plan.b_max,
        "t": plan.t, "alpha": alpha, "n_max": batch.n_max, "n_train": r.n_train,
        "payload_bytes": sent.payload_bytes, "seed": seed, "method": method,
        # The adapted model (left in the receiver by the batch) scored on the evaluation split.
        "accuracy": accuracy(receiver.adapter, x_eval, src.evaluation.y),
        "eval_split": src.split, "eval_images": len(src.evaluation.y),
        "batch_accuracy": float((preds == batch.test_labels).mean()),
        "comm_s": r.latency_comm_s, "finetune_s": r.latency_finetune_s,
        "classify_s": r.latency_classify_s, "e2e_s": r.latency_e2e_s,
        "encode_s": sent.encode_s, "parse_s": r.parse_s, "reconstruct_s": r.reconstruct_s,
        "train_loss": r.train_loss, "epochs": epochs, "threads": plan.threads,
    }


def _curve(
    plan: PaperPlan, bundle: Bundle, alpha: int, seed: int, batch: Batch,
    x_eval: torch.Tensor, src: Sources,
) -> list[dict[str, Any]]:
    """Fine-tune time and accuracy for each epoch budget, each a fresh fit from the base."""
    x = reconstruct(bundle, batch.images[plan.t :], alpha)
    y = torch.from_numpy(batch.labels)
    base = load_model(bundle)
    out = []
    for method in ("lora", "e2e"):
        if method not in plan.methods:
            continue
        configured = plan.adapt.epochs if method == "lora" else plan.adapt.e2e_epochs
        for epochs in sorted({*plan.curve_epochs, configured}):
            cfg = method_config(plan.adapt, method, seed)
            cfg = replace(cfg, epochs=epochs) if method == "lora" else replace(cfg, e2e_epochs=epochs)
            adapter = Adapter(base, cfg)
            stats = adapter.fit(x, y, seed=0)
            out.append({
                "alpha": alpha, "seed": seed, "method": method, "epochs": epochs,
                "n_train": len(batch.labels), "finetune_s": stats.seconds,
                "accuracy": accuracy(adapter, x_eval, src.evaluation.y),
            })
    return out


# -- command line ------------------------------------------------------------------------


def paper_plan_from_args(args: argparse.Namespace) -> PaperPlan:
    """The ``PaperPlan`` the command line asks for, validated; ``BudgetError`` if an alpha cannot fit."""
    link = budget.dataset_link(args.dataset)
    modulation = Modulation.parse(args.modulation)
    t = args.t if args.t is not None else link.t
    b_max = args.b_max or budget.byte_budget(modulation, args.symbols_per_window or link.symbols_per_window,
                                             args.code_rate or link.code_rate)
    alphas = args.alphas or DEFAULT_ALPHAS
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"--methods: expected a subset of {','.join(METHODS)}, got {args.methods!r}")
    for name in ("seeds", "threads"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}: expected an integer >= 1, got {getattr(args, name)}")
    if args.max_train is not None and args.max_train < 0:
        raise ConfigError(f"--max-train: expected an integer >= 0, got {args.max_train}")
    plan = PaperPlan(
        dataset=args.dataset, modulation=modulation, b_max=b_max, t=t, alphas=tuple(alphas),
        seeds=tuple(range(args.seeds)), methods=methods, adapt=adapt_config(args), split=args.split,
        eval_images=args.eval_images, max_train=args.max_train, threads=args.threads,
        curve_seeds=args.curve_seeds, curve_epochs=tuple(args.curve_epochs), target_acc=args.target_acc,
    )
    for alpha in plan.alphas:
        plan.n_max(alpha)  # raises BudgetError if not even the test vectors fit
    return plan


def paper_main(argv: list[str]) -> int:
    args = paper_parser().parse_args(argv)
    plan = paper_plan_from_args(args)
    torch.set_num_threads(plan.threads)
    started = time.monotonic()
    dims = get_spec(plan.dataset).pretrain.dims
    bundle_dir = args.bundle or default_bundle_dir(plan.dataset)
    print(f"bundle: {bundle_dir} (pre-trained end to end at {dims} PCA dims; built if absent)", flush=True)
    bundle = ensure_bundle(plan.dataset, out=bundle_dir, data_dir=args.data_dir, dims=dims)
    bad = [a for a in plan.alphas if not 1 <= a <= bundle.dims]
    if bad:
        raise ConfigError(f"--alphas: {bad} outside the bundle's 1..{bundle.dims} PCA dims")
    dataset = load_dataset(plan.dataset, args.data_dir)
    env = machine()
    print(f"bundle ready: dims={bundle.dims} held-out accuracy={bundle.meta.heldout_accuracy:.4f} "
          f"hash={bundle.hash[:12]}")
    print(f"link: {plan.modulation.value} B_max={plan.b_max} bytes, t={plan.t}; "
          f"N_max per alpha: " + ", ".join(f"{a}:{plan.n_max(a)}" for a in plan.alphas))
    print("adapt: " + ", ".join(f"{k}={v}" for k, v in asdict(plan.adapt).items() if k != "mode"))
    print(f"seeds {list(plan.seeds)}; methods {list(plan.methods)}; scoring on {plan.split} "
          f"({plan.eval_images or 'all'} images); machine: {env}", flush=True)
    rows, curves = run_paper(plan, bundle, dataset)
    out: Path = args.out
    write_csv(out / "paper.csv", rows, PAPER_COLUMNS)
    if curves:
        write_csv(out / "curves.csv", curves, CURVE_COLUMNS)
    summary = summarise(rows)
    print()
    print(format_table(summary))
    if curves:
        targets = time_to_target(curves, plan.adapt, plan.target_acc)
        write_csv(out / "targets.csv", targets, TARGET_COLUMNS)
        print("\ntime to accuracy target (each epoch budget a separate fit from the base; targets 'e2e'/'lora' "
              "= what that method reaches with its configured epochs):")
        print(format_targets(targets))
    print()
    for name, ok, detail in goals(summary):
        print(f"goal {'MET' if ok else 'NOT MET'}: {name}: {detail}")
    if not args.no_plot:
        for path in plot(summary, curves, out, f"{plan.dataset}, {plan.modulation.value}, B_max={plan.b_max}"):
            print(f"plot: {path}")
    print(f"wrote {out / 'paper.csv'}" + (f", {out / 'curves.csv'} and {out / 'targets.csv'}" if curves else "")
          + f" in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(paper_main(sys.argv[1:]))
