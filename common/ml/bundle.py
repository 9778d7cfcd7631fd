"""The model bundle both daemons load: PCA basis, pre-trained MLP weights and metadata.

Files are checked against the sha256 recorded in ``metadata.json``; the bundle hash, which
TX and RX compare before exchanging batches, is derived from those digests.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.data.datasets import Dataset, load_dataset
from common.errors import BundleError
from common.ml.adapt import train_epochs
from common.ml.model import MLP, PCACodec, fit_pca

MEAN_FILE = "pca_mean.npy"
COMPONENTS_FILE = "pca_components.npy"
WEIGHTS_FILE = "model.pt"
META_FILE = "metadata.json"
DATA_FILES = (MEAN_FILE, COMPONENTS_FILE, WEIGHTS_FILE)
FORMAT = 1


@dataclass(frozen=True)
class PretrainConfig:
    dims: int
    hidden: tuple[int, ...]
    epochs: int
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0


#: Per-dataset defaults: enough PCA dims for every alpha the demo uses.
PRETRAIN_DEFAULTS: dict[str, PretrainConfig] = {
    "digits": PretrainConfig(dims=40, hidden=(128, 64), epochs=80),
    "mnist": PretrainConfig(dims=200, hidden=(256, 128), epochs=15),
    "fashion-mnist": PretrainConfig(dims=200, hidden=(256, 128), epochs=20),
}


@dataclass(frozen=True)
class BundleMeta:
    format: int
    dataset: str
    dims: int
    input_dim: int
    hidden: tuple[int, ...]
    num_classes: int
    heldout_accuracy: float
    pretrain: dict[str, Any]
    files: dict[str, str]
    hash: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


@dataclass(frozen=True)
class Bundle:
    codec: PCACodec
    model: MLP
    meta: BundleMeta

    @property
    def hash(self) -> str:
        return self.meta.hash

    @property
    def dims(self) -> int:
        return self.meta.dims


def bundle_hash(files: dict[str, str], dims: int, hidden: tuple[int, ...], num_classes: int) -> str:
    text = json.dumps(
        {"files": files, "dims": dims, "hidden": list(hidden), "classes": num_classes, "format": FORMAT},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pretrain(
    dataset: Dataset,
    config: PretrainConfig,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[PCACodec, MLP, float]:
    """Fit PCA, then train the MLP end to end on images reconstructed from ``dims`` components.

    Returns the codec, the trained model and its accuracy on the held-out test split
    (reconstructed from ``dims`` components, as the receiver would see it at full alpha).
    """
    torch.manual_seed(config.seed)
    codec = fit_pca(dataset.pretrain.x, config.dims, seed=config.seed)
    x = torch.from_numpy(codec.decode(codec.encode(dataset.pretrain.x, config.dims)))
    y = torch.from_numpy(dataset.pretrain.y.astype(np.int64))
    model = MLP(dataset.dim, config.hidden, dataset.num_classes)
    gen = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        loss = train_epochs(
            model, list(model.parameters()), x, y,
            epochs=1, lr=config.lr, batch_size=config.batch_size, generator=gen,
        )
        if on_epoch is not None:
            on_epoch(epoch, loss)
    test_x = torch.from_numpy(codec.decode(codec.encode(dataset.test.x, config.dims)))
    with torch.inference_mode():
        pred = model(test_x).argmax(dim=1).numpy()
    accuracy = float((pred == dataset.test.y).mean())
    return codec, model, accuracy


def save_bundle(
    out_dir: Path, dataset: Dataset, config: PretrainConfig, codec: PCACodec, model: MLP, accuracy: float
) -> Bundle:
    """Write the bundle atomically: into a temporary sibling directory, then renamed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    np.save(tmp / MEAN_FILE, codec.mean, allow_pickle=False)
    np.save(tmp / COMPONENTS_FILE, codec.components, allow_pickle=False)
    torch.save(model.state_dict(), tmp / WEIGHTS_FILE)
    files = {name: _sha256(tmp / name) for name in DATA_FILES}
    meta = BundleMeta(
        format=FORMAT,
        dataset=dataset.name,
        dims=config.dims,
        input_dim=dataset.dim,
        hidden=tuple(config.hidden),
        num_classes=dataset.num_classes,
        heldout_accuracy=accuracy,
        pretrain=asdict(config),
        files=files,
        hash=bundle_hash(files, config.dims, tuple(config.hidden), dataset.num_classes),
    )
    (tmp / META_FILE).write_text(meta.to_json())
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}-old-{os.getpid()}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(out_dir)
    return Bundle(codec, model.eval(), meta)


def _meta_from_json(text: str, path: Path) -> BundleMeta:
    try:
        raw = json.loads(text)
        meta = BundleMeta(
            format=int(raw["format"]),
            dataset=str(raw["dataset"]),
            dims=int(raw["dims"]),
            input_dim=int(raw["input_dim"]),
            hidden=tuple(int(h) for h in raw["hidden"]),
            num_classes=int(raw["num_classes"]),
            heldout_accuracy=float(raw["heldout_accuracy"]),
            pretrain=dict(raw["pretrain"]),
            files={str(k): str(v) for k, v in raw["files"].items()},
            hash=str(raw["hash"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path}: metadata is malformed ({exc})") from exc
    if meta.format != FORMAT:
        raise BundleError(f"{path}: bundle format {meta.format}, this version reads {FORMAT}")
    return meta


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle directory; raises ``BundleError`` on anything amiss."""
    path = Path(path).expanduser()
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise BundleError(
            f"no model bundle at {path} (missing {META_FILE}); build one with "
            f"'semalign pretrain --dataset DATASET --out {path}'"
        )
    meta = _meta_from_json(meta_path.read_text(), path)
    for name in DATA_FILES:
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path}: missing {name}")
        digest = _sha256(file)
        if digest != meta.files.get(name):
            raise BundleError(f"{path}: {name} has sha256 {digest}, metadata says {meta.files.get(name)}")
    expected = bundle_hash(meta.files, meta.dims, meta.hidden, meta.num_classes)
    if expected != meta.hash:
        raise BundleError(f"{path}: bundle hash {meta.hash} does not match its files ({expected})")
    try:
        mean = np.load(path / MEAN_FILE, allow_pickle=False)
        components = np.load(path / COMPONENTS_FILE, allow_pickle=False)
        state = torch.load(path / WEIGHTS_FILE, weights_only=True, map_location="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{path}: cannot read bundle files ({exc})") from exc
    if mean.shape != (meta.input_dim,) or components.shape != (meta.dims, meta.input_dim):
        raise BundleError(
            f"{path}: PCA shapes {mean.shape}, {components.shape} disagree with metadata "
            f"(dims={meta.dims}, input_dim={meta.input_dim})"
        )
    model = MLP(meta.input_dim, meta.hidden, meta.num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BundleError(f"{path}: weights do not fit the recorded architecture ({exc})") from exc
    codec = PCACodec(mean.astype(np.float32), np.ascontiguousarray(components, dtype=np.float32))
    return Bundle(codec, model.eval(), meta)


def default_bundle_dir(dataset: str) -> Path:
    root = os.environ.get("SEMALIGN_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "semalign"
    return base / "bundles" / dataset


def ensure_bundle(
    dataset: str,
    *,
    out: Path | None = None,
    data_dir: Path | None = None,
    dims: int | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> Bundle:
    """Load the bundle at ``out`` (default cache dir) or build it there on first use."""
    target = out if out is not None else default_bundle_dir(dataset)
    if (target / META_FILE).is_file():
        bundle = load_bundle(target)
        if bundle.meta.dataset == dataset and (dims is None or bundle.dims == dims):
            return bundle
    base = PRETRAIN_DEFAULTS.get(dataset)
    if base is None:
        raise BundleError(f"no pre-training defaults for dataset {dataset!r}")
    config = PretrainConfig(**{**asdict(base), "dims": dims or base.dims})
    ds = load_dataset(dataset, data_dir)
    codec, model, acc = pretrain(ds, config, on_epoch=on_epoch)
    return save_bundle(target, ds, config, codec, model, acc)
