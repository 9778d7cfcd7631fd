"""One adaptation interface: every mode and policy opens an ``Alignment`` the receiver drives alike."""

from __future__ import annotations

import pytest
import torch

from common.ml.adapt import AdaptConfig, Adapter
from common.ml.alignment import open_alignment
from common.ml.config import AdaptMode, AlignPolicy
from common.ml.model import MLP
from common.ml.policy import Aligner


@pytest.mark.parametrize(("mode", "policy", "kind", "name"), [
    (AdaptMode.LORA, AlignPolicy.RESET, Adapter, "reset"),
    (AdaptMode.LORA, AlignPolicy.CONTINUAL, Aligner, "continual"),
    (AdaptMode.LORA, AlignPolicy.BANK, Aligner, "bank"),
    (AdaptMode.LORA, AlignPolicy.AUTO, Aligner, "auto"),
    (AdaptMode.E2E, AlignPolicy.RESET, Adapter, "e2e"),
    (AdaptMode.NONE, AlignPolicy.RESET, Adapter, "none"),
    (AdaptMode.NONE, AlignPolicy.AUTO, Adapter, "none"),  # a policy carries LoRA adapters only
])
def test_each_mode_and_policy_is_one_alignment(mode: AdaptMode, policy: AlignPolicy, kind: type, name: str) -> None:
    torch.manual_seed(0)
    config = AdaptConfig(mode=mode, policy=policy, epochs=1, e2e_epochs=1)
    alignment = open_alignment(MLP(16, (8,), 3), config, heldout_accuracy=0.9)
    assert isinstance(alignment, kind) and alignment.policy == name
    x, y = torch.rand(12, 16), torch.randint(0, 3, (12,))
    alignment.warm_up(x, y)
    stats = alignment.fit(x[4:], y[4:], alpha=5, batch=0, seed=1)
    predictions = alignment.predict(x[:4])
    assert predictions.shape == (4,) and int(predictions.max()) < 3
    assert stats.samples in (0, 8)
    # Only a carried-over adapter has something to forget.
    assert alignment.reset() == ([5] if kind is Aligner else [])
