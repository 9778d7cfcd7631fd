"""Alignment policies across batches: continual adapters per alpha, the gate, bank starts.

``Aligner`` keeps one LoRA adapter per alpha on a private copy of the frozen base. Before
fitting a batch it scores the current model on the batch's labelled training vectors (the
gate figure, ``1 - accuracy / held-out accuracy``; the vectors are new to the model, so the
figure is unbiased), resets an adapter that scores worse than its start, and, under
``auto``, skips fine-tuning, or picks a short or strong budget. ``auto`` also holds part of a
large batch out of a short fit: a fit that scores lower there is undone, and an alpha whose
fits keep being undone is skipped until its gate figure rises (its deficit is one fine-tuning
does not move, such as the information a low alpha does not carry). A strong fit is checked
by the next batch's gate figure: one that did not lower it by ``gate_skip`` gets the short
budget from then on, until the figure rises ``gate_strong`` above where it stalled.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from common.clock import monotonic_ns
from common.ml.adapt import FitStats, lora_trainer, predict_classes, train_epochs
from common.ml.bank import Bank, apply_start
from common.ml.config import AdaptConfig, AlignPolicy
from common.ml.fold import Coefficients, Inputs, as_images, forward, forward_with_base, rows
from common.ml.lora import LoRALinear, inject_lora, lora_parameters
from common.ml.model import MLP

#: Batch ids remembered per alpha, so a resent batch is never trained on twice.
SEEN_BATCHES = 256


@dataclass
class _Slot:
    """The state of one alpha: its adapter's weights and where it started."""

    start: list[torch.Tensor] | None  # weight updates from the bank, None: the plain base
    entry: float | None = None  # the bank alpha the start came from (a blend: alpha itself)
    adapter: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # None: fresh (identity)
    seen: collections.OrderedDict[int, None] = field(default_factory=collections.OrderedDict)
    undone: int = 0  # fits undone in a row by the held-out check
    plateau: float | None = None  # the gate figure at which fitting stopped helping
    strong_gate: float | None = None  # the gate figure before a strong fit, until the next batch
    strong_stalled: float | None = None  # the gate figure a strong fit did not move

    def forget(self) -> None:
        """Drop the adapter and what the gate learnt about it."""
        self.adapter, self.undone, self.plateau = None, 0, None
        self.strong_gate = self.strong_stalled = None


@dataclass(frozen=True)
class _Budget:
    """How one batch is fitted: epochs, learning rate, minibatch, vectors held out to check it."""

    epochs: int
    lr: float
    batch_size: int
    hold: int = 0


class Aligner:
    """LoRA adaptation with state carried across batches, one adapter per alpha.

    An ``Alignment`` (``common.ml.alignment``), as ``Adapter`` is.
    """

    def __init__(self, base: MLP, config: AdaptConfig, *, heldout_accuracy: float,
                 bank: Bank | None = None) -> None:
        self.config = config
        self.base = base.eval()
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.heldout = max(float(heldout_accuracy), 1e-6)
        uses_bank = config.policy in (AlignPolicy.BANK, AlignPolicy.AUTO)
        self.bank = bank if uses_bank else None
        self._base_state = copy.deepcopy(base.state_dict())
        self.model = copy.deepcopy(self.base)
        self._adapters: list[LoRALinear] = inject_lora(self.model, config.rank, config.lora_alpha)
        self._start_model = copy.deepcopy(self.base)  # start weights, no adapter: the reset reference
        self._slots: dict[int, _Slot] = {}
        self._alpha: int | None = None

    @property
    def policy(self) -> str:
        """The policy's name in metrics rows (``continual``, ``bank``, ``auto``)."""
        return self.config.policy.value

    def warm_up(self, x: Inputs, y: torch.Tensor) -> None:
        """One fit and predict on a throwaway aligner of the same shape, so lazy torch
        initialisation is not billed to a batch and no state is left behind."""
        Aligner(self.base, self.config, heldout_accuracy=1.0).fit(x, y, alpha=1)
        self.predict(x)

    @property
    def uses_gate(self) -> bool:
        return self.config.policy is AlignPolicy.AUTO

    def reset(self, alpha: int | None = None) -> list[int]:
        """Forget the adapter of ``alpha`` (every alpha if None); the alphas reset."""
        alphas = list(self._slots) if alpha is None else [a for a in self._slots if a == alpha]
        for a in alphas:
            self._slots[a].forget()
        if self._alpha in alphas:
            self._alpha = None  # reloaded at the next batch
        return alphas

    def _select(self, alpha: int, gen: torch.Generator) -> _Slot:
        """Load ``alpha``'s start and adapter into the working model."""
        slot = self._slots.get(alpha)
        if slot is None:
            if self.bank is None:
                slot = self._slots[alpha] = _Slot(None)
            else:
                slot = self._slots[alpha] = _Slot(self.bank.start(alpha, self.config.bank_start),
                                                  self.bank.entry(alpha, self.config.bank_start))
        # The working model already holds this alpha's state unless another alpha (or a reset
        # from outside) was loaded since: re-copying the weights every batch costs more than
        # the gate (about 5 ms for the MNIST MLP).
        if self._alpha != alpha:
            with torch.no_grad():
                for adapter, (name, _) in zip(self._adapters, self._linear_names(), strict=True):
                    adapter.base_layer.weight.copy_(self._base_state[f"{name}.weight"])
                self._start_model.load_state_dict(self._base_state)
            if slot.start is not None:
                apply_start(self.model, slot.start)
                apply_start(self._start_model, slot.start)
            if slot.adapter is None:
                for adapter in self._adapters:
                    adapter.reset_adapter(gen)
            else:
                self._load_adapter(slot.adapter)
            self._alpha = alpha
        return slot

    def _linear_names(self) -> list[tuple[str, nn.Linear]]:
        return [(n, m) for n, m in self.base.named_modules() if isinstance(m, nn.Linear)]

    @torch.inference_mode()
    def _accuracy(self, model: nn.Module, x: Inputs, y: torch.Tensor) -> float:
        model.eval()
        return float((forward(model, x).argmax(dim=1) == y).float().mean())

    @torch.inference_mode()
    def _gate_accuracies(self, x: Inputs, y: torch.Tensor, *, start: bool) -> tuple[float, float | None]:
        """Accuracy on ``x`` of the working model and, if ``start``, of its start (no adapter).

        Over coefficients the two passes share the first layer's base product: the start model
        holds exactly the working model's base weights (``_select`` loads both alike).
        """
        if start and isinstance(x, Coefficients) and not x.reconstructed:
            self.model.eval()
            both = forward_with_base(self.model, x)
            if both is not None:
                adapted, base = both
                return (float((adapted.argmax(dim=1) == y).float().mean()),
                        float((base.argmax(dim=1) == y).float().mean()))
        acc = self._accuracy(self.model, x, y)
        return acc, self._accuracy(self._start_model, x, y) if start else None

    def fit(self, x: Inputs, y: torch.Tensor, *, alpha: int, batch: int | None = None,
            seed: int = 0) -> FitStats:
        """Align to ``x`` (images [n, D] float32 or coefficients) with labels ``y`` [n] int64 of a
        batch at ``alpha``. The gate scores coefficients through the folded first layer;
        they are reconstructed only when a fit follows (training takes images)."""
        cfg = self.config
        start = monotonic_ns()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + seed)
        slot = self._select(alpha, gen)
        n = rows(x)
        gate_ns = 0

        def done(action: str, epochs: int = 0, loss: float = float("nan"), gate: float | None = None,
                 trained: int = 0, gain: float | None = None) -> FitStats:
            return FitStats((monotonic_ns() - start) / 1e9, trained, epochs, loss, gate=gate, action=action,
                            bank_entry=slot.entry, holdout_gain=gain, gate_s=gate_ns / 1e9)

        if batch is not None and batch in slot.seen:
            return done("duplicate")
        if n == 0:
            return done("no_samples")
        if batch is not None:
            slot.seen[batch] = None
            while len(slot.seen) > SEEN_BATCHES:
                slot.seen.popitem(last=False)
        gate_start = monotonic_ns()
        gx, gy = x[: cfg.gate_samples], y[: cfg.gate_samples]  # TX draws them at random
        acc, acc_start = self._gate_accuracies(gx, gy, start=slot.adapter is not None)
        action = "fit"
        if acc_start is not None and acc < acc_start - cfg.reset_margin:
            for adapter in self._adapters:
                adapter.reset_adapter(gen)
            slot.forget()
            acc, action = acc_start, "reset"
        gate = 1.0 - acc / self.heldout
        gate_ns = monotonic_ns() - gate_start
        action, budget = self._decide(slot, gate, n, action)
        if budget is None:
            return done(action, gate=gate)
        x = as_images(x)
        kept = n - budget.hold  # vectors the fit trains on; the rest check it
        hx, hy = x[kept:], y[kept:]
        if budget.hold:
            before, acc_before = self._adapter_state(), self._accuracy(self.model, hx, hy)
        trainer, inputs = lora_trainer(self.model, x[:kept])
        loss = train_epochs(trainer, lora_parameters(self._adapters), inputs, y[:kept],
                            epochs=budget.epochs, lr=budget.lr, batch_size=budget.batch_size, generator=gen)
        gain: float | None = None
        if budget.hold:
            gain = self._accuracy(self.model, hx, hy) - acc_before
            if gain < 0:
                self._load_adapter(before)  # the fit made the held-out vectors worse: undone
                slot.undone += 1
                if slot.undone >= cfg.gate_patience > 0:
                    slot.plateau = gate
                return done(f"{action}_undone", budget.epochs, loss, gate, kept, gain)
        slot.undone, slot.plateau = 0, None
        slot.adapter = self._adapter_state()
        return done(action, budget.epochs, loss, gate, kept, gain)

    def _decide(self, slot: _Slot, gate: float, n: int, action: str) -> tuple[str, _Budget | None]:
        """The gate's verdict on a batch of ``n`` vectors: its action and budget (None: skip)."""
        cfg = self.config
        short = _Budget(cfg.continual_epochs, cfg.continual_lr, cfg.continual_batch_size)
        if not self.uses_gate:
            return action, short
        if gate <= cfg.gate_skip:
            return ("skip" if action == "fit" else "reset_skip"), None
        if slot.plateau is not None and gate <= slot.plateau + cfg.gate_skip:
            return "plateau_skip", None
        if slot.strong_gate is not None:
            # The last batch got the strong budget: this batch's gate figure is its check.
            if gate > slot.strong_gate - cfg.gate_skip:
                slot.strong_stalled = gate
            slot.strong_gate = None
        if slot.strong_stalled is not None and gate > slot.strong_stalled + cfg.gate_strong:
            slot.strong_stalled = None  # far worse than where it stalled: a new shift
        if gate > cfg.gate_strong and slot.strong_stalled is None:
            slot.strong_gate = gate
            return ("strong" if action == "fit" else "reset_strong"), _Budget(
                cfg.strong_epochs, cfg.strong_lr, cfg.batch_size)
        if cfg.gate_holdout and n >= 4 * cfg.gate_holdout:
            # A short fit is checked on vectors it did not see (TX draws them at random: the last
            # ones will do); a strong fit needs every vector and is checked by the next batch's gate.
            return action, replace(short, hold=cfg.gate_holdout)
        return action, short

    def _adapter_state(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(a.lora_A.detach().clone(), a.lora_B.detach().clone()) for a in self._adapters]

    def _load_adapter(self, state: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.no_grad():
            for adapter, (a, b) in zip(self._adapters, state, strict=True):
                adapter.lora_A.copy_(a)
                adapter.lora_B.copy_(b)

    def predict(self, x: Inputs) -> npt.NDArray[np.uint8]:
        """Class indices [n] uint8 for ``x`` (images [n, D] or coefficients) under the current alpha's model."""
        return predict_classes(self.model, x)
