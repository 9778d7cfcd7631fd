"""The adapter bank: LoRA adapters distilled offline, one per alpha, and RX's start from them.

Distillation (LoRA-PETM's recipe): the teacher is the frozen base on full-``dims``
reconstructions, the student the base plus a LoRA adapter on alpha-dim reconstructions of the
same images, trained by KL divergence on the unlabelled pre-training split. RX starts an
alpha from the nearest entry, or from a blend of its two neighbours' updates.
"""

from __future__ import annotations

import copy
import io
import pickle
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import BundleError, ConfigError
from common.ml.bundle import Bundle, bank_file
from common.ml.config import BankStart as BankStart  # re-exported: the bank's callers name it here
from common.ml.lora import LoRALinear, inject_lora, lora_parameters
from common.ml.model import MLP
from common.ml.pca import PCACodec

#: One adapter: (lora_A [r, in], lora_B [out, r]) per linear layer, in layer order.
AdapterWeights = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class BankConfig:
    """How the bank's adapters are distilled; recorded in the bundle's metadata."""

    rank: int = 8
    lora_alpha: float = 16.0
    epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 256
    seed: int = 0


def parse_alphas(text: str, dims: int) -> tuple[int, ...]:
    """``"150,100,60"`` -> (60, 100, 150); ``ConfigError`` for anything but alphas in 1..dims."""
    try:
        alphas = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"bank: expected comma-separated integers, got {text!r}") from None
    if not alphas or any(not 1 <= a <= dims for a in alphas):
        raise ConfigError(f"bank: expected alphas in 1..{dims}, got {text!r}")
    return tuple(alphas)


def _reconstruct(codec: PCACodec, x: npt.NDArray[np.float32], alpha: int) -> torch.Tensor:
    return torch.from_numpy(codec.decode(codec.encode(x, alpha)))


def distill(base: MLP, codec: PCACodec, x: npt.NDArray[np.float32], alpha: int,
            config: BankConfig) -> AdapterWeights:
    """Distil the adapter for ``alpha`` from the base on ``x`` [n, D] unlabelled images."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + alpha)
    student = copy.deepcopy(base).eval()
    adapters = inject_lora(student, config.rank, config.lora_alpha)
    for a in adapters:
        a.reset_adapter(gen)
    teacher_x = _reconstruct(codec, x, codec.dims)
    student_x = _reconstruct(codec, x, alpha)
    with torch.inference_mode():
        teacher_logp = F.log_softmax(base(teacher_x), dim=1)
    teacher_logp = teacher_logp.clone()
    optimizer = torch.optim.Adam(lora_parameters(adapters), lr=config.lr)
    n = x.shape[0]
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            logp = F.log_softmax(student(student_x.index_select(0, idx)), dim=1)
            loss = F.kl_div(logp, teacher_logp.index_select(0, idx), log_target=True, reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return [(a.lora_A.detach().clone(), a.lora_B.detach().clone()) for a in adapters]


def encode_adapter(weights: AdapterWeights, config: BankConfig) -> bytes:
    """The bytes of one bank file: a dict of plain tensors (read back with ``weights_only``)."""
    state = {f"{i}.{name}": t for i, pair in enumerate(weights) for name, t in zip(("A", "B"), pair, strict=True)}
    state["scaling"] = torch.tensor(config.lora_alpha / config.rank)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class Bank:
    """The verified adapters of a bundle, by alpha, as weight updates ``delta_W`` per layer."""

    deltas: dict[int, list[torch.Tensor]]

    @property
    def alphas(self) -> tuple[int, ...]:
        return tuple(sorted(self.deltas))

    def entry(self, alpha: int, how: BankStart = BankStart.NEAREST) -> float:
        """The bank alpha ``start`` uses for ``alpha``: the nearest entry, or ``alpha`` itself when
        it is a blend of its two neighbours."""
        if how is BankStart.BLEND and any(a < alpha for a in self.alphas) and any(a > alpha for a in self.alphas):
            return float(alpha)
        return float(min(self.alphas, key=lambda a: (abs(a - alpha), -a)))

    def start(self, alpha: int, how: BankStart = BankStart.NEAREST) -> list[torch.Tensor]:
        """The update per layer RX starts ``alpha`` from (nearest entry, or neighbours' blend)."""
        alphas = self.alphas
        below = [a for a in alphas if a <= alpha]
        above = [a for a in alphas if a >= alpha]
        if how is BankStart.BLEND and below and above and below[-1] != above[0]:
            lo, hi = below[-1], above[0]
            w = (alpha - lo) / (hi - lo)
            return [(1 - w) * d_lo + w * d_hi for d_lo, d_hi in zip(self.deltas[lo], self.deltas[hi], strict=True)]
        nearest = min(alphas, key=lambda a: (abs(a - alpha), -a))
        return self.deltas[nearest]


def load_bank(bundle: Bundle, base: MLP) -> Bank | None:
    """The bundle's bank (``None`` without one); every file re-verified against its sha256."""
    if not bundle.meta.bank:
        return None
    layers = [m for m in base.modules() if isinstance(m, nn.Linear)]
    deltas: dict[int, list[torch.Tensor]] = {}
    for alpha in bundle.meta.bank:
        name = bank_file(alpha)
        data = bundle.read_file(name)
        try:
            state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
            scaling = float(state["scaling"])
            layer_deltas = []
            for i, layer in enumerate(layers):
                a, b = state[f"{i}.A"], state[f"{i}.B"]
                if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features or a.shape[0] != b.shape[1]:
                    raise BundleError(f"{bundle.path}: {name} layer {i} has shapes {tuple(a.shape)}, {tuple(b.shape)}")
                delta = (b.float() @ a.float()) * scaling
                if not torch.isfinite(delta).all():
                    raise BundleError(f"{bundle.path}: {name} holds non-finite weights")
                layer_deltas.append(delta)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as exc:
            raise BundleError(f"{bundle.path}: cannot read {name} ({exc})") from exc
        deltas[alpha] = layer_deltas
    return Bank(deltas)


def apply_start(model: nn.Module, deltas: list[torch.Tensor]) -> None:
    """Add ``deltas`` to the frozen weights of ``model``'s linear layers (LoRA-wrapped or not), in order."""
    layers = [m.base_layer if isinstance(m, LoRALinear) else m for m in model.modules()
              if isinstance(m, LoRALinear) or (isinstance(m, nn.Linear) and not _wrapped(model, m))]
    if len(layers) != len(deltas):
        raise BundleError(f"bank start has {len(deltas)} layers, the model {len(layers)}")
    with torch.no_grad():
        for layer, delta in zip(layers, deltas, strict=True):
            layer.weight.add_(delta)


def _wrapped(model: nn.Module, linear: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) and m.base_layer is linear for m in model.modules())
