"""TX's batch building: draw images, stamp A, PCA-encode, pack the payload, write the envelope.

The daemon and ``semalign bench paper`` both build batches here, so their A stamps and
encode times mean the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.clock import NS_PER_S, Stamp, monotonic_ns
from common.data.spec import Dataset
from common.link.plan import LinkPlan
from common.log import get_logger
from common.ml.bundle import Bundle
from common.wire import messages
from common.wire import payload as wire
from tx.shift import Plugin, Shift

log = get_logger("semalign.tx")


@dataclass(frozen=True, eq=False)
class Batch:
    """A batch built and ready to send."""

    envelope: messages.Envelope
    payload: bytes
    test_labels: npt.NDArray[np.int64]  # [t], kept at TX: RX never sees them
    plan: LinkPlan
    a: Stamp  # the paper's A
    encode_s: float
    #: The sensor shift its images went through (``tx.shift``), "none" without one.
    shift: str = "none"


class BatchBuilder:
    """Turns images into batches; ``build`` draws them from the dataset's test stream and pool."""

    def __init__(self, bundle: Bundle, dataset: Dataset | None = None, *, seed: int = 0,
                 transport: str = "zmq", shift: str = "", plugins: Mapping[str, Plugin] | None = None) -> None:
        self.bundle = bundle
        self.dataset = dataset
        self.transport = transport
        #: Applied to every image drawn by ``build`` (test and training alike) before PCA.
        self.shift = Shift(shift, seed=seed, plugins=plugins)
        self.rng = np.random.default_rng(seed)
        self.stream_pos = 0
        self._pool_warned = False

    def encode(self, images: npt.NDArray[np.float32], t: int, labels: npt.NDArray[np.int64],
               plan: LinkPlan, batch_id: int, *, test_labels: npt.NDArray[np.int64] | None = None,
               sync: dict[str, Any] | None = None, offset: dict[str, Any] | None = None) -> Batch:
        """``images`` holds the ``t`` test images, then the training images with ``labels``."""
        a = Stamp.now()  # the paper's A: PCA starts now
        coeffs: npt.NDArray[Any] = self.bundle.codec.encode(images, plan.alpha)
        if plan.value_type is wire.ValueType.INT8:
            coeffs = self.bundle.codec.quantise(coeffs)
        body = wire.build(coeffs[:t], coeffs[t:], labels, plan.value_type)
        encode_s = (monotonic_ns() - a.monotonic_ns) / NS_PER_S
        env = messages.Envelope(
            batch_id=batch_id, attempt=0, modulation=plan.modulation.value, b_max=plan.b_max,
            alpha=plan.alpha, bundle=self.bundle.hash, t_a_ns=a.realtime_ns, t=t, n=len(labels),
            value_type=int(plan.value_type), transport=str(self.transport), sync=sync, offset=offset,
        )
        if test_labels is None:
            test_labels = np.full(t, -1, dtype=np.int64)
        return Batch(env, body, test_labels, plan, a, encode_s, str(self.shift))

    def build(self, plan: LinkPlan, batch_id: int, *, sync: dict[str, Any] | None = None,
              offset: dict[str, Any] | None = None) -> Batch:
        """Draw ``t`` test images in stream order and up to ``N_max`` training images from the pool."""
        if self.dataset is None:
            raise ValueError("BatchBuilder.build needs a dataset; use encode for images of your own")
        test, pool = self.dataset.test, self.dataset.pool
        t = plan.t
        test_idx = (self.stream_pos + np.arange(t)) % len(test.y)
        self.stream_pos = (self.stream_pos + t) % len(test.y)
        n = min(plan.n_max, len(pool.y))
        if n < plan.n_max and not self._pool_warned:
            self._pool_warned = True
            log.warning("pool_short", pool=len(pool.y), n_max=plan.n_max,
                        detail=f"TX pool holds {len(pool.y)} samples; sending {n} of N_max={plan.n_max}")
        train_idx = self.rng.choice(len(pool.y), size=n, replace=False)
        images = np.concatenate([test.x[test_idx], pool.x[train_idx]])
        images = self.shift.apply_flat(images, self.dataset.image_shape)
        return self.encode(images, t, pool.y[train_idx], plan, batch_id,
                           test_labels=test.y[test_idx].astype(np.int64), sync=sync, offset=offset)
