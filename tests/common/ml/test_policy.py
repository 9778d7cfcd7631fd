"""Alignment policies on digits: the gate, continual state, resets, and the adapter bank."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data.spec import load_dataset
from common.errors import BundleError
from common.ml.adapt import AdaptConfig
from common.ml.bank import BankStart, load_bank, parse_alphas
from common.ml.bundle import Bundle, bank_file, load_bundle
from common.ml.config import AlignPolicy
from common.ml.model import load_model
from common.ml.policy import Aligner
from common.ml.pretrain import ensure_bundle
from tx.shift import Shift

BANK = (10, 20)


@pytest.fixture(scope="module")
def bank_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bank") / "digits"
    ensure_bundle("digits", out=out, bank=BANK)
    return out


def received(bundle: Bundle, alpha: int, shift: str = "", n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits")
    idx = np.random.default_rng(seed).choice(len(ds.pool.y), n, replace=False)
    images = Shift(shift, seed=seed).apply_flat(ds.pool.x[idx], ds.image_shape)
    x = bundle.codec.decode(bundle.codec.encode(images, alpha))
    return torch.from_numpy(x), torch.from_numpy(ds.pool.y[idx])


def aligner(bundle: Bundle, policy: AlignPolicy, **kw: object) -> Aligner:
    base = load_model(bundle)
    config = AdaptConfig(policy=policy, **kw)  # type: ignore[arg-type]
    return Aligner(base, config, heldout_accuracy=bundle.meta.heldout_accuracy, bank=load_bank(bundle, base))


def test_gate_skips_an_easy_batch_and_fits_a_shifted_one(digits_bundle: Bundle) -> None:
    a = aligner(digits_bundle, AlignPolicy.AUTO)
    easy = a.fit(*received(digits_bundle, digits_bundle.dims), alpha=digits_bundle.dims, batch=0)
    assert easy.action == "skip" and easy.epochs == 0 and easy.gate is not None and easy.gate <= 0.02
    shifted = a.fit(*received(digits_bundle, 30, "invert", seed=1), alpha=30, batch=1)
    assert shifted.action == "strong" and shifted.epochs == a.config.strong_epochs
    assert shifted.gate is not None and shifted.gate > 0.5


def test_continual_improves_across_batches_and_never_trains_twice_on_a_resend(digits_bundle: Bundle) -> None:
    # digits batches are a few hundred vectors: a larger step than MNIST's default.
    a = aligner(digits_bundle, AlignPolicy.CONTINUAL, continual_lr=2e-3)
    test_x, test_y = received(digits_bundle, 30, "rotate:40", n=150, seed=99)
    accuracies = []
    for batch in range(4):
        stats = a.fit(*received(digits_bundle, 30, "rotate:40", seed=batch), alpha=30, batch=batch)
        assert stats.action in ("fit", "reset") and stats.epochs == a.config.continual_epochs
        accuracies.append(float((torch.from_numpy(a.predict(test_x).astype(np.int64)) == test_y).float().mean()))
    assert accuracies[-1] > accuracies[0] + 0.05, accuracies
    before = [p.detach().clone() for p in a.model.parameters()]
    again = a.fit(*received(digits_bundle, 30, "rotate:40", seed=3), alpha=30, batch=3)  # a resend of batch 3
    assert again.action == "duplicate" and again.epochs == 0
    assert all(torch.equal(p, q) for p, q in zip(before, a.model.parameters(), strict=True))


def test_reset_forgets_the_carried_adapter(digits_bundle: Bundle) -> None:
    a = aligner(digits_bundle, AlignPolicy.CONTINUAL)
    a.fit(*received(digits_bundle, 30, "invert"), alpha=30, batch=0)
    assert a.reset(30) == [30] and a.reset(12) == []
    x, y = received(digits_bundle, 30, seed=5)
    base = float((torch.from_numpy(load_model(digits_bundle)(x).argmax(1).numpy()) == y).float().mean())
    a.fit(x[:0], y[:0], alpha=30, batch=1)  # loads the fresh slot
    assert float((torch.from_numpy(a.predict(x).astype(np.int64)) == y).float().mean()) == pytest.approx(base)


def test_bank_bundle_loads_hashes_its_adapters_and_refuses_tampering(bank_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(bank_bundle_dir)
    assert bundle.meta.bank == BANK and bundle.meta.environment is not None
    assert all(bank_file(a) in bundle.meta.files for a in BANK)
    bank = load_bank(bundle, load_model(bundle))
    assert bank is not None and bank.alphas == BANK
    blend = bank.start(15, BankStart.BLEND)
    for d_blend, d_lo, d_hi in zip(blend, bank.deltas[10], bank.deltas[20], strict=True):
        torch.testing.assert_close(d_blend, 0.5 * d_lo + 0.5 * d_hi)
    assert bank.start(12, BankStart.NEAREST) is bank.deltas[10]
    # The bank start helps at a low alpha on clean images (what it was distilled for).
    x, y = received(bundle, 10, n=300, seed=7)
    base = aligner(bundle, AlignPolicy.CONTINUAL)
    banked = aligner(bundle, AlignPolicy.BANK)
    stats = [a.fit(x[:0], y[:0], alpha=10) for a in (base, banked)]
    # Every batch says which bank entry its adapter started from (the Prometheus gauge).
    assert stats[0].bank_entry is None and stats[1].bank_entry == 10.0
    assert bank.entry(12, BankStart.NEAREST) == 10.0 and bank.entry(15, BankStart.BLEND) == 15.0
    acc = [float((torch.from_numpy(a.predict(x).astype(np.int64)) == y).float().mean()) for a in (base, banked)]
    assert acc[1] > acc[0], acc
    # bench align's start comparison: the base and both starts, on the validation half.
    from common.bench.align import bank_starts

    (row,) = bank_starts(bundle, load_dataset("digits"), [15])
    assert row["alpha"] == 15 and all(0.0 <= row[k] <= 1.0 for k in ("none", "nearest", "blend"))
    # Tampering with one adapter byte is refused at load, on TX and RX alike.
    copy = tmp_path / "tampered"
    copy.mkdir()
    for f in bank_bundle_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    data = bytearray((copy / bank_file(10)).read_bytes())
    data[-20] ^= 0xFF
    (copy / bank_file(10)).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=bank_file(10)):
        load_bundle(copy)
    # A metadata file naming a path outside the bundle is refused too.
    meta = json.loads((bank_bundle_dir / "metadata.json").read_text())
    meta["files"]["../escape"] = "0" * 64
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="lists files"):
        load_bundle(copy)


def test_bundle_without_bank_loads_and_bank_policy_starts_from_base(digits_bundle: Bundle) -> None:
    assert digits_bundle.meta.bank == () and load_bank(digits_bundle, load_model(digits_bundle)) is None
    a = aligner(digits_bundle, AlignPolicy.BANK)
    assert a.bank is None


@pytest.mark.parametrize(("text", "ok"), [("150,100,60,40,20,10", True), ("20", True), ("0,10", False),
                                          ("a,b", False), ("", False), ("500", False)])
def test_bank_alphas_parse(text: str, ok: bool) -> None:
    if ok:
        assert parse_alphas(text, 200) == tuple(sorted({int(t) for t in text.split(",")}))
    else:
        with pytest.raises(Exception, match="bank"):
            parse_alphas(text, 200)
