"""Receiver-side adaptation to a batch's training vectors: LoRA, end-to-end, or none.

The same code serves the RX daemon and the paper benchmark, so their figures agree.
Every batch starts from the frozen pre-trained base: adapters are reset, never accumulated
(policy ``reset``; ``common.ml.policy`` carries adapters across batches).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from common.clock import monotonic_ns
from common.errors import AdaptationError
from common.ml.config import AdaptConfig as AdaptConfig  # re-exported: importers predate ml.config
from common.ml.config import AdaptMode as AdaptMode
from common.ml.fold import Inputs, as_images, forward, rows
from common.ml.lora import LoRALinear, inject_lora, lora_parameters
from common.ml.model import MLP


@dataclass(frozen=True)
class FitStats:
    seconds: float
    samples: int
    epochs: int
    final_loss: float
    #: The gate figure, ``1 - accuracy on the received vectors / held-out accuracy`` (policies only).
    gate: float | None = None
    #: What alignment did: fit, skip, strong, reset, duplicate, ... (``common.ml.policy``).
    action: str = "fit"
    #: The adapter bank entry (its alpha) this alpha's adapter started from; None: no bank.
    bank_entry: float | None = None
    #: Accuracy change of the fit on the received vectors held out of it (auto); None: no check.
    holdout_gain: float | None = None
    #: Of ``seconds``, the gate's scoring of the received vectors (policies only).
    gate_s: float = 0.0


def train_epochs(
    model: nn.Module,
    params: list[nn.Parameter],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Minibatch Adam on cross-entropy; returns the mean loss of the last epoch."""
    # The fused kernel updates every parameter in one call; the default per-tensor loop costs
    # more than the arithmetic for adapters this small (see docs/results.md).
    optimizer = torch.optim.Adam(params, lr=lr, fused=True)
    model.train()
    n = x.shape[0]
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach()) * idx.numel()
        last = total / n
    model.eval()
    return last


class _CachedFirstLayer(nn.Module):
    """A LoRA-wrapped ``Sequential`` trained on a fixed ``x``, fed row indices instead of rows.

    The first layer's frozen part, ``base_layer(x)``, does not change while only adapters
    train, so it is computed once per fit rather than once per step; it is most of the
    network's arithmetic (784 -> 256 of the MNIST MLP). The adapter term is
    ``LoRALinear.forward``'s, ``(x A^T B^T) * scaling``.
    """

    def __init__(self, net: nn.Sequential, x: torch.Tensor) -> None:
        super().__init__()
        first = net[0]
        if not isinstance(first, LoRALinear) or first.merged:
            raise AdaptationError("the cached first layer needs an unmerged LoRALinear first")
        self.first = first
        self.rest = net[1:]
        self.x = x
        with torch.no_grad():
            self.base_out = first.base_layer(x)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        first = self.first
        x = self.x.index_select(0, rows)
        h = self.base_out.index_select(0, rows) + (x @ first.lora_A.T @ first.lora_B.T) * first.scaling
        out: torch.Tensor = self.rest(h)
        return out


def lora_trainer(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """What ``train_epochs`` should train and feed: the cached-first-layer view when it applies."""
    net = getattr(model, "net", None)
    if isinstance(net, nn.Sequential) and len(net) > 1 and isinstance(net[0], LoRALinear):
        return _CachedFirstLayer(net, x), torch.arange(x.shape[0])
    return model, x


@torch.inference_mode()
def predict_classes(model: nn.Module, x: Inputs) -> npt.NDArray[np.uint8]:
    """Class indices [n] uint8 of ``model`` on ``x`` (images [n, D] or coefficients), in eval mode."""
    if rows(x) == 0:
        return np.zeros(0, dtype=np.uint8)
    model.eval()
    out: npt.NDArray[np.uint8] = forward(model, x).argmax(dim=1).to(torch.uint8).numpy()
    return out


class Adapter:
    """Holds the frozen base and adapts a working copy of it to each batch.

    An ``Alignment`` (``common.ml.alignment``) that carries nothing from batch to batch:
    ``alpha`` and ``batch`` are accepted and not needed, ``reset`` has nothing to forget.
    """

    def __init__(self, base: MLP, config: AdaptConfig) -> None:
        self.config = config
        self.base = base.eval()
        for p in self.base.parameters():
            p.requires_grad_(False)
        self._lora_model: MLP | None = None
        self._adapters: list[LoRALinear] = []
        if config.mode is AdaptMode.LORA:
            # A private copy, so neither training nor merge can ever write the base.
            self._lora_model = copy.deepcopy(self.base)
            self._adapters = inject_lora(self._lora_model, config.rank, config.lora_alpha)
        self.model: nn.Module = self.base

    @property
    def policy(self) -> str:
        """The policy's name in metrics rows: ``reset`` for LoRA, else the mode (``e2e``, ``none``)."""
        return "reset" if self.config.mode is AdaptMode.LORA else self.config.mode.value

    def reset(self, alpha: int | None = None) -> list[int]:
        """Nothing is carried across batches, so no alpha resets."""
        return []

    def warm_up(self, x: Inputs, y: torch.Tensor) -> None:
        """One fit and predict, so lazy torch initialisation is not billed to a batch (the next
        batch's fit starts from the base again)."""
        self.fit(x, y)
        self.predict(x)

    def fit(self, x: Inputs, y: torch.Tensor, *, alpha: int | None = None, batch: int | None = None,
            seed: int = 0) -> FitStats:
        """Adapt to ``x`` (images [n, D] float32 or coefficients) with labels ``y`` [n] int64, from
        the frozen base; coefficients are reconstructed here, as training needs images."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + seed)
        start = monotonic_ns()
        n = rows(x)
        if cfg.mode is AdaptMode.NONE or n == 0:
            self.model = self.base if cfg.mode is not AdaptMode.LORA else self._reset_lora(gen)
            return FitStats((monotonic_ns() - start) / 1e9, 0, 0, float("nan"))
        x = as_images(x)
        if cfg.mode is AdaptMode.LORA:
            model = self._reset_lora(gen)
            trainer, inputs = lora_trainer(model, x)
            loss = train_epochs(
                trainer, lora_parameters(self._adapters), inputs, y,
                epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, generator=gen,
            )
            epochs = cfg.epochs
        else:
            torch.manual_seed(cfg.seed * 1_000_003 + seed)
            model = MLP(self.base.input_dim, self.base.hidden, self.base.num_classes)
            loss = train_epochs(
                model, list(model.parameters()), x, y,
                epochs=cfg.e2e_epochs, lr=cfg.e2e_lr, batch_size=cfg.batch_size, generator=gen,
            )
            epochs = cfg.e2e_epochs
        self.model = model
        return FitStats((monotonic_ns() - start) / 1e9, n, epochs, loss)

    def _reset_lora(self, gen: torch.Generator) -> nn.Module:
        assert self._lora_model is not None
        for adapter in self._adapters:
            adapter.reset_adapter(gen)
        return self._lora_model

    def predict(self, x: Inputs) -> npt.NDArray[np.uint8]:
        """Class indices [n] uint8 for ``x`` (images [n, D] or coefficients) under the adapted model."""
        return predict_classes(self.model, x)
