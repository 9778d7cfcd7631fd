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


def test_a_short_fit_is_checked_on_held_out_vectors_and_undone_when_it_hurts(
        digits_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import common.ml.policy as policy

    # Never skip, never strong: every batch gets the short, checked fit.
    a = aligner(digits_bundle, AlignPolicy.AUTO, gate_skip=0.0, gate_strong=1.0, gate_holdout=32,
                gate_patience=2, continual_lr=2e-3)
    x, y = received(digits_bundle, 30, "rotate:40", n=256, seed=0)
    kept = a.fit(x, y, alpha=30, batch=0)
    assert kept.action == "fit" and kept.samples == 256 - 32
    assert kept.holdout_gain is not None and kept.holdout_gain >= 0
    good = [p.detach().clone() for p in a.model.parameters()]

    def harmful(model: torch.nn.Module, params: list[torch.nn.Parameter], *args: object, **kw: object) -> float:
        with torch.no_grad():
            for p in params:
                p.normal_(0.0, 5.0)  # a fit gone wrong: the adapters are noise
        return 0.0

    monkeypatch.setattr(policy, "train_epochs", harmful)
    bad_x, bad_y = received(digits_bundle, 30, "rotate:40", n=256, seed=1)
    first = a.fit(bad_x, bad_y, alpha=30, batch=1)
    assert first.action == "fit_undone" and first.holdout_gain is not None and first.holdout_gain < 0
    assert all(torch.equal(p, q) for p, q in zip(good, a.model.parameters(), strict=True))
    second = a.fit(bad_x, bad_y, alpha=30, batch=2)  # same vectors: the same gate figure
    assert second.action == "fit_undone" and second.gate == first.gate
    # Two undone fits in a row: the deficit does not move, so the alpha is skipped while it stays.
    third = a.fit(bad_x, bad_y, alpha=30, batch=3)
    assert third.action == "plateau_skip" and third.epochs == 0 and third.samples == 0
    # A stronger shift raises the gate figure above the plateau: fitting resumes.
    worse = a.fit(*received(digits_bundle, 30, "invert", n=256, seed=2), alpha=30, batch=4)
    assert worse.action.startswith("fit") and worse.epochs == a.config.continual_epochs
    # A small batch is not split: nothing is held out below four times the hold-out.
    monkeypatch.undo()
    small = aligner(digits_bundle, AlignPolicy.AUTO, gate_skip=0.0, gate_strong=1.0, gate_holdout=100)
    stats = small.fit(x, y, alpha=30, batch=0)
    assert stats.action == "fit" and stats.samples == 256 and stats.holdout_gain is None


@pytest.mark.parametrize(("key", "value", "words"), [
    ("gate_skip", 0.5, "gate_skip must be in"), ("gate_holdout", -1, "gate_holdout must be >= 0"),
    ("gate_patience", -2, "gate_patience must be >= 0"), ("gate_samples", 0, "gate_samples must be >= 1"),
    ("strong_lr", 0.0, "strong_lr must be > 0"), ("bank_start", "middle", "bank_start: expected one of"),
])
def test_policy_settings_are_checked(key: str, value: object, words: str) -> None:
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        AdaptConfig(**{key: value})  # type: ignore[arg-type]


def test_a_strong_fit_that_does_not_move_the_gate_gives_way_to_the_short_budget(
        digits_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import common.ml.policy as policy

    monkeypatch.setattr(policy, "train_epochs", lambda *args, **kw: 0.0)  # fits that change nothing
    a = aligner(digits_bundle, AlignPolicy.AUTO)
    x, y = received(digits_bundle, 30, "rotate:40", n=256, seed=0)
    first = a.fit(x, y, alpha=30, batch=0)
    assert first.action == "strong" and first.gate is not None and first.gate > a.config.gate_strong
    # The next batch scores as badly as before the strong fit: the short budget from now on.
    second = a.fit(x, y, alpha=30, batch=1)
    assert second.action == "fit" and second.epochs == a.config.continual_epochs and second.gate == first.gate
    third = a.fit(x, y, alpha=30, batch=2)
    assert third.action == "fit" and third.epochs == a.config.continual_epochs
    # A shift far worse than where the strong budget stalled earns it again.
    inverted = a.fit(*received(digits_bundle, 30, "invert", n=256, seed=1), alpha=30, batch=3)
    assert inverted.gate is not None and inverted.gate > first.gate + a.config.gate_strong
    assert inverted.action == "strong" and inverted.epochs == a.config.strong_epochs
