"""One batch through the receiver: parse, coefficients (stamp B), fine-tune (C), classify (D).

The daemon's handler (``process_parsed``) and the benchmarks (``process``, which parses first)
go through ``Receiver`` so their figures agree. The alignment policy (``adapt.policy``) runs
behind one interface, ``common.ml.alignment.Alignment``. The model takes the received PCA
coefficients through its folded first layer (``common.ml.fold``); images are reconstructed
only for fine-tuning, inside C.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from common.clock import monotonic_ns, realtime_ns
from common.log import get_logger
from common.ml.adapt import AdaptConfig, FitStats
from common.ml.alignment import Alignment, carries_state, open_alignment
from common.ml.bank import load_bank
from common.ml.bundle import Bundle
from common.ml.config import AlignPolicy
from common.ml.fold import Basis
from common.ml.model import load_model
from common.wire import payload as wire


@dataclass(frozen=True)
class Outcome:
    predictions: npt.NDArray[np.uint8]  # [t]
    header: wire.Header
    #: CLOCK_REALTIME when the received vectors were ready for the model (the paper's B): parsed
    #: and in float32 coefficients, which the folded first layer takes as they are.
    t_b_ns: int
    parse_s: float
    #: Payload values -> float32 coefficients (int8 scaled back), before B.
    reconstruct_s: float
    fit: FitStats  # fit.seconds is the paper's C; fit.gate_s is part of it
    classify_s: float  # the paper's D
    #: The alignment policy that produced ``fit`` (``Receiver.policy``).
    policy: str = "reset"
    #: Of C and D: folding first layers over the basis (cached per alpha), and reconstructing
    #: images for fine-tuning (0 when no fit ran).
    fold_s: float = 0.0
    images_s: float = 0.0


log = get_logger("semalign.rx")


class Receiver:
    """Holds the bundle and the adapter; turns a payload into predictions and timings."""

    def __init__(self, bundle: Bundle, adapt: AdaptConfig, *, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.bundle = bundle
        self.adapt = adapt
        self.basis = Basis(bundle.codec)
        base = load_model(bundle)
        bank = None
        if carries_state(adapt) and adapt.policy in (AlignPolicy.BANK, AlignPolicy.AUTO):
            bank = load_bank(bundle, base)
            if bank is None and adapt.policy is AlignPolicy.BANK:
                log.warning("no_bank", detail="bundle holds no adapter bank; policy bank starts from the base")
        self.adapter: Alignment = open_alignment(
            base, adapt, heldout_accuracy=bundle.meta.heldout_accuracy, bank=bank)

    @property
    def policy(self) -> str:
        """The alignment policy in use, as named in metrics rows."""
        return self.adapter.policy

    def reset_alignment(self, alpha: int | None = None) -> list[int]:
        """Forget carried-over adapters (of ``alpha``, or all); the alphas reset."""
        return self.adapter.reset(alpha)

    def warm_up(self) -> float:
        """Run one tiny fit and predict so lazy torch initialisation is not billed to batch 0's C;
        on coefficients, as batches come, so the folded and the reconstructing paths both run."""
        start = monotonic_ns()
        gen = torch.Generator().manual_seed(0)
        x = self.basis.coefficients(torch.randn(8, self.bundle.dims, generator=gen).numpy())
        y = torch.randint(0, self.bundle.meta.num_classes, (8,), generator=gen)
        self.adapter.warm_up(x, y)
        return (monotonic_ns() - start) / 1e9

    def parse(self, buf: bytes | memoryview) -> wire.Payload:
        return wire.parse(buf, max_alpha=self.bundle.dims, num_classes=self.bundle.meta.num_classes)

    def process(self, buf: bytes | memoryview, *, seed: int = 0, batch: int | None = None) -> Outcome:
        """Run one payload; raises ``PayloadError`` subclasses for malformed input."""
        t0 = monotonic_ns()
        parsed = self.parse(buf)
        t1 = monotonic_ns()
        return self.process_parsed(parsed, seed=seed, parse_s=(t1 - t0) / 1e9, batch=batch)

    def process_parsed(self, parsed: wire.Payload, *, seed: int = 0, parse_s: float = 0.0,
                       batch: int | None = None) -> Outcome:
        """``batch`` (the batch id) lets a carried-over adapter refuse to train twice on a resend."""
        t1 = monotonic_ns()
        x = self.basis.coefficients(parsed.values)  # [t + n, alpha] float32
        t_b = realtime_ns()
        t2 = monotonic_ns()
        fold_ns, images_ns = self.basis.fold_ns, self.basis.reconstruct_ns
        t = parsed.header.t
        y = torch.from_numpy(parsed.train_labels.astype(np.int64))
        fit = self.adapter.fit(x[t:], y, alpha=parsed.header.alpha, batch=batch, seed=seed)
        t3 = monotonic_ns()
        predictions = self.adapter.predict(x[:t])
        t4 = monotonic_ns()
        return Outcome(
            predictions=predictions,
            header=parsed.header,
            t_b_ns=t_b,
            parse_s=parse_s,
            reconstruct_s=(t2 - t1) / 1e9,
            fit=fit,
            classify_s=(t4 - t3) / 1e9,
            policy=self.policy,
            fold_s=(self.basis.fold_ns - fold_ns) / 1e9,
            images_s=(self.basis.reconstruct_ns - images_ns) / 1e9,
        )
