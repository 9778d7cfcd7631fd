"""Configuration of per-batch adaptation: a plain dataclass and its mode, no torch.

``common.ml.adapt`` re-exports both; importing this module alone keeps config loading and
``semalign --help`` free of torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from common.config import as_enum
from common.errors import ConfigError


class AdaptMode(enum.Enum):
    LORA = "lora"
    E2E = "e2e"
    NONE = "none"

    @classmethod
    def parse(cls, text: str | AdaptMode) -> AdaptMode:
        """A member from its name (any case); ``ConfigError`` naming the choices otherwise."""
        return as_enum(cls, "adapt.mode", text)


class AlignPolicy(enum.Enum):
    """How LoRA adaptation carries over from batch to batch (``adapt.policy``)."""

    #: Every batch starts over from the frozen base (the paper's procedure).
    RESET = "reset"
    #: One adapter per alpha kept across batches, a short budget per batch, reset when worse than the base.
    CONTINUAL = "continual"
    #: Start each alpha from the bundle's distilled adapter, then as continual.
    BANK = "bank"
    #: Bank start, the gate (skip, short or strong budget by the received vectors' accuracy), continual.
    AUTO = "auto"

    @classmethod
    def parse(cls, text: str | AlignPolicy) -> AlignPolicy:
        """A member from its name (any case); ``ConfigError`` naming the choices otherwise."""
        return as_enum(cls, "adapt.policy", text)


class BankStart(enum.Enum):
    """How RX picks a start for an alpha the bank has no exact entry for (``adapt.bank_start``)."""

    #: The entry with the nearest alpha.
    NEAREST = "nearest"
    #: The two neighbouring entries' updates, interpolated linearly in alpha.
    BLEND = "blend"

    @classmethod
    def parse(cls, text: str | BankStart) -> BankStart:
        """A member from its name (any case); ``ConfigError`` naming the choices otherwise."""
        return as_enum(cls, "adapt.bank_start", text)


#: Lower bounds of the integer settings, and the settings that must be positive.
_AT_LEAST = {"rank": 1, "epochs": 1, "batch_size": 1, "e2e_epochs": 1, "continual_epochs": 1,
             "continual_batch_size": 1, "strong_epochs": 1, "gate_samples": 1, "gate_holdout": 0,
             "gate_patience": 0}
_POSITIVE = ("lora_alpha", "lr", "e2e_lr", "continual_lr", "strong_lr")


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
    #: reset: from the base every batch; continual; bank; auto (bank + gate + continual).
    policy: AlignPolicy = AlignPolicy.AUTO
    # The budgets and gate thresholds below were chosen on validation data (docs/results.md).
    #: Epochs per batch when an adapter is carried over (continual, bank, auto's short budget).
    continual_epochs: int = 1
    #: Adam learning rate of the short budget.
    continual_lr: float = 1e-3
    #: Minibatch size of the short budget (the strong budget uses ``batch_size``): half the
    #: optimiser steps of 64, the same accuracy on validation (docs/results.md).
    continual_batch_size: int = 128
    #: Epochs of auto's strong budget, for a batch the current model gets badly wrong.
    strong_epochs: int = 8
    #: Adam learning rate of the strong budget.
    strong_lr: float = 2e-3
    #: auto skips fine-tuning when 1 - acc(received) / held-out accuracy is at most this.
    gate_skip: float = 0.02
    #: auto uses the strong budget when that deficit exceeds this.
    gate_strong: float = 0.10
    #: Received training vectors the gate scores (the first ones; all if fewer).
    gate_samples: int = 512
    #: A carried-over adapter is reset when it scores this much below its start on a batch.
    reset_margin: float = 0.03
    #: auto holds this many received vectors (the last ones) out of each short fit, when at
    #: least four times as many arrive, and undoes a fit that scores lower on them; 0: no
    #: hold-out. Off by default: on validation (5 seeds) 256 cut C at alpha 10 from 120 to
    #: 15 ms for +0.2 points but cost 0.15-0.6 points under rotation, inversion, noise and
    #: scale (docs/results.md).
    gate_holdout: int = 0
    #: After this many undone fits in a row, auto skips an alpha until its gate figure rises
    #: ``gate_skip`` above where fitting stopped helping (a deficit fine-tuning does not move).
    gate_patience: int = 2
    #: Start of an alpha the bank has no entry for: nearest entry, or blend of the two neighbours.
    bank_start: BankStart = BankStart.NEAREST

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", AlignPolicy.parse(self.policy))
        object.__setattr__(self, "mode", AdaptMode.parse(self.mode))
        object.__setattr__(self, "bank_start", BankStart.parse(self.bank_start))
        if not 0 <= self.gate_skip <= self.gate_strong:
            raise ConfigError(f"adapt.gate_skip must be in [0, gate_strong], got {self.gate_skip}")
        for name, least in _AT_LEAST.items():
            if getattr(self, name) < least:
                raise ConfigError(f"adapt.{name} must be >= {least}, got {getattr(self, name)}")
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise ConfigError(f"adapt.{name} must be > 0, got {getattr(self, name)}")
