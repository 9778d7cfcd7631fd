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

#: Folds (and merged later layers) kept, by layer and alpha: a working model, its start model
#: and the alphas in use; an ``e2e`` model is new each batch and falls out first.
FOLD_CACHE = 16


def _stamp(tensor: torch.Tensor) -> int | torch.Tensor:
    """What tells whether ``tensor`` was written since: its in-place version counter, or for a
    tensor that trains a copy of it (a fused optimizer step writes without counting)."""
    return tensor.detach().clone() if tensor.requires_grad else tensor._version


def _unchanged(tensor: torch.Tensor, stamp: int | torch.Tensor) -> bool:
    if isinstance(stamp, torch.Tensor):
        return tensor.requires_grad and torch.equal(tensor.detach(), stamp)
    return not tensor.requires_grad and tensor._version == stamp


@dataclass
class _Folded:
    sources: tuple[torch.Tensor, ...]  # the tensors the fold was made from (held, so ids stay theirs)
    stamps: tuple[int | torch.Tensor, ...]  # and their ``_stamp`` then
    w: torch.Tensor  # [out, alpha] (a later layer's: [out, in])
    b: torch.Tensor | None  # [out]

    def fresh(self, sources: tuple[torch.Tensor, ...]) -> bool:
        return (len(sources) == len(self.sources) and all(s is t for s, t in zip(sources, self.sources, strict=True))
                and all(_unchanged(t, st) for t, st in zip(sources, self.stamps, strict=True)))


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

    def fold(self, layer: nn.Linear | LoRALinear, alpha: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer over coefficients: weight [out, alpha] and bias [out].

        Cached per layer and alpha, and made again when any of its tensors was written since (a
        fit, a bank start, a merge: see ``_stamp``). An unmerged adapter's update
        ``scaling B A`` is folded as ``B (A C^T)`` onto the base's fold, which stays cached
        while only the adapter trains.
        """
        start = monotonic_ns()
        if isinstance(layer, LoRALinear) and not layer.merged:
            a, b_up = layer.lora_A, layer.lora_B
            sources = (*_tensors(layer.base_layer), a, b_up)
            hit = self._get((id(a), alpha), sources)
            if hit is None:
                w, b = self._fold_base(layer.base_layer, alpha)
                with torch.no_grad():
                    w = torch.addmm(w, b_up, a @ self.components[:alpha].T, alpha=layer.scaling)
                    b = torch.addmv(b, b_up, a @ self.mean, alpha=layer.scaling)
                hit = self._put((id(a), alpha), sources, w, b)
            w = hit.w
            assert hit.b is not None  # a fold always has a bias: W1 mu
            b = hit.b
        else:
            w, b = self._fold_base(layer.base_layer if isinstance(layer, LoRALinear) else layer, alpha)
        self.fold_ns += monotonic_ns() - start
        return w, b

    def weights(self, layer: nn.Linear | LoRALinear) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A later layer's weight and bias with an unmerged adapter's update merged in (cached as
        folds are): one matmul where ``LoRALinear.forward`` makes three; the layer is not written."""
        if not isinstance(layer, LoRALinear):
            return layer.weight, layer.bias
        base = layer.base_layer
        if layer.merged:
            return base.weight, base.bias
        sources = (*_tensors(base), layer.lora_A, layer.lora_B)
        hit = self._get((id(layer.lora_A), 0), sources)
        if hit is None:
            with torch.no_grad():
                w = torch.addmm(base.weight, layer.lora_B, layer.lora_A, alpha=layer.scaling)
            hit = self._put((id(layer.lora_A), 0), sources, w, base.bias)
        return hit.w, hit.b

    @torch.no_grad()
    def fold_adapter(self, layer: LoRALinear, alpha: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A first layer's adapter input over coefficients: ``A C^T`` [r, alpha] and ``A mu`` [r]
        (cached until A is written), so ``x A^T = z (A C^T)^T + A mu``."""
        start = monotonic_ns()
        a = layer.lora_A
        hit = self._get((id(a), -alpha), (a,))
        if hit is None:
            hit = self._put((id(a), -alpha), (a,), a @ self.components[:alpha].T, a @ self.mean)
        self.fold_ns += monotonic_ns() - start
        assert hit.b is not None  # made just above with A mu
        return hit.w, hit.b

    @torch.no_grad()
    def _fold_base(self, layer: nn.Linear, alpha: int) -> tuple[torch.Tensor, torch.Tensor]:
        sources = _tensors(layer)
        hit = self._get((id(layer.weight), alpha), sources)
        if hit is None:
            w = layer.weight.detach() @ self.components[:alpha].T
            b = layer.weight.detach() @ self.mean
            if layer.bias is not None:
                b += layer.bias.detach()
            hit = self._put((id(layer.weight), alpha), sources, w, b)
        assert hit.b is not None  # a fold always has a bias: W1 mu
        return hit.w, hit.b

    def _get(self, key: tuple[int, int], sources: tuple[torch.Tensor, ...]) -> _Folded | None:
        hit = self._cache.get(key)
        if hit is None or not hit.fresh(sources):
            return None
        self._cache.move_to_end(key)
        return hit

    def _put(self, key: tuple[int, int], sources: tuple[torch.Tensor, ...], w: torch.Tensor,
             b: torch.Tensor | None) -> _Folded:
        folded = self._cache[key] = _Folded(sources, tuple(_stamp(t) for t in sources), w, b)
        self._cache.move_to_end(key)
        while len(self._cache) > FOLD_CACHE:
            self._cache.popitem(last=False)
        return folded


def _tensors(layer: nn.Linear) -> tuple[torch.Tensor, ...]:
    return (layer.weight,) if layer.bias is None else (layer.weight, layer.bias)


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
    out = F.linear(x.z, w, b)
    for layer in list(net)[1:]:
        if isinstance(layer, (nn.Linear, LoRALinear)):
            weight, bias = x.basis.weights(layer)
            out = F.linear(out, weight, bias)
        else:
            out = layer(out)
    return out


def forward_with_base(model: nn.Module, x: Coefficients) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Logits of ``model`` and of its base weights alone (every adapter off) on ``x``, the two
    sharing the first layer's base product, the largest of either pass; None when ``model`` is
    not an MLP whose linear layers are all unmerged ``LoRALinear`` (then call ``forward`` twice).
    """
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Sequential):
        return None
    layers = list(net)
    linear = [m for m in layers if isinstance(m, (nn.Linear, LoRALinear))]
    if not linear or not all(isinstance(m, LoRALinear) and not m.merged for m in linear):
        return None
    first = layers[0]
    if not isinstance(first, LoRALinear):
        return None
    w, b = x.basis.fold(first.base_layer, x.alpha)
    base = F.linear(x.z, w, b)
    a_folded, a_mean = x.basis.fold_adapter(first, x.alpha)
    adapted = base + F.linear(F.linear(x.z, a_folded, a_mean), first.lora_B) * first.scaling
    for layer in layers[1:]:
        if isinstance(layer, LoRALinear):
            weight, bias = x.basis.weights(layer)
            adapted = F.linear(adapted, weight, bias)
            base = F.linear(base, layer.base_layer.weight, layer.base_layer.bias)
        else:
            adapted, base = layer(adapted), layer(base)
    return adapted, base
