"""The receiver's classifier, an MLP over reconstructed images, and its loading from a bundle.

This is where torch enters: RX calls ``load_model``; TX never imports this module.
"""

from __future__ import annotations

import io
import itertools
import pickle
from collections.abc import Sequence

import torch
from torch import nn

from common.errors import BundleError
from common.ml.bundle import WEIGHTS_FILE, Bundle


class MLP(nn.Module):
    """``input_dim -> hidden... -> num_classes`` with ReLU between the linear layers."""

    def __init__(self, input_dim: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        dims = [input_dim, *hidden, num_classes]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.input_dim = input_dim
        self.hidden = tuple(hidden)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def load_model(bundle: Bundle) -> MLP:
    """The bundle's pre-trained MLP, in eval mode; raises ``BundleError`` on anything amiss.

    The weights are read once and checked against their recorded sha256 before
    ``torch.load(weights_only=True)`` sees them, so the model is the one the hash names.
    """
    meta = bundle.meta
    data = bundle.read_file(WEIGHTS_FILE)
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
        raise BundleError(f"{bundle.path}: cannot read {WEIGHTS_FILE} ({exc})") from exc
    model = MLP(meta.input_dim, meta.hidden, meta.num_classes)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise BundleError(f"{bundle.path}: weights do not fit the recorded architecture ({exc})") from exc
    return model.eval()
