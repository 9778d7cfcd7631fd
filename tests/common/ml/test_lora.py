"""LoRA adapters: identity when fresh, merge == unmerged, base untouched by fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch

from common.errors import AdaptationError
from common.ml.adapt import AdaptConfig, Adapter, AdaptMode
from common.ml.lora import LoRALinear, inject_lora
from common.ml.model import MLP


def tiny_mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(12, (16, 8), 4)


def _randomise_b(adapters: list[LoRALinear], seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in adapters:
            a.lora_B.copy_(torch.randn(a.lora_B.shape, generator=gen))


def test_fresh_adapter_is_identity() -> None:
    base = tiny_mlp()
    wrapped = copy.deepcopy(base)
    adapters = inject_lora(wrapped, r=4, lora_alpha=8)
    assert len(adapters) == 3
    x = torch.randn(32, 12)
    torch.testing.assert_close(wrapped(x), base(x), rtol=0, atol=0)


@pytest.mark.parametrize(("r", "lora_alpha"), [(1, 1.0), (4, 8.0), (8, 32.0)])
def test_merge_equals_unmerged_and_unmerge_restores(r: int, lora_alpha: float) -> None:
    model = tiny_mlp()
    adapters = inject_lora(model, r=r, lora_alpha=lora_alpha)
    _randomise_b(adapters)
    assert adapters[0].scaling == lora_alpha / r
    x = torch.randn(16, 12)
    before = [a.base_layer.weight.clone() for a in adapters]
    unmerged = model(x)
    for a in adapters:
        a.merge()
        a.merge()  # idempotent
    torch.testing.assert_close(model(x), unmerged, rtol=1e-5, atol=1e-5)
    for a in adapters:
        a.unmerge()
        a.unmerge()
    torch.testing.assert_close(model(x), unmerged, rtol=1e-5, atol=1e-5)
    for a, w in zip(adapters, before, strict=True):
        torch.testing.assert_close(a.base_layer.weight, w, rtol=1e-6, atol=1e-6)


def test_merge_refuses_non_finite_and_leaves_base_intact() -> None:
    layer = LoRALinear(torch.nn.Linear(3, 2), r=2, lora_alpha=2)
    weight = layer.base_layer.weight.clone()
    with torch.no_grad():
        layer.lora_B.fill_(float("inf"))
    with pytest.raises(AdaptationError, match="non-finite"):
        layer.merge()
    assert not layer.merged
    torch.testing.assert_close(layer.base_layer.weight, weight)


def test_only_adapter_parameters_train() -> None:
    model = tiny_mlp()
    inject_lora(model, r=2, lora_alpha=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def _toy_task(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=gen)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return x, y


@pytest.mark.parametrize("mode", list(AdaptMode))
def test_base_weights_unchanged_after_fine_tuning(mode: AdaptMode) -> None:
    base = tiny_mlp()
    snapshot = {k: v.clone() for k, v in base.state_dict().items()}
    adapter = Adapter(base, AdaptConfig(mode=mode, epochs=5, e2e_epochs=5))
    x, y = _toy_task()
    for seed in range(2):
        adapter.fit(x, y, seed=seed)
        adapter.predict(x)
    for k, v in base.state_dict().items():
        torch.testing.assert_close(v, snapshot[k], rtol=0, atol=0)


def test_lora_fit_improves_accuracy_and_restarts_from_base() -> None:
    base = tiny_mlp()
    x, y = _toy_task()
    adapter = Adapter(base, AdaptConfig(mode=AdaptMode.LORA, epochs=40, lr=1e-2, rank=4))
    before = float((torch.from_numpy(adapter.predict(x)).long() == y).float().mean())
    stats = adapter.fit(x, y, seed=0)
    after = float((torch.from_numpy(adapter.predict(x)).long() == y).float().mean())
    assert stats.samples == 256 and stats.epochs == 40 and stats.seconds > 0
    assert after > before + 0.2
    # An empty batch resets to the base: predictions equal the base model's again.
    adapter.fit(x[:0], y[:0])
    torch.testing.assert_close(torch.from_numpy(adapter.predict(x)).long(), base(x).argmax(1))


def test_fit_is_deterministic_per_seed() -> None:
    x, y = _toy_task()
    a = Adapter(tiny_mlp(), AdaptConfig(epochs=3))
    a.fit(x, y, seed=5)
    first = a.predict(x)
    a.fit(x, y, seed=5)
    assert (a.predict(x) == first).all()
