"""The model bundle both daemons load: PCA basis, pre-trained MLP weights and metadata.

This module is torch-free, because TX imports it and TX never loads torch. It reads the
metadata and the PCA basis and checks every file, the weights included, against the
sha256 recorded in ``metadata.json``; the bundle hash, which TX and RX compare before
exchanging batches, is derived from those digests. RX turns the weights into a model with
``common.ml.model.load_model``; ``common.ml.pretrain`` builds and writes bundles.

On disk (format 1)::

    metadata.json         BundleMeta as JSON (sorted keys)
    pca_mean.npy          [D] float32
    pca_components.npy    [K, D] float32, orthonormal rows (K = dims)
    model.pt              the MLP's state_dict (torch.save; read with weights_only=True)
    pca_scale.npy         [K] float32, each coefficient's standard deviation (int8 steps; optional)
    bank_ALPHA.pt         a distilled LoRA adapter per alpha of ``bank`` (optional; RX only)

Every file listed in the metadata is hashed and verified on load, the optional ones too, so
the bundle hash covers the bank's adapters; bundles without the optional files still load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.data.spec import get_spec
from common.errors import BundleError
from common.ml.pca import PCACodec

MEAN_FILE = "pca_mean.npy"
COMPONENTS_FILE = "pca_components.npy"
WEIGHTS_FILE = "model.pt"
META_FILE = "metadata.json"
SCALE_FILE = "pca_scale.npy"
DATA_FILES = (MEAN_FILE, COMPONENTS_FILE, WEIGHTS_FILE)
FORMAT = 1


def bank_file(alpha: int) -> str:
    """The file name of the bank's adapter for ``alpha``."""
    return f"bank_{alpha:04d}.pt"


@dataclass(frozen=True)
class PretrainConfig:
    """How a bundle's PCA and MLP were built; recorded in its metadata as ``pretrain``."""

    dims: int
    hidden: tuple[int, ...]
    epochs: int
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0


def pretrain_defaults(dataset: str) -> PretrainConfig:
    """The dataset spec's pre-training defaults: enough PCA dims for every alpha the demo uses."""
    return PretrainConfig(**asdict(get_spec(dataset).pretrain))


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
    #: The alphas the bank holds a distilled adapter for (empty: no bank).
    bank: tuple[int, ...] = ()
    #: How the bank was distilled (``common.ml.bank.BankConfig``), when there is one.
    bank_config: dict[str, Any] | None = None
    #: Thread counts and library versions pre-training ran with (determinism record).
    environment: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle directory: its PCA codec and metadata (the weights stay on disk)."""

    codec: PCACodec
    meta: BundleMeta
    path: Path

    @property
    def hash(self) -> str:
        return self.meta.hash

    @property
    def dims(self) -> int:
        return self.meta.dims

    def read_file(self, name: str) -> bytes:
        """The bytes of one of the bundle's files, checked against its recorded sha256."""
        return _read_verified(self.path, name, self.meta)


def bundle_hash(files: dict[str, str], dims: int, hidden: tuple[int, ...], num_classes: int) -> str:
    text = json.dumps(
        {"files": files, "dims": dims, "hidden": list(hidden), "classes": num_classes, "format": FORMAT},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_verified(path: Path, name: str, meta: BundleMeta) -> bytes:
    """Read ``path / name`` once and check the bytes read, so what is used is what was hashed."""
    file = path / name
    if not file.is_file():
        raise BundleError(f"{path}: missing {name}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read {name} ({exc})") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.files.get(name):
        raise BundleError(f"{path}: {name} has sha256 {digest}, metadata says {meta.files.get(name)}")
    return data


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
            bank=tuple(int(a) for a in raw.get("bank", ())),
            bank_config=dict(raw["bank_config"]) if raw.get("bank_config") is not None else None,
            environment=dict(raw["environment"]) if raw.get("environment") is not None else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path}: metadata is malformed ({exc})") from exc
    if meta.format != FORMAT:
        raise BundleError(f"{path}: bundle format {meta.format}, this version reads {FORMAT}")
    allowed = {*DATA_FILES, SCALE_FILE, *(bank_file(a) for a in meta.bank)}
    if not set(DATA_FILES) <= set(meta.files) or not set(meta.files) <= allowed:
        raise BundleError(f"{path}: metadata lists files {sorted(meta.files)}; expected {sorted(DATA_FILES)} "
                          f"plus optionally {SCALE_FILE} and one bank file per bank alpha")
    if any(not 1 <= a <= meta.dims for a in meta.bank) or any(bank_file(a) not in meta.files for a in meta.bank):
        raise BundleError(f"{path}: bank alphas {list(meta.bank)} must lie in 1..{meta.dims}, each with its file")
    return meta


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle directory; raises ``BundleError`` on anything amiss.

    Every file the metadata lists is hashed, the weights and the bank's adapters too (without
    being loaded), so TX and RX both refuse a bundle whose model or adapter file was altered.
    """
    path = Path(path).expanduser()
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise BundleError(
            f"no model bundle at {path} (missing {META_FILE}); build one with "
            f"'semalign pretrain --dataset DATASET --out {path}'"
        )
    meta = _meta_from_json(meta_path.read_text(), path)
    data = {name: _read_verified(path, name, meta) for name in sorted(meta.files)}
    expected = bundle_hash(meta.files, meta.dims, meta.hidden, meta.num_classes)
    if expected != meta.hash:
        raise BundleError(f"{path}: bundle hash {meta.hash} does not match its files ({expected})")
    try:
        mean = np.load(io.BytesIO(data[MEAN_FILE]), allow_pickle=False)
        components = np.load(io.BytesIO(data[COMPONENTS_FILE]), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read the PCA basis ({exc})") from exc
    if mean.shape != (meta.input_dim,) or components.shape != (meta.dims, meta.input_dim):
        raise BundleError(
            f"{path}: PCA shapes {mean.shape}, {components.shape} disagree with metadata "
            f"(dims={meta.dims}, input_dim={meta.input_dim})"
        )
    scale = None
    if SCALE_FILE in data:
        try:
            scale = np.load(io.BytesIO(data[SCALE_FILE]), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: cannot read {SCALE_FILE} ({exc})") from exc
        if scale.shape != (meta.dims,) or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise BundleError(f"{path}: {SCALE_FILE} must hold {meta.dims} finite positive values")
        scale = scale.astype(np.float32)
    codec = PCACodec(mean.astype(np.float32), np.ascontiguousarray(components, dtype=np.float32), scale)
    return Bundle(codec, meta, path)


def default_bundle_dir(dataset: str) -> Path:
    root = os.environ.get("SEMALIGN_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "semalign"
    return base / "bundles" / dataset


def resolve_bundle(path: str | None, dataset: str) -> Bundle:
    """The bundle a daemon was configured with (``~`` expanded), or the dataset's cached one."""
    return load_bundle(Path(path).expanduser() if path else default_bundle_dir(dataset))
