"""Received vectors as PCA coefficients, and the classifier's first layer folded over the basis.

``W1 (z C + mu) + b1 = (W1 C^T) z + (W1 mu + b1)``: a forward pass over coefficients [n, alpha]
through the folded first layer gives the logits of the reconstructed images without
reconstructing them (784 -> alpha columns). Images are reconstructed only when asked for
(fine-tuning trains in image space), in torch float32 on the receiver's threads.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from common.clock import monotonic_ns
from common.ml.lora import LoRALinear
from common.ml.pca import PCACodec

#: Folded base weights kept, by layer and alpha: a working model, its start model and the
#: alphas in use; an ``e2e`` model is new each batch and falls out first.
FOLD_CACHE = 16


@dataclass
class _Folded:
    weight: torch.Tensor  # the layer's weight tensor the fold was made from (identity check)
    version: tuple[int, int]  # its and its bias's in-place version counters then
    w: torch.Tensor  # [out, alpha] W C^T
    b: torch.Tensor  # [out] W mu + b


class Basis:
    """The bundle's PCA basis as torch tensors; folds first layers per alpha and caches them.

    ``fold_ns`` and ``reconstruct_ns`` add up the time spent folding and reconstructing, so a
    caller can bill them per batch.
    """

    def __init__(self, codec: PCACodec) -> None:
        self.codec = codec
        self.components = torch.from_numpy(np.ascontiguousarray(codec.components, dtype=np.float32))  # [K, D]
        self.mean = torch.from_numpy(np.ascontiguousarray(codec.mean, dtype=np.float32))  # [D]
        self._cache: collections.OrderedDict[tuple[int, int], _Folded] = collections.OrderedDict()
        self.fold_ns = 0
        self.reconstruct_ns = 0

    def coefficients(self, values: npt.NDArray[np.generic]) -> Coefficients:
        """Received values [n, alpha] (float32, float16 or int8 codes) -> float32 coefficients.

        One contiguous float32 copy of the (strided, read-only) payload view; int8 codes are
        scaled by their steps as ``PCACodec.decode`` does.
        """
        alpha = int(values.shape[1])
        if not 1 <= alpha <= self.codec.dims:
            raise ValueError(f"alpha={alpha} is outside 1..{self.codec.dims}")
        if values.dtype == np.int8:
            z = np.multiply(values, self.codec.int8_step(alpha), dtype=np.float32)
        else:
            z = np.ascontiguousarray(values, dtype=np.float32)
        return Coefficients(torch.from_numpy(z), self)

    @torch.no_grad()
    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """coefficients [n, alpha] -> images [n, D] float32: ``z C[:alpha] + mu``."""
        start = monotonic_ns()
        images = torch.addmm(self.mean, z, self.components[: z.shape[1]])
        self.reconstruct_ns += monotonic_ns() - start
        return images

    @torch.no_grad()
    def fold(self, layer: nn.Linear | LoRALinear, alpha: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer over coefficients: weight [out, alpha] and bias [out].

        The frozen part is cached per layer and alpha (recomputed when its weights are written
        in place); an unmerged adapter's update ``scaling B A`` is folded on every call, as
        training moves it: ``(B A) C^T = B (A C^T)`` costs rank/out of the base's fold.
        """
        start = monotonic_ns()
        base = layer.base_layer if isinstance(layer, LoRALinear) else layer
        w, b = self._fold_base(base, alpha)
        if isinstance(layer, LoRALinear) and not layer.merged:
            basis = self.components[:alpha]
            a_folded = layer.lora_A @ basis.T  # [r, alpha]
            a_mean = layer.lora_A @ self.mean  # [r]
            w = torch.addmm(w, layer.lora_B, a_folded, alpha=layer.scaling)
            b = torch.addmv(b, layer.lora_B, a_mean, alpha=layer.scaling)
        self.fold_ns += monotonic_ns() - start
        return w, b

    def _fold_base(self, layer: nn.Linear, alpha: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias = layer.weight, layer.bias
        version = (weight._version, -1 if bias is None else bias._version)
        key = (id(weight), alpha)
        hit = self._cache.get(key)
        if hit is not None and hit.weight is weight and hit.version == version:
            self._cache.move_to_end(key)
            return hit.w, hit.b
        w = weight.detach() @ self.components[:alpha].T
        b = weight.detach() @ self.mean
        if bias is not None:
            b += bias.detach()
        self._cache[key] = _Folded(weight, version, w, b)
        while len(self._cache) > FOLD_CACHE:
            self._cache.popitem(last=False)
        return w, b


class Coefficients:
    """A batch's received vectors [n, alpha] float32 in the PCA basis; images on demand.

    Row slices share the coefficients (not the images reconstructed for another slice).
    """

    def __init__(self, z: torch.Tensor, basis: Basis) -> None:
        self.z = z
        self.basis = basis
        self._images: torch.Tensor | None = None

    @property
    def alpha(self) -> int:
        return int(self.z.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.z.shape[0]), int(self.basis.components.shape[1]))

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def __getitem__(self, rows: slice) -> Coefficients:
        if not isinstance(rows, slice):
            raise TypeError(f"Coefficients take row slices, got {type(rows).__name__}")
        part = Coefficients(self.z[rows], self.basis)
        if self._images is not None:
            part._images = self._images[rows]
        return part

    @property
    def reconstructed(self) -> bool:
        return self._images is not None

    def images(self) -> torch.Tensor:
        """The reconstructed images [n, D] float32, computed once."""
        if self._images is None:
            self._images = self.basis.reconstruct(self.z)
        return self._images


#: What a model may be fed: images [n, D] float32, or coefficients it folds its first layer over.
Inputs = torch.Tensor | Coefficients


def as_images(x: Inputs) -> torch.Tensor:
    """Images [n, D] of ``x``, reconstructed if it holds coefficients."""
    return x if isinstance(x, torch.Tensor) else x.images()


def rows(x: Inputs) -> int:
    return int(x.shape[0])


def forward(model: nn.Module, x: Inputs) -> torch.Tensor:
    """``model``'s logits on ``x``; over coefficients through its folded first layer when it has
    one (an MLP's ``net`` starting with a linear layer) and no images are at hand already."""
    if isinstance(x, torch.Tensor):
        out: torch.Tensor = model(x)
        return out
    net = getattr(model, "net", None)
    if x.reconstructed or not isinstance(net, nn.Sequential) or not isinstance(net[0], (nn.Linear, LoRALinear)):
        out = model(x.images())
        return out
    w, b = x.basis.fold(net[0], x.alpha)
    out = net[1:](F.linear(x.z, w, b))
    return out
