"""The dataset registry: one :class:`DatasetSpec` per dataset (digits, MNIST, Fashion-MNIST).

A spec holds what the rest of the code needs to know about a dataset before loading it: shape,
classes, splits, checksums and pre-training defaults; ``load_dataset`` loads it. The link figures
that suit each dataset are the link layer's (``common.link.budget.DATASET_LINKS``).

Splits (fixed; ``pretrain`` fits the PCA and pre-trains the MLP, ``pool`` is TX's supply of
labelled fine-tuning samples, ``test`` is the stream TX sends):

    dataset         pretrain                 pool                       test
    digits          1074 (~60 %)             359 (~20 %)                364 (~20 %)
    mnist           train[:50000]            train[50000:60000]         t10k (10000)
    fashion-mnist   train[:50000]            train[50000:60000]         t10k (10000)

``digits`` is scikit-learn's bundled 8x8 set (1797 images, never downloaded), split by
:func:`_stratified_split`: a permutation seeded with ``DIGITS_SPLIT_SEED``, then within
each class (of c samples) the first ceil(c/5) go to test, the next ceil(2c/5) - ceil(c/5)
to pool, the rest to pretrain, so every class keeps its share in every split; each split
keeps the permutation's order (classes interleaved).

IDX files are read from ``data_dir`` gzipped (``name.gz``) or raw (``name``); when both are
present the raw file wins because it needs no decompression. A file is accepted when its
MD5 is the official ``.gz`` MD5, or the MD5 of its uncompressed content is the official
uncompressed MD5 (re-compressed copies, such as Debian's, differ only in their gzip wrapper).
The reader is ``common.data.idx``, the downloader ``common.data.download``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from common.data.idx import IDX_FILE_NAMES, Checksums, find_idx_file, read_verified
from common.errors import DatasetError

#: Seed of the digits split; changing it changes every digits experiment, so it is fixed.
DIGITS_SPLIT_SEED: Final = 20240521
#: The digits split gives 1/DIGITS_SPLIT_PARTS of each class to test, as much to pool.
DIGITS_SPLIT_PARTS: Final = 5
#: Largest value of a digits pixel (sklearn's images are 4-bit counts, 0..16).
DIGITS_MAX_PIXEL: Final = 16.0

#: MNIST-format datasets: pretrain = train[:MNIST_PRETRAIN], pool = train[MNIST_PRETRAIN:].
MNIST_PRETRAIN: Final = 50_000
MNIST_TRAIN: Final = 60_000
MNIST_TEST: Final = 10_000
MNIST_MAX_PIXEL: Final = 255.0


@dataclass(frozen=True)
class PretrainDefaults:
    """Per-dataset pre-training hyper-parameters (``common.ml.bundle.PretrainConfig`` less the seed)."""

    dims: int
    hidden: tuple[int, ...]
    epochs: int
    lr: float = 1e-3
    batch_size: int = 128


@dataclass(frozen=True)
class DatasetSpec:
    """Everything known about a dataset before it is loaded."""

    name: str
    image_shape: tuple[int, int]
    num_classes: int
    #: The fixed split, as the module docstring's table states it.
    splits: str
    pretrain: PretrainDefaults
    #: Official checksums of the IDX files, by file stem; empty for a bundled dataset.
    files: Mapping[str, Checksums] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Flattened image size, the input dimension of the codec and the MLP."""
        return self.image_shape[0] * self.image_shape[1]


DIGITS = DatasetSpec(
    name="digits",
    image_shape=(8, 8),
    num_classes=10,
    splits="stratified 1074 / 359 / 364 of scikit-learn's 1797 (pretrain / pool / test)",
    pretrain=PretrainDefaults(dims=40, hidden=(128, 64), epochs=80),
)
# The .gz MD5s are the published ones (torchvision, the Fashion-MNIST README). The
# uncompressed MD5s were computed from byte-identical official .gz files, except MNIST
# train-images whose uncompressed MD5 is the one our shared copy's README documents; the
# Fashion-MNIST ones agree with the files of Debian's dataset-fashion-mnist package.
MNIST = DatasetSpec(
    name="mnist",
    image_shape=(28, 28),
    num_classes=10,
    splits="train[:50000] / train[50000:60000] / t10k (pretrain / pool / test)",
    pretrain=PretrainDefaults(dims=200, hidden=(256, 128), epochs=15),
    files={
        "train-images-idx3-ubyte": Checksums(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"
        ),
        "train-labels-idx1-ubyte": Checksums(
            "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"
        ),
        "t10k-images-idx3-ubyte": Checksums(
            "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"
        ),
        "t10k-labels-idx1-ubyte": Checksums(
            "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"
        ),
    },
)
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    image_shape=(28, 28),
    num_classes=10,
    splits="train[:50000] / train[50000:60000] / t10k (pretrain / pool / test)",
    pretrain=PretrainDefaults(dims=200, hidden=(256, 128), epochs=20),
    files={
        "train-images-idx3-ubyte": Checksums(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"
        ),
        "train-labels-idx1-ubyte": Checksums(
            "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"
        ),
        "t10k-images-idx3-ubyte": Checksums(
            "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"
        ),
        "t10k-labels-idx1-ubyte": Checksums(
            "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"
        ),
    },
)

#: The registry, in the order choices are listed.
DATASETS: Final[Mapping[str, DatasetSpec]] = MappingProxyType(
    {spec.name: spec for spec in (DIGITS, MNIST, FASHION_MNIST)}
)
DATASET_NAMES: Final[tuple[str, ...]] = tuple(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name``; ``DatasetError`` naming the choices if there is none."""
    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    return spec


@dataclass(frozen=True)
class Split:
    """One part of a dataset.

    x : [n, d] float32, pixel values scaled to [0, 1], C-contiguous
    y : [n] int64 class labels
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise DatasetError(
                f"Split expects numpy arrays, got x: {type(x).__name__}, y: {type(y).__name__}"
            )
        if x.ndim != 2 or x.dtype != np.float32 or not x.flags.c_contiguous:
            raise DatasetError(
                "Split.x must be a C-contiguous [n, d] float32 array, got "
                f"shape {x.shape}, dtype {x.dtype}, C-contiguous={x.flags.c_contiguous}"
            )
        if y.shape != (x.shape[0],) or y.dtype != np.int64:
            raise DatasetError(
                f"Split.y must be a [{x.shape[0]}] int64 array, got shape {y.shape}, dtype {y.dtype}"
            )


@dataclass(frozen=True)
class Dataset:
    """A dataset split into the three parts the TX/RX experiment uses (see module docstring)."""

    name: str
    image_shape: tuple[int, int]
    num_classes: int
    pretrain: Split
    pool: Split
    test: Split

    def __post_init__(self) -> None:
        for part in ("pretrain", "pool", "test"):
            split: Split = getattr(self, part)
            if split.x.shape[1] != self.dim:
                raise DatasetError(
                    f"{self.name}: {part}.x has {split.x.shape[1]} features, expected "
                    f"{self.dim} for images of shape {self.image_shape}"
                )
            if split.y.size and (split.y.min() < 0 or split.y.max() >= self.num_classes):
                raise DatasetError(
                    f"{self.name}: {part}.y has labels in [{split.y.min()}, {split.y.max()}], "
                    f"expected [0, {self.num_classes - 1}]"
                )

    @property
    def dim(self) -> int:
        """Flattened image size (64 for digits, 784 for MNIST)."""
        return self.image_shape[0] * self.image_shape[1]



def load_dataset(
    name: str, data_dir: str | Path | None = None, *, download: bool = False
) -> Dataset:
    """Load ``name`` (one of ``DATASET_NAMES``) split as the module docstring describes.

    ``data_dir`` holds the four IDX files of mnist/fashion-mnist (default:
    :func:`default_data_dir`); it is ignored for digits. With ``download=True`` the files
    missing from it are fetched first. Raises ``DatasetError`` (missing or malformed files,
    unreachable mirrors) or ``ChecksumError`` (a file is not the published one).
    """
    spec = get_spec(name)
    if not spec.files:
        return _load_digits()
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(name)
    missing = [stem for stem in IDX_FILE_NAMES if find_idx_file(directory, stem) is None]
    if missing and download:
        # Imported here: the downloader (urllib, http) is only needed when files are missing.
        from common.data import download as dl

        dl.download_files(
            name, directory, missing, dl.DEFAULT_MIRRORS[name], timeout_s=dl.DEFAULT_TIMEOUT_S
        )
        missing = [stem for stem in IDX_FILE_NAMES if find_idx_file(directory, stem) is None]
    if missing:
        raise DatasetError(
            f"{name}: {missing[0]}[.gz] not found in {directory} (missing: {', '.join(missing)}). "
            f"Pass --data-dir DIR pointing at a directory holding the four IDX files "
            f"({', '.join(f'{stem}.gz' for stem in IDX_FILE_NAMES)}), "
            "or --download when online."
        )
    return _load_idx_dataset(spec, directory)


def default_data_dir(name: str) -> Path:
    """Where ``name``'s files live by default: ``$SEMALIGN_CACHE/<name>``, else
    ``$XDG_CACHE_HOME/semalign/<name>``, else ``~/.cache/semalign/<name>``."""
    get_spec(name)
    if root := os.environ.get("SEMALIGN_CACHE"):
        return Path(root).expanduser() / name
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "semalign" / name
    return Path.home() / ".cache" / "semalign" / name


# --- loading ---------------------------------------------------------------------------


def _load_digits() -> Dataset:
    # Imported here: scikit-learn is slow to import and only digits needs it.
    from sklearn.datasets import load_digits

    try:
        bunch = load_digits()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"digits: scikit-learn could not load its bundled copy: {exc}") from exc
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(DIGITS_MAX_PIXEL)
    y = np.asarray(bunch.target, dtype=np.int64)
    pretrain, pool, test = _stratified_split(y, DIGITS_SPLIT_SEED, DIGITS_SPLIT_PARTS)
    return Dataset(
        name=DIGITS.name,
        image_shape=DIGITS.image_shape,
        num_classes=DIGITS.num_classes,
        pretrain=_take(x, y, pretrain),
        pool=_take(x, y, pool),
        test=_take(x, y, test),
    )


def _stratified_split(
    y: npt.NDArray[np.int64], seed: int, parts: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Indices (pretrain, pool, test): after a seeded permutation, the first 1/parts of
    each class goes to test, the next 1/parts to pool, the rest to pretrain."""
    perm = np.random.default_rng(seed).permutation(y.shape[0])
    labels = y[perm]
    counts = np.bincount(labels)
    # Rank of each permuted sample among those of its class, without a per-item loop.
    order = np.argsort(labels, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(labels.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    # rank / count < 1/parts, in integers so no sample sits on a rounding edge.
    scaled = rank * parts
    total = counts[labels]
    test = perm[scaled < total]
    pool = perm[(scaled >= total) & (scaled < 2 * total)]
    pretrain = perm[scaled >= 2 * total]
    return pretrain, pool, test


def _take(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], idx: npt.NDArray[np.intp]) -> Split:
    return Split(x=np.ascontiguousarray(x[idx]), y=np.ascontiguousarray(y[idx]))


def _load_idx_dataset(spec: DatasetSpec, directory: Path) -> Dataset:
    name = spec.name
    arrays: dict[str, npt.NDArray[Any]] = {}
    # Smallest files first: a bad label file is reported before 47 MB of images are read.
    for stem in sorted(IDX_FILE_NAMES, key=lambda stem: "images" in stem):
        path = find_idx_file(directory, stem)
        if path is None:  # deleted between the existence check and now
            raise DatasetError(f"{name}: {stem}[.gz] disappeared from {directory}")
        arrays[stem] = read_verified(path, spec.files[stem])

    train_x = _images(arrays, "train-images-idx3-ubyte", MNIST_TRAIN, directory)
    train_y = _labels(arrays, "train-labels-idx1-ubyte", MNIST_TRAIN, directory)
    test_x = _images(arrays, "t10k-images-idx3-ubyte", MNIST_TEST, directory)
    test_y = _labels(arrays, "t10k-labels-idx1-ubyte", MNIST_TEST, directory)
    return Dataset(
        name=name,
        image_shape=spec.image_shape,
        num_classes=spec.num_classes,
        pretrain=Split(train_x[:MNIST_PRETRAIN], train_y[:MNIST_PRETRAIN]),
        pool=Split(train_x[MNIST_PRETRAIN:], train_y[MNIST_PRETRAIN:]),
        test=Split(test_x, test_y),
    )


def _images(
    arrays: dict[str, npt.NDArray[Any]], stem: str, count: int, directory: Path
) -> npt.NDArray[np.float32]:
    raw = arrays[stem]
    # The checksum already pins the content; this guards against a wrong table entry.
    if raw.shape != (count, 28, 28) or raw.dtype != np.uint8:
        raise DatasetError(
            f"{directory / stem}: expected {count}x28x28 uint8 images, "
            f"found shape {raw.shape}, dtype {raw.dtype}"
        )
    x = raw.reshape(count, -1).astype(np.float32)
    # Divide rather than multiply by 1/255: division is exactly rounded, so 255 maps to 1.0
    # and never a hair above it.
    np.divide(x, np.float32(MNIST_MAX_PIXEL), out=x)
    return x


def _labels(
    arrays: dict[str, npt.NDArray[Any]], stem: str, count: int, directory: Path
) -> npt.NDArray[np.int64]:
    raw = arrays[stem]
    if raw.shape != (count,) or raw.dtype != np.uint8 or (raw.size and raw.max() > 9):
        raise DatasetError(
            f"{directory / stem}: expected {count} uint8 labels in 0..9, "
            f"found shape {raw.shape}, dtype {raw.dtype}"
        )
    return raw.astype(np.int64)
