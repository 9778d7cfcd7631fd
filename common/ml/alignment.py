"""The one interface RX adapts through (``Alignment``) and ``open_alignment``, which picks its kind.

``Adapter`` (``common.ml.adapt``) starts every batch from the frozen base: LoRA under policy
``reset``, ``e2e`` and ``none``. ``Aligner`` (``common.ml.policy``) carries one adapter per alpha
across batches: ``continual``, ``bank`` and ``auto``. The receiver never asks which it holds.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from common.ml.adapt import Adapter, FitStats
from common.ml.bank import Bank
from common.ml.config import AdaptConfig, AdaptMode, AlignPolicy
from common.ml.fold import Inputs
from common.ml.model import MLP
from common.ml.policy import Aligner


class Alignment(Protocol):
    """Fits to a batch's training vectors, then classifies its test vectors."""

    @property
    def policy(self) -> str:
        """The policy's name in metrics rows (``reset``, ``continual``, ``bank``, ``auto``, ``e2e``, ``none``)."""
        ...

    def fit(self, x: Inputs, y: torch.Tensor, *, alpha: int, batch: int | None = None,
            seed: int = 0) -> FitStats:
        """Adapt to ``x`` (images [n, D] float32, or coefficients reconstructed only if training
        needs images) with labels ``y`` [n] int64 of batch ``batch`` at ``alpha``."""
        ...

    def predict(self, x: Inputs) -> npt.NDArray[np.uint8]:
        """Class indices [n] uint8 for ``x`` (images [n, D] or coefficients) under the model the last fit left."""
        ...

    def reset(self, alpha: int | None = None) -> list[int]:
        """Forget what was carried across batches for ``alpha`` (every alpha if None); the alphas reset."""
        ...

    def warm_up(self, x: Inputs, y: torch.Tensor) -> None:
        """One throwaway fit and predict, so lazy torch initialisation is not billed to a batch."""
        ...


def carries_state(config: AdaptConfig) -> bool:
    """Whether ``config`` keeps adapters across batches (an ``Aligner``) rather than starting over."""
    return config.mode is AdaptMode.LORA and config.policy is not AlignPolicy.RESET


def open_alignment(base: MLP, config: AdaptConfig, *, heldout_accuracy: float,
                   bank: Bank | None = None) -> Alignment:
    """The alignment ``config`` asks for over the frozen ``base`` (``bank``: the bundle's adapters)."""
    if carries_state(config):
        return Aligner(base, config, heldout_accuracy=heldout_accuracy, bank=bank)
    return Adapter(base, config)
