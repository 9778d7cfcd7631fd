"""The folded first layer: logits over coefficients agree with logits over reconstructed images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.spec import load_dataset
from common.ml.adapt import AdaptConfig, Adapter
from common.ml.bundle import Bundle
from common.ml.config import AdaptMode, AlignPolicy
from common.ml.fold import Basis, Coefficients, forward, forward_with_base
from common.ml.lora import inject_lora
from common.ml.model import load_model
from common.ml.policy import Aligner
from common.wire import payload as wire
from tx.shift import Shift

#: float32 logits of a 3-layer MLP computed in two orders of summation agree this closely.
ATOL = 1e-4


def coefficients(bundle: Bundle, alpha: int, n: int = 200, shift: str = "", seed: int = 0,
                 ) -> tuple[Coefficients, torch.Tensor, torch.Tensor]:
    """Received coefficients, the images the old path reconstructed from them (numpy), labels."""
    ds = load_dataset("digits")
    idx = np.random.default_rng(seed).choice(len(ds.pool.y), n, replace=False)
    images = Shift(shift, seed=seed).apply_flat(ds.pool.x[idx], ds.image_shape)
    z = bundle.codec.encode(images, alpha)
    return (Basis(bundle.codec).coefficients(z), torch.from_numpy(bundle.codec.decode(z)),
            torch.from_numpy(ds.pool.y[idx].astype(np.int64)))


@pytest.mark.parametrize("alpha", [1, 12, 40])
def test_folded_base_matches_the_reconstructed_images(digits_bundle: Bundle, alpha: int) -> None:
    x, images, _ = coefficients(digits_bundle, alpha)
    model = load_model(digits_bundle)
    with torch.no_grad():
        torch.testing.assert_close(forward(model, x), model(images), atol=ATOL, rtol=0)
    assert not x.reconstructed  # the fold needed no images


@pytest.mark.parametrize("merged", [False, True])
def test_folded_lora_matches_and_follows_the_adapter(digits_bundle: Bundle, merged: bool) -> None:
    x, images, _ = coefficients(digits_bundle, 30)
    model = load_model(digits_bundle)
    adapters = inject_lora(model, 4, 8.0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for a in adapters:
            a.lora_B.normal_(0, 0.05, generator=gen)  # a trained adapter, not the identity
        if merged:
            for a in adapters:
                a.merge()
        torch.testing.assert_close(forward(model, x), model(images), atol=ATOL, rtol=0)
        # Written in place (as a fit or a bank start writes it): the cached fold is made again.
        adapters[0].lora_A.mul_(2.0)
        adapters[0].base_layer.bias.add_(0.5)
        torch.testing.assert_close(forward(model, x), model(images), atol=ATOL, rtol=0)


def test_forward_with_base_shares_the_first_layer_and_matches_both_models(digits_bundle: Bundle) -> None:
    x, images, _ = coefficients(digits_bundle, 30)
    base = load_model(digits_bundle)
    model = load_model(digits_bundle)
    adapters = inject_lora(model, 4, 8.0)
    with torch.no_grad():
        for a in adapters:
            a.lora_B.normal_(0, 0.05, generator=torch.Generator().manual_seed(5))
        both = forward_with_base(model, x)
        assert both is not None
        torch.testing.assert_close(both[0], model(images), atol=ATOL, rtol=0)
        torch.testing.assert_close(both[1], base(images), atol=ATOL, rtol=0)
        assert forward_with_base(base, x) is None  # no adapters: nothing to share
        adapters[1].merge()
        assert forward_with_base(model, x) is None  # a merged layer holds no base weights apart


def test_every_value_type_gives_the_decoded_coefficients(digits_bundle: Bundle) -> None:
    codec = digits_bundle.codec
    z = codec.encode(load_dataset("digits").test.x[:50], 20)
    basis = Basis(codec)
    for values, value_type in ((z, wire.ValueType.FLOAT32), (z, wire.ValueType.FLOAT16),
                               (codec.quantise(z), wire.ValueType.INT8)):
        buf = wire.build(values, values[:0], np.zeros(0, np.int64), value_type)
        parsed = wire.parse(buf, max_alpha=codec.dims, num_classes=10)
        got = basis.coefficients(parsed.values)
        assert got.z.dtype == torch.float32 and got.z.is_contiguous()
        # The old path's images, from the same values: the same up to float rounding.
        np.testing.assert_allclose(got.images().numpy(), codec.decode(parsed.values), atol=1e-5)


def test_the_gate_reconstructs_nothing_when_it_skips(digits_bundle: Bundle) -> None:
    config = AdaptConfig(policy=AlignPolicy.AUTO)
    a = Aligner(load_model(digits_bundle), config, heldout_accuracy=digits_bundle.meta.heldout_accuracy)
    easy, _, y = coefficients(digits_bundle, digits_bundle.dims)
    stats = a.fit(easy, y, alpha=digits_bundle.dims, batch=0)
    assert stats.action == "skip" and not easy.reconstructed
    assert 0 < stats.gate_s <= stats.seconds
    shifted, _, y = coefficients(digits_bundle, 30, shift="invert", seed=1)
    stats = a.fit(shifted, y, alpha=30, batch=1)
    assert stats.action == "strong" and shifted.reconstructed  # training takes images


@pytest.mark.parametrize("policy", [AlignPolicy.AUTO, AlignPolicy.CONTINUAL])
def test_aligner_on_coefficients_decides_and_predicts_as_on_images(digits_bundle: Bundle, policy: AlignPolicy) -> None:
    """The same batches through two aligners, one fed images, one coefficients: same actions,
    same gate figures, same predictions (up to float rounding at a near tie)."""
    config = AdaptConfig(policy=policy, continual_lr=2e-3)
    on_images, on_coeffs = (Aligner(load_model(digits_bundle), config,
                                    heldout_accuracy=digits_bundle.meta.heldout_accuracy) for _ in range(2))
    test, test_images, _ = coefficients(digits_bundle, 30, n=150, shift="rotate:40", seed=99)
    for batch in range(3):
        x, images, y = coefficients(digits_bundle, 30, shift="rotate:40", seed=batch)
        a = on_images.fit(images, y, alpha=30, batch=batch, seed=batch)
        b = on_coeffs.fit(x, y, alpha=30, batch=batch, seed=batch)
        assert (a.action, a.epochs, a.samples) == (b.action, b.epochs, b.samples)
        assert a.gate == pytest.approx(b.gate, abs=1e-6) if a.gate is not None else b.gate is None
        agree = (on_images.predict(test_images) == on_coeffs.predict(test)).mean()
        assert agree >= 0.99, (batch, agree)


@pytest.mark.parametrize("mode", list(AdaptMode))
def test_adapter_takes_coefficients(digits_bundle: Bundle, mode: AdaptMode) -> None:
    config = AdaptConfig(mode=mode, policy=AlignPolicy.RESET, epochs=2, e2e_epochs=2)
    on_images, on_coeffs = Adapter(load_model(digits_bundle), config), Adapter(load_model(digits_bundle), config)
    x, images, y = coefficients(digits_bundle, 30)
    a, b = on_images.fit(images[50:], y[50:], seed=4), on_coeffs.fit(x[50:], y[50:], seed=4)
    assert (a.samples, a.epochs) == (b.samples, b.epochs)
    assert a.final_loss == pytest.approx(b.final_loss, rel=1e-4, nan_ok=True)
    agree = (on_images.predict(images[:50]) == on_coeffs.predict(x[:50])).mean()
    assert agree >= 0.98
