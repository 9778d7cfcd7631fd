"""Low-rank adapters (LoRA) around frozen ``nn.Linear`` layers, and helpers to apply them.

``y = base(x) + (x A^T B^T) * lora_alpha / r``; A is Kaiming-initialised and B is zero, so a
fresh adapter is the identity and the frozen base is never written to by training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from common.errors import AdaptationError


class LoRALinear(nn.Module):
    """A frozen ``base_layer`` plus a trainable rank-``r`` update."""

    def __init__(self, base_layer: nn.Linear, r: int, lora_alpha: float) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {r}")
        if lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0, got {lora_alpha}")
        self.base_layer = base_layer
        for p in self.base_layer.parameters():
            p.requires_grad_(False)
        self.r = r
        self.lora_alpha = lora_alpha
        self.scaling = lora_alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.empty(base_layer.out_features, r))
        self.merged = False
        self.reset_adapter()

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @torch.no_grad()
    def reset_adapter(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise A (Kaiming uniform) and B (zero): the adapter becomes the identity."""
        if self.merged:
            raise AdaptationError("unmerge before resetting the adapter")
        bound = 1.0 / math.sqrt(self.in_features)  # kaiming_uniform_ with a=sqrt(5)
        self.lora_A.uniform_(-bound, bound, generator=generator)
        self.lora_B.zero_()

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base_layer(x)
        if self.merged:
            return out
        return out + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight; refuses (and changes nothing) if non-finite."""
        if self.merged:
            return
        delta = self.delta_weight()
        merged = self.base_layer.weight + delta
        if not torch.isfinite(merged).all():
            raise AdaptationError("LoRA merge would produce non-finite weights; base left intact")
        self.base_layer.weight.copy_(merged)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base_layer.weight.sub_(self.delta_weight())
        self.merged = False


def inject_lora(model: nn.Module, r: int, lora_alpha: float) -> list[LoRALinear]:
    """Replace every ``nn.Linear`` inside ``model`` by a ``LoRALinear`` wrapping it, in place."""
    adapters: list[LoRALinear] = []
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            wrapped = LoRALinear(child, r, lora_alpha)
            setattr(model, name, wrapped)
            adapters.append(wrapped)
        elif not isinstance(child, LoRALinear):
            adapters.extend(inject_lora(child, r, lora_alpha))
    return adapters


def lora_parameters(adapters: list[LoRALinear]) -> list[nn.Parameter]:
    return [p for a in adapters for p in (a.lora_A, a.lora_B)]
