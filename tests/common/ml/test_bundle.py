"""Bundles: verification without torch (TX's view), the model on top (RX's), building them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data.spec import load_dataset
from common.errors import BundleError
from common.ml.bundle import (
    COMPONENTS_FILE,
    DATA_FILES,
    MEAN_FILE,
    META_FILE,
    SCALE_FILE,
    WEIGHTS_FILE,
    Bundle,
    PretrainConfig,
    bundle_hash,
    load_bundle,
    sha256_file,
)
from common.ml.model import MLP, load_model
from common.ml.pretrain import ensure_bundle, pretrain, save_bundle


@pytest.fixture
def bundle_copy(digits_bundle_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(digits_bundle_dir, out)
    return out


def rewrite_meta(path: Path, **changes: object) -> None:
    raw = json.loads((path / META_FILE).read_text())
    raw.update(changes)
    (path / META_FILE).write_text(json.dumps(raw))


def reseal(path: Path) -> None:
    """Record the files' current digests and hash, as if the bundle had been built this way."""
    raw = json.loads((path / META_FILE).read_text())
    files = {name: sha256_file(path / name) for name in DATA_FILES}
    rewrite_meta(path, files=files, hash=bundle_hash(files, raw["dims"], tuple(raw["hidden"]), raw["num_classes"]))


def test_hash_formula_is_frozen() -> None:
    """Changing this breaks every bundle on disk and the TX/RX handshake between versions."""
    files = {WEIGHTS_FILE: "00" * 32, MEAN_FILE: "11" * 32, COMPONENTS_FILE: "22" * 32}
    assert bundle_hash(files, 40, (128, 64), 10) == "62806f18e0724c83ce84f20fd79994f90aa7b415721392ec61a8b60267593e8c"


def test_load_gives_codec_meta_hash_and_path(digits_bundle_dir: Path, digits_bundle: Bundle) -> None:
    meta = json.loads((digits_bundle_dir / META_FILE).read_text())
    assert digits_bundle.hash == meta["hash"] == digits_bundle.meta.hash
    assert digits_bundle.path == digits_bundle_dir
    assert digits_bundle.dims == digits_bundle.codec.dims == digits_bundle.meta.pretrain["dims"]
    assert digits_bundle.codec.input_dim == digits_bundle.meta.input_dim == 64
    assert set(digits_bundle.meta.files) == {*DATA_FILES, SCALE_FILE}
    assert digits_bundle.codec.scale is not None and digits_bundle.codec.scale.shape == (digits_bundle.dims,)


def test_bundle_module_never_loads_torch() -> None:
    """TX's view of a bundle: loading one must not pull torch into the process."""
    code = (
        "import sys; from common.ml.bundle import load_bundle; from common.ml.pca import PCACodec; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tampered_weights_are_refused_without_loading_them(bundle_copy: Path) -> None:
    with (bundle_copy / WEIGHTS_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=f"{WEIGHTS_FILE} has sha256"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", DATA_FILES)
def test_missing_file_is_refused(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=f"missing {name}"):
        load_bundle(bundle_copy)


def test_no_bundle_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="semalign pretrain"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"format": 2}, "bundle format 2"), ({"dims": "forty"}, "malformed"), ({"hash": "0" * 64}, "does not match")],
)
def test_bad_metadata_is_refused(bundle_copy: Path, changes: dict[str, object], message: str) -> None:
    rewrite_meta(bundle_copy, **changes)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_pca_shapes_must_agree_with_metadata(bundle_copy: Path) -> None:
    np.save(bundle_copy / MEAN_FILE, np.zeros(63, np.float32), allow_pickle=False)
    reseal(bundle_copy)
    with pytest.raises(BundleError, match="PCA shapes"):
        load_bundle(bundle_copy)


def test_load_model_gives_the_pretrained_classifier(digits_bundle: Bundle) -> None:
    model = load_model(digits_bundle)
    assert isinstance(model, MLP) and not model.training
    assert (model.input_dim, model.hidden, model.num_classes) == (64, (128, 64), 10)
    test = load_dataset("digits").test
    x = torch.from_numpy(digits_bundle.codec.decode(digits_bundle.codec.encode(test.x, digits_bundle.dims)))
    with torch.inference_mode():
        accuracy = float((model(x).argmax(dim=1).numpy() == test.y).mean())
    assert accuracy == pytest.approx(digits_bundle.meta.heldout_accuracy)


def test_load_model_rechecks_the_weights_it_reads(bundle_copy: Path) -> None:
    bundle = load_bundle(bundle_copy)
    with (bundle_copy / WEIGHTS_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=f"{WEIGHTS_FILE} has sha256"):
        load_model(bundle)


def test_weights_that_do_not_fit_the_architecture_are_refused(bundle_copy: Path) -> None:
    torch.save(MLP(64, (32,), 10).state_dict(), bundle_copy / WEIGHTS_FILE)
    reseal(bundle_copy)
    with pytest.raises(BundleError, match="do not fit the recorded architecture"):
        load_model(load_bundle(bundle_copy))


def test_weights_are_read_with_weights_only(bundle_copy: Path) -> None:
    torch.save({"net.0.weight": np.zeros(3)}, bundle_copy / WEIGHTS_FILE)  # a pickled numpy array
    reseal(bundle_copy)
    with pytest.raises(BundleError, match=f"cannot read {WEIGHTS_FILE}"):
        load_model(load_bundle(bundle_copy))


def test_saved_bundle_loads_back_with_the_same_hash_and_model(tmp_path: Path) -> None:
    ds = load_dataset("digits")
    config = PretrainConfig(dims=12, hidden=(128, 64), epochs=1)
    codec, model, accuracy = pretrain(ds, config)
    saved = save_bundle(tmp_path / "b", ds, config, codec, model, accuracy)
    loaded = load_bundle(tmp_path / "b")
    assert loaded.hash == saved.hash and loaded.meta.files == saved.meta.files and loaded.path == saved.path
    assert loaded.meta.pretrain == {"dims": 12, "hidden": [128, 64], "epochs": 1, "lr": 1e-3, "batch_size": 128, "seed": 0}
    np.testing.assert_array_equal(loaded.codec.components, codec.components)
    x = torch.from_numpy(codec.decode(codec.encode(ds.test.x[:50], 12)))
    with torch.inference_mode():
        torch.testing.assert_close(load_model(loaded)(x), model.eval()(x), rtol=0, atol=0)
    # Saving again over the same directory replaces it whole.
    again = save_bundle(tmp_path / "b", ds, config, codec, model, accuracy)
    assert again.hash == saved.hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_ensure_bundle_reuses_a_matching_bundle(digits_bundle_dir: Path, digits_bundle: Bundle) -> None:
    before = sha256_file(digits_bundle_dir / WEIGHTS_FILE)
    assert ensure_bundle("digits", out=digits_bundle_dir).hash == digits_bundle.hash
    assert sha256_file(digits_bundle_dir / WEIGHTS_FILE) == before
