"""Building bundles: fit PCA, pre-train the MLP end to end, write the bundle atomically.

Needs torch; the daemons never import it (they only read bundles, ``common.ml.bundle``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from common.data.spec import Dataset, load_dataset
from common.errors import BundleError
from common.ml.adapt import train_epochs
from common.ml.bundle import (
    COMPONENTS_FILE,
    DATA_FILES,
    FORMAT,
    MEAN_FILE,
    META_FILE,
    PRETRAIN_DEFAULTS,
    WEIGHTS_FILE,
    Bundle,
    BundleMeta,
    PretrainConfig,
    bundle_hash,
    default_bundle_dir,
    load_bundle,
    sha256_file,
)
from common.ml.model import MLP
from common.ml.pca import PCACodec, fit_pca


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
    files = {name: sha256_file(tmp / name) for name in DATA_FILES}
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
    return Bundle(codec, meta, out_dir)


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
