"""Datasets for pre-training, fine-tuning and the test stream: digits, MNIST and Fashion-MNIST.

Reads untrusted IDX files strictly, verifies them against the published MD5s, and downloads them.

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
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import math
import os
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from common.errors import ChecksumError, DatasetError

DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")

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

#: Default bound on an IDX file's uncompressed size. The largest file we read (60000
#: 28x28 images) is 47,040,016 bytes; anything far beyond that is not a file we know.
DEFAULT_MAX_IDX_BYTES: Final = 64 * 1024 * 1024

# IDX format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): two zero bytes,
# a type code, the number of dimensions, then one big-endian u32 per dimension, then the
# values, big-endian, in C order.
IDX_MAGIC = struct.Struct(">2sBB")  # zeros, type code, ndim
IDX_MAGIC_SIZE = IDX_MAGIC.size
IDX_DIM = struct.Struct(">I")
IDX_ZEROS = b"\x00\x00"
IDX_TYPES: Final[dict[int, np.dtype[Any]]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
#: More dimensions than any real IDX file has; bounds the header read.
IDX_MAX_NDIM: Final = 8

GZIP_MAGIC = b"\x1f\x8b"

#: Unit of streamed reads, hashing and downloads: big enough to amortise call overhead,
#: small enough that a hostile stream costs little memory beyond the declared array.
CHUNK_BYTES: Final = 1 << 20

#: Per socket operation (connect, each read) of a download, not per file: a slow but live
#: mirror may take longer overall, a dead one is abandoned after this long.
DEFAULT_TIMEOUT_S: Final = 30.0

#: Sent with downloads; some mirrors refuse urllib's default agent.
USER_AGENT: Final = "semalign-datasets/0.1 (+urllib)"

IDX_FILE_NAMES: Final = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: Mirrors tried in order by :func:`download_dataset` when none are given. A test may
#: monkeypatch an entry to point ``load_dataset(download=True)`` at a local server.
DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}


@dataclass(frozen=True)
class _Checksums:
    """Official MD5s of one IDX file: of the published ``.gz`` and of its content."""

    gz_md5: str
    raw_md5: str


# The .gz MD5s are the published ones (torchvision, the Fashion-MNIST README). The
# uncompressed MD5s were computed from byte-identical official .gz files, except MNIST
# train-images whose uncompressed MD5 is the one our shared copy's README documents; the
# Fashion-MNIST ones agree with the files of Debian's dataset-fashion-mnist package.
_CHECKSUMS: Final[dict[str, dict[str, _Checksums]]] = {
    "mnist": {
        "train-images-idx3-ubyte": _Checksums(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"
        ),
        "train-labels-idx1-ubyte": _Checksums(
            "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"
        ),
        "t10k-images-idx3-ubyte": _Checksums(
            "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"
        ),
        "t10k-labels-idx1-ubyte": _Checksums(
            "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": _Checksums(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"
        ),
        "train-labels-idx1-ubyte": _Checksums(
            "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"
        ),
        "t10k-images-idx3-ubyte": _Checksums(
            "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"
        ),
        "t10k-labels-idx1-ubyte": _Checksums(
            "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"
        ),
    },
}


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
    _check_name(name)
    if name == "digits":
        return _load_digits()
    directory = Path(data_dir) if data_dir is not None else default_data_dir(name)
    missing = [stem for stem in IDX_FILE_NAMES if _find_idx_file(directory, stem) is None]
    if missing and download:
        _download_files(
            name, directory, missing, DEFAULT_MIRRORS[name], timeout_s=DEFAULT_TIMEOUT_S
        )
        missing = [stem for stem in IDX_FILE_NAMES if _find_idx_file(directory, stem) is None]
    if missing:
        raise DatasetError(
            f"{name}: {missing[0]}[.gz] not found in {directory} (missing: {', '.join(missing)}). "
            f"Pass --data-dir DIR pointing at a directory holding the four IDX files "
            f"({', '.join(f'{stem}.gz' for stem in IDX_FILE_NAMES)}), "
            "or --download when online."
        )
    return _load_idx_dataset(name, directory)


def default_data_dir(name: str) -> Path:
    """Where ``name``'s files live by default: ``$SEMALIGN_CACHE/<name>``, else
    ``$XDG_CACHE_HOME/semalign/<name>``, else ``~/.cache/semalign/<name>``."""
    _check_name(name)
    if root := os.environ.get("SEMALIGN_CACHE"):
        return Path(root).expanduser() / name
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "semalign" / name
    return Path.home() / ".cache" / "semalign" / name


def read_idx(path: str | Path, *, max_bytes: int = DEFAULT_MAX_IDX_BYTES) -> npt.NDArray[Any]:
    """Read one IDX file, gzipped or raw (detected from its first bytes), into a native-endian
    array of the declared shape and type.

    The file is untrusted: the header is validated and the declared size (header included)
    is checked against ``max_bytes`` before anything is allocated; decompression reads at
    most that much, so a gzip bomb costs one chunk. Any mismatch raises ``DatasetError``.
    """
    return _read_idx_hashed(Path(path), max_bytes).array


def download_dataset(
    name: str,
    dest: str | Path,
    *,
    mirrors: Sequence[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Fetch ``name``'s four IDX files into ``dest`` and return ``dest``.

    Files already in ``dest`` (raw or gzipped) are left alone; :func:`load_dataset` verifies
    them. Each missing file is tried on every mirror in turn (``timeout_s`` bounds each socket
    operation), streamed to a temporary file in ``dest`` and renamed into place only once
    its checksum passes. Raises ``DatasetError`` when no mirror delivers, ``ChecksumError``
    when a mirror delivered but the file was not the published one.
    """
    _check_name(name)
    if name == "digits":
        raise DatasetError("digits is bundled with scikit-learn; there is nothing to download")
    chosen = tuple(mirrors) if mirrors is not None else DEFAULT_MIRRORS[name]
    if not chosen:
        raise DatasetError(f"{name}: no mirrors to download from; pass at least one URL")
    directory = Path(dest)
    missing = [stem for stem in IDX_FILE_NAMES if _find_idx_file(directory, stem) is None]
    _download_files(name, directory, missing, chosen, timeout_s=timeout_s)
    return directory


# --- loading ---------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


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
        name="digits",
        image_shape=(8, 8),
        num_classes=10,
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


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dataset(name: str, directory: Path) -> Dataset:
    arrays: dict[str, npt.NDArray[Any]] = {}
    # Smallest files first: a bad label file is reported before 47 MB of images are read.
    for stem in sorted(IDX_FILE_NAMES, key=lambda stem: "images" in stem):
        path = _find_idx_file(directory, stem)
        if path is None:  # deleted between the existence check and now
            raise DatasetError(f"{name}: {stem}[.gz] disappeared from {directory}")
        arrays[stem] = _read_verified(path, _CHECKSUMS[name][stem])

    train_x = _images(arrays, "train-images-idx3-ubyte", MNIST_TRAIN, directory)
    train_y = _labels(arrays, "train-labels-idx1-ubyte", MNIST_TRAIN, directory)
    test_x = _images(arrays, "t10k-images-idx3-ubyte", MNIST_TEST, directory)
    test_y = _labels(arrays, "t10k-labels-idx1-ubyte", MNIST_TEST, directory)
    return Dataset(
        name=name,
        image_shape=(28, 28),
        num_classes=10,
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


def _read_verified(path: Path, sums: _Checksums) -> npt.NDArray[Any]:
    """Read an IDX file and check it against its official checksums in the same pass."""
    try:
        result = _read_idx_hashed(path, DEFAULT_MAX_IDX_BYTES)
    except DatasetError as exc:
        # A tampered official file usually breaks the gzip stream or the header before it
        # can be hashed; "not the published file" is the truer diagnosis, so say that.
        found = _md5_file(path)
        if found in (sums.gz_md5, sums.raw_md5):
            raise
        raise ChecksumError(
            f"{path}: md5 {found} matches neither the official .gz md5 {sums.gz_md5} nor the "
            f"official uncompressed md5 {sums.raw_md5}, and the file does not parse ({exc})"
        ) from exc
    if sums.gz_md5 != result.file_md5 and sums.raw_md5 not in (result.file_md5, result.content_md5):
        raise ChecksumError(
            f"{path}: checksum mismatch: expected md5 {sums.gz_md5} (official .gz) or "
            f"{sums.raw_md5} (official uncompressed content), found {result.file_md5} (file)"
            + (
                f" and {result.content_md5} (uncompressed content)"
                if result.content_md5 != result.file_md5
                else ""
            )
        )
    return result.array


# --- IDX reading -----------------------------------------------------------------------


@dataclass(frozen=True)
class _IdxRead:
    array: npt.NDArray[Any]
    file_md5: str  # of the bytes on disk
    content_md5: str  # of the uncompressed IDX bytes (== file_md5 for a raw file)


class _HashingReader:
    """A read-only file wrapper that hashes every byte read through it, so the gzip layer
    and the checksum share one pass over the compressed file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.md5 = hashlib.md5(usedforsecurity=False)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.md5.update(data)
        return data

    def seek(self, offset: int, /) -> int:
        # gzip only seeks to rewind, which a single forward pass never does; refusing keeps
        # the digest honest.
        raise io.UnsupportedOperation("a hashing reader only reads forward")

    def drain(self) -> None:
        while self.read(CHUNK_BYTES):
            pass


def _read_idx_hashed(path: Path, max_bytes: int) -> _IdxRead:
    try:
        with path.open("rb") as raw:
            on_disk = os.fstat(raw.fileno()).st_size
            if on_disk > max_bytes:
                raise DatasetError(
                    f"{path}: file is {on_disk} bytes on disk, more than max_bytes={max_bytes}"
                )
            is_gzip = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
            raw.seek(0)
            if is_gzip:
                hashing = _HashingReader(raw)
                with gzip.GzipFile(fileobj=hashing, mode="rb") as stream:
                    array, content_md5 = _parse_idx(path, stream, max_bytes)
                # The gzip layer stops at the end of the stream; hash whatever follows.
                hashing.drain()
                return _IdxRead(array, hashing.md5.hexdigest(), content_md5)
            # Uncompressed, the parser's digest covers every byte (it rejects trailing data).
            array, content_md5 = _parse_idx(path, raw, max_bytes)
            return _IdxRead(array, content_md5, content_md5)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a valid gzip stream: {exc}") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc


class _Readable(Protocol):
    """What :func:`_parse_idx` needs from a stream (a file or a GzipFile)."""

    def read(self, size: int = -1, /) -> bytes: ...


def _read_exact(stream: _Readable, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at end of stream (gzip returns short reads)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        data = stream.read(min(remaining, CHUNK_BYTES))
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def _parse_idx(path: Path, stream: _Readable, max_bytes: int) -> tuple[npt.NDArray[Any], str]:
    """Parse an IDX stream; returns the array and the MD5 of the bytes it consumed."""
    digest = hashlib.md5(usedforsecurity=False)
    head = _read_exact(stream, IDX_MAGIC_SIZE)
    if len(head) < IDX_MAGIC_SIZE:
        raise DatasetError(
            f"{path}: truncated IDX header: expected {IDX_MAGIC_SIZE} bytes, found {len(head)}"
        )
    zeros, code, ndim = IDX_MAGIC.unpack(head)
    if zeros != IDX_ZEROS:
        raise DatasetError(
            f"{path}: bad IDX magic: expected first bytes 00 00, found {zeros.hex(' ')} "
            "(not an IDX file)"
        )
    dtype = IDX_TYPES.get(code)
    if dtype is None:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise DatasetError(
            f"{path}: bad IDX dtype code: expected one of {known}, found 0x{code:02X}"
        )
    if not 1 <= ndim <= IDX_MAX_NDIM:
        raise DatasetError(
            f"{path}: bad IDX number of dimensions: expected 1..{IDX_MAX_NDIM}, found {ndim}"
        )
    dims_raw = _read_exact(stream, ndim * IDX_DIM.size)
    if len(dims_raw) < ndim * IDX_DIM.size:
        raise DatasetError(
            f"{path}: truncated IDX header: expected {ndim} dimension sizes "
            f"({ndim * IDX_DIM.size} bytes), found {len(dims_raw)} bytes"
        )
    shape = tuple(int(d) for (d,) in IDX_DIM.iter_unpack(dims_raw))
    header_size = IDX_MAGIC_SIZE + len(dims_raw)
    data_size = math.prod(shape) * dtype.itemsize
    if header_size + data_size > max_bytes:
        raise DatasetError(
            f"{path}: IDX header declares shape {shape} of {dtype} ({header_size + data_size} "
            f"bytes), more than max_bytes={max_bytes}"
        )
    digest.update(head)
    digest.update(dims_raw)

    # Allocate exactly what the (now bounded) header declares and fill it in chunks, so
    # memory never exceeds the declared size plus one chunk.
    buffer = bytearray(data_size)
    view = memoryview(buffer)
    filled = 0
    while filled < data_size:
        chunk = stream.read(min(CHUNK_BYTES, data_size - filled))
        if not chunk:
            raise DatasetError(
                f"{path}: truncated IDX data: header declares shape {shape} "
                f"({header_size + data_size} bytes), found {header_size + filled} bytes"
            )
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    digest.update(view)
    if stream.read(1):
        raise DatasetError(
            f"{path}: IDX file holds more data than its header declares: expected "
            f"{header_size + data_size} bytes for shape {shape}, found more"
        )
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array, digest.hexdigest()


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc
    return digest.hexdigest()


def _gunzip_md5(path: Path, max_bytes: int) -> str | None:
    """MD5 of a gzip file's content, or None if it is not valid gzip within ``max_bytes``."""
    digest = hashlib.md5(usedforsecurity=False)
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                total += len(chunk)
                if total > max_bytes:
                    return None
                digest.update(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error):
        return None
    return digest.hexdigest()


# --- downloading -----------------------------------------------------------------------


class _MirrorFailed(Exception):
    """One mirror could not deliver one file; the next mirror is tried."""


class _BadDownload(Exception):
    """A mirror delivered a file that is not the published one."""


def _download_files(
    name: str, directory: Path, stems: Sequence[str], mirrors: Sequence[str], *, timeout_s: float
) -> None:
    if not stems:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"{name}: cannot create download directory {directory}: {exc}") from exc
    for stem in stems:
        _download_one(name, directory, stem, mirrors, timeout_s)


def _download_one(
    name: str, directory: Path, stem: str, mirrors: Sequence[str], timeout_s: float
) -> None:
    filename = f"{stem}.gz"
    sums = _CHECKSUMS[name][stem]
    failures: list[str] = []
    bad_content = False
    for mirror in mirrors:
        url = _join_url(mirror, filename)
        try:
            _fetch_verified(url, directory / filename, sums, timeout_s)
        except _MirrorFailed as exc:
            failures.append(f"{url} ({exc})")
            continue
        except _BadDownload as exc:
            bad_content = True
            failures.append(f"{url} ({exc})")
            continue
        return
    tried = "; ".join(failures)
    by_hand = (
        f"Download {', '.join(f'{s}.gz' for s in IDX_FILE_NAMES)} by hand into a directory "
        "and pass --data-dir DIR."
    )
    if bad_content:
        raise ChecksumError(
            f"{name}: no mirror delivered the published {filename} "
            f"(expected md5 {sums.gz_md5} or uncompressed md5 {sums.raw_md5}). "
            f"Tried: {tried}. {by_hand}"
        )
    raise DatasetError(
        f"{name}: could not download {filename} from any mirror; the machine looks offline "
        f"or the mirrors are unreachable. Tried: {tried}. {by_hand}"
    )


def _join_url(mirror: str, filename: str) -> str:
    return mirror if mirror.endswith(filename) else mirror.rstrip("/") + "/" + filename


def _fetch_verified(url: str, target: Path, sums: _Checksums, timeout_s: float) -> None:
    """Stream ``url`` to a temporary file beside ``target``; rename it into place only if
    its checksum passes. Nothing is left behind on failure."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise _MirrorFailed(f"unsupported URL scheme {scheme!r}; expected http or https")
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise DatasetError(f"cannot write to {target.parent}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            file_md5 = _fetch_to(url, out, timeout_s)
            out.flush()
            os.fsync(out.fileno())
        if file_md5 != sums.gz_md5 and sums.raw_md5 not in (
            file_md5,
            _gunzip_md5(tmp, DEFAULT_MAX_IDX_BYTES),
        ):
            raise _BadDownload(
                f"checksum mismatch: expected md5 {sums.gz_md5} (official .gz) or "
                f"uncompressed md5 {sums.raw_md5}, found {file_md5}"
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise DatasetError(f"cannot write {target}: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fetch_to(url: str, out: IO[bytes], timeout_s: float) -> str:
    """Copy the body of ``url`` into ``out``; returns its MD5. Network trouble of any kind
    becomes ``_MirrorFailed``; trouble writing ``out`` propagates as ``OSError``."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    total = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status != 200:
                raise _MirrorFailed(f"HTTP {response.status}")
            for chunk in _iter_body(response):
                total += len(chunk)
                # A published file is well under the IDX bound; a bigger body is not one.
                if total > DEFAULT_MAX_IDX_BYTES:
                    raise _MirrorFailed(f"response larger than {DEFAULT_MAX_IDX_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _MirrorFailed(str(exc.reason)) from exc
    except (TimeoutError, ConnectionError, http.client.HTTPException, ValueError) as exc:
        raise _MirrorFailed(f"{type(exc).__name__}: {exc}") from exc
    return digest.hexdigest()


def _iter_body(response: io.BufferedIOBase | http.client.HTTPResponse) -> Iterator[bytes]:
    while chunk := response.read(CHUNK_BYTES):
        yield chunk
