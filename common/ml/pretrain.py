"""Building bundles: fit PCA, pre-train the MLP end to end, write the bundle atomically.

Needs torch; the daemons never import it (they only read bundles, ``common.ml.bundle``).
Pre-training and distillation run on ``PRETRAIN_THREADS`` threads (torch and the BLAS behind
numpy) whatever the environment says, so the same command gives the same bundle on one
machine; the thread count and library versions are recorded in the metadata.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from common.data.spec import Dataset, load_dataset
from common.errors import BundleError
from common.ml.adapt import train_epochs
from common.ml.bank import BankConfig, distill, encode_adapter
from common.ml.bundle import (
    COMPONENTS_FILE,
    DATA_FILES,
    FORMAT,
    MEAN_FILE,
    META_FILE,
    SCALE_FILE,
    WEIGHTS_FILE,
    Bundle,
    BundleMeta,
    PretrainConfig,
    bank_file,
    bundle_hash,
    default_bundle_dir,
    load_bundle,
    pretrain_defaults,
    sha256_file,
)
from common.ml.model import MLP
from common.ml.pca import PCACodec, fit_pca

#: Threads of pre-training and distillation. A float sum's rounding depends on how a kernel
#: splits it across threads; fixing the count makes a bundle independent of OMP_NUM_THREADS.
PRETRAIN_THREADS = 1


@contextlib.contextmanager
def fixed_threads(threads: int = PRETRAIN_THREADS) -> Iterator[None]:
    """Run torch and numpy's BLAS on ``threads`` threads; restore torch's count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def environment() -> dict[str, Any]:
    """What a bundle's bytes depend on besides its config: thread counts, versions, CPU kernels."""
    import scipy
    import sklearn

    return {
        "threads": PRETRAIN_THREADS,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


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
    with fixed_threads():
        return _pretrain(dataset, config, on_epoch)


def _pretrain(
    dataset: Dataset, config: PretrainConfig, on_epoch: Callable[[int, float], None] | None
) -> tuple[PCACodec, MLP, float]:
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


def build_bank(dataset: Dataset, codec: PCACodec, model: MLP, alphas: tuple[int, ...],
               config: BankConfig | None = None, *,
               on_alpha: Callable[[int, int], None] | None = None) -> dict[int, bytes]:
    """Distil one adapter per alpha on the (unlabelled) pre-training split; the bank files' bytes.

    ``on_alpha(done, alpha)`` is called after each adapter (the slow part: progress).
    """
    config = config or BankConfig()
    bank: dict[int, bytes] = {}
    with fixed_threads():
        for alpha in alphas:
            bank[alpha] = encode_adapter(distill(model, codec, dataset.pretrain.x, alpha, config), config)
            if on_alpha is not None:
                on_alpha(len(bank), alpha)
    return bank


def save_bundle(
    out_dir: Path, dataset: Dataset, config: PretrainConfig, codec: PCACodec, model: MLP, accuracy: float,
    *, bank: dict[int, bytes] | None = None, bank_config: BankConfig | None = None,
) -> Bundle:
    """Write the bundle atomically: into a temporary sibling directory, then renamed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    np.save(tmp / MEAN_FILE, codec.mean, allow_pickle=False)
    np.save(tmp / COMPONENTS_FILE, codec.components, allow_pickle=False)
    # torch.save of the same tensors gives the same bytes (no timestamps in the archive).
    torch.save(model.state_dict(), tmp / WEIGHTS_FILE)
    names = list(DATA_FILES)
    if codec.scale is not None:
        np.save(tmp / SCALE_FILE, codec.scale, allow_pickle=False)
        names.append(SCALE_FILE)
    bank = bank or {}
    for alpha, data in sorted(bank.items()):
        (tmp / bank_file(alpha)).write_bytes(data)
        names.append(bank_file(alpha))
    files = {name: sha256_file(tmp / name) for name in names}
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
        bank=tuple(sorted(bank)),
        bank_config=asdict(bank_config or BankConfig()) if bank else None,
        environment=environment(),
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
    bank: tuple[int, ...] = (),
) -> Bundle:
    """Load the bundle at ``out`` (default cache dir) or build it there on first use.

    A cached bundle is rebuilt when it lacks what is asked of it: the per-component scales
    (bundles from before int8) or a bank entry in ``bank``.
    """
    target = out if out is not None else default_bundle_dir(dataset)
    if (target / META_FILE).is_file():
        bundle = load_bundle(target)
        if bundle.meta.dataset != dataset:
            # Rebuilding a cache for what it lacks is fine; replacing another dataset's bundle is not.
            raise BundleError(f"{target} holds a bundle of dataset {bundle.meta.dataset!r}, not {dataset!r}: "
                              "pick another bundle directory, or delete that one to rebuild it")
        if ((dims is None or bundle.dims == dims) and (dims is None or bundle.dims == dims)
                and bundle.codec.scale is not None and set(bank) <= set(bundle.meta.bank)):
            return bundle
    base = pretrain_defaults(dataset)  # DatasetError naming the choices for an unknown one
    config = PretrainConfig(**{**asdict(base), "dims": dims or base.dims})
    ds = load_dataset(dataset, data_dir)
    codec, model, acc = pretrain(ds, config, on_epoch=on_epoch)
    adapters = build_bank(ds, codec, model, tuple(a for a in bank if a <= config.dims)) if bank else None
    return save_bundle(target, ds, config, codec, model, acc, bank=adapters)
