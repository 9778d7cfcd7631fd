"""Configuration of per-batch adaptation: a plain dataclass and its mode, no torch.

``common.ml.adapt`` re-exports both; importing this module alone keeps config loading and
``semalign --help`` free of torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from common.errors import ConfigError


class AdaptMode(enum.Enum):
    LORA = "lora"
    E2E = "e2e"
    NONE = "none"

    @classmethod
    def parse(cls, text: str | AdaptMode) -> AdaptMode:
        if isinstance(text, AdaptMode):
            return text
        try:
            return cls(str(text).lower())
        except ValueError:
            raise ConfigError(
                f"unknown adaptation mode {text!r}: expected one of lora, e2e, none"
            ) from None


@dataclass(frozen=True)
class AdaptConfig:
    """Hyper-parameters of per-batch adaptation (the ``adapt`` section of rx.yaml)."""

    #: lora: fine-tune adapters on the frozen base; e2e: retrain a fresh MLP; none: base only.
    mode: AdaptMode = AdaptMode.LORA
    #: LoRA rank r of each adapter.
    rank: int = 8
    #: LoRA alpha; the adapter's output is scaled by lora_alpha / rank.
    lora_alpha: float = 16.0
    # Tuned on a validation half of the MNIST pool (docs/results.md): the pre-trained base is
    # already accurate, and larger steps over-fit the few hundred received samples.
    #: LoRA epochs per batch.
    epochs: int = 5
    #: Adam learning rate of the adapters.
    lr: float = 2e-4
    #: Minibatch size of both LoRA and end-to-end training.
    batch_size: int = 64
    # End-to-end retraining starts from random weights, so it gets its own budget.
    #: Epochs of end-to-end retraining per batch.
    e2e_epochs: int = 30
    #: Adam learning rate of end-to-end retraining.
    e2e_lr: float = 3e-3
    #: Seed of adapter initialisation and minibatch order (mixed with the batch id).
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rank", "epochs", "batch_size", "e2e_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"adapt.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lora_alpha", "lr", "e2e_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"adapt.{name} must be > 0, got {getattr(self, name)}")
