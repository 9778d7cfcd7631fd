"""Tests of common.data: the registry, the fixed splits, the strict IDX reader, checksums, downloads.

Downloads run against real HTTP servers on 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import re
import socket
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from common.data import download, idx, spec
from common.data.download import download_dataset
from common.data.idx import read_idx
from common.data.spec import (
    DATASET_NAMES,
    Dataset,
    Split,
    default_data_dir,
    load_dataset,
)
from common.errors import ChecksumError, DatasetError

SEED = 1234
IDX_FILES = idx.IDX_FILE_NAMES
DIGITS_SIZES = (1074, 359, 364)  # pretrain, pool, test, as the module docstring documents

# --- helpers ---------------------------------------------------------------------------

_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)


def idx_bytes(array: npt.NDArray[Any]) -> bytes:
    code = _CODES[array.dtype]
    return idx_header(code, array.shape) + array.astype(array.dtype.newbyteorder(">")).tobytes()


def gz(data: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def mnist_copy(src: Path, dest: Path, replace: dict[str, bytes] | None = None) -> Path:
    """A directory with MNIST's four files: symlinks to ``src`` except ``replace``d ones
    (keyed by file name, e.g. ``t10k-labels-idx1-ubyte.gz``)."""
    dest.mkdir(parents=True, exist_ok=True)
    replace = replace or {}
    for name, data in replace.items():
        (dest / name).write_bytes(data)
    for stem in IDX_FILES:
        if stem in {name.removesuffix(".gz") for name in replace}:
            continue
        (dest / f"{stem}.gz").symlink_to(src / f"{stem}.gz")
    return dest


def flip_label(gz_data: bytes, index: int = 100) -> bytes:
    """Same IDX file, one label changed, re-compressed: valid structure, wrong content."""
    raw = bytearray(gzip.decompress(gz_data))
    raw[8 + index] = (raw[8 + index] + 1) % 10
    return gz(bytes(raw))


# --- digits ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_types_and_range(digits: Dataset) -> None:
    assert (digits.name, digits.image_shape, digits.num_classes, digits.dim) == (
        "digits",
        (8, 8),
        10,
        64,
    )
    splits = (digits.pretrain, digits.pool, digits.test)
    assert tuple(s.x.shape[0] for s in splits) == DIGITS_SIZES
    assert sum(DIGITS_SIZES) == 1797
    for split in splits:
        assert split.x.dtype == np.float32 and split.x.shape[1] == 64
        assert split.x.flags.c_contiguous
        assert split.y.dtype == np.int64 and split.y.shape == (split.x.shape[0],)
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        assert set(np.unique(split.y)) == set(range(10))
    # 0..16 scaled by 1/16: the brightest pixel is exactly 1 and every value a 16th.
    assert digits.pretrain.x.max() == 1.0
    np.testing.assert_array_equal(digits.test.x * 16, np.round(digits.test.x * 16))


def test_digits_splits_partition_the_full_set(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    full = (load_digits().data / 16).astype(np.float32)
    parts = np.concatenate([digits.pretrain.x, digits.pool.x, digits.test.x])

    def rows(a: npt.NDArray[np.float32]) -> list[bytes]:
        return sorted(r.tobytes() for r in a)

    # Same multiset of images: every sample is in exactly one split (disjoint and complete).
    assert rows(parts) == rows(full)
    pretrain, pool, test = spec._stratified_split(
        load_digits().target.astype(np.int64), spec.DIGITS_SPLIT_SEED, 5
    )
    all_idx = np.concatenate([pretrain, pool, test])
    assert np.unique(all_idx).size == all_idx.size == 1797


def test_digits_split_is_deterministic_and_fresh(digits: Dataset) -> None:
    again = load_dataset("digits")
    for a, b in zip(
        (digits.pretrain, digits.pool, digits.test),
        (again.pretrain, again.pool, again.test),
        strict=True,
    ):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        assert not np.shares_memory(a.x, b.x)  # one caller's in-place edit can't leak


def test_digits_split_is_stratified_and_shuffled(digits: Dataset) -> None:
    counts = {
        part: np.bincount(getattr(digits, part).y, minlength=10)
        for part in ("pretrain", "pool", "test")
    }
    total = sum(counts.values())
    for part, share in (("pool", 0.2), ("test", 0.2), ("pretrain", 0.6)):
        assert np.all(np.abs(counts[part] - share * total) <= 1.5), (part, counts[part])
    # The test stream interleaves classes rather than sending them in blocks.
    assert np.count_nonzero(np.diff(digits.test.y)) > 0.8 * digits.test.y.size


def test_digits_ignores_download_and_data_dir(tmp_path: Path) -> None:
    ds = load_dataset("digits", tmp_path / "nowhere", download=True)
    assert ds.test.x.shape == (DIGITS_SIZES[2], 64)
    assert not (tmp_path / "nowhere").exists()


# --- Split / Dataset validation and names -------------------------------------------------

_GOOD_X = np.zeros((3, 4), np.float32)
_GOOD_Y = np.zeros(3, np.int64)


@pytest.mark.parametrize(
    ("x", "y", "problem"),
    [
        (np.zeros((3, 4), np.float64), _GOOD_Y, "float32"),
        (np.zeros(12, np.float32), _GOOD_Y, r"\[n, d\]"),
        (np.zeros((4, 3), np.float32).T, _GOOD_Y, "C-contiguous"),
        (_GOOD_X, np.zeros(3, np.int32), "int64"),
        (_GOOD_X, np.zeros(2, np.int64), r"\[3\]"),
        ([[0.0]], _GOOD_Y, "numpy arrays"),
    ],
)
def test_split_rejects_malformed_arrays(x: Any, y: Any, problem: str) -> None:
    with pytest.raises(DatasetError, match=problem):
        Split(x, y)


@pytest.mark.parametrize(
    ("image_shape", "labels", "problem"),
    [((3, 3), [0, 1, 2], "4 features, expected 9"), ((2, 2), [0, 1, 10], r"expected \[0, 9\]")],
)
def test_dataset_rejects_inconsistent_splits(
    image_shape: tuple[int, int], labels: list[int], problem: str
) -> None:
    bad = Split(_GOOD_X, np.array(labels, np.int64))
    good = Split(_GOOD_X, _GOOD_Y)
    with pytest.raises(DatasetError, match=problem):
        Dataset("t", image_shape, 10, pretrain=good, pool=good, test=bad)


@pytest.mark.parametrize("func", [load_dataset, default_data_dir, download_dataset])
def test_unknown_name_lists_the_known_ones(func: Callable[..., Any], tmp_path: Path) -> None:
    args: tuple[Any, ...] = ("emnist", tmp_path) if func is download_dataset else ("emnist",)
    with pytest.raises(DatasetError, match=r"unknown dataset 'emnist'.*fashion-mnist"):
        func(*args)


def test_default_data_dir_respects_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SEMALIGN_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir("mnist") == tmp_path / "home" / ".cache" / "semalign" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir("mnist") == tmp_path / "xdg" / "semalign" / "mnist"
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path / "cache"))
    assert default_data_dir("fashion-mnist") == tmp_path / "cache" / "fashion-mnist"
    assert DATASET_NAMES == ("digits", "mnist", "fashion-mnist")


# --- IDX reader ------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (np.uint8, (5, 3, 2)),
        (np.int8, (7,)),
        (np.int16, (4, 3)),
        (np.int32, (2, 2, 2, 2)),
        (np.float32, (6, 1)),
        (np.float64, (3,)),
        (np.uint8, (0, 28, 28)),
    ],
)
def test_read_idx_round_trips(
    tmp_path: Path, compress: bool, dtype: type[np.generic], shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(SEED)
    if np.issubdtype(dtype, np.integer):
        # Casting 32 random bits down wraps, so every value of the narrow type can occur.
        array = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(dtype)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    data = idx_bytes(array)
    path = write(tmp_path / ("f.gz" if compress else "f"), gz(data) if compress else data)
    got = read_idx(path)
    assert got.shape == shape and got.dtype == np.dtype(dtype)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, array)


_DIMS_10 = idx_header(0x08, (10,))

# (id, file content, max_bytes, message fragment)
_MALFORMED: list[tuple[str, bytes, int, str]] = [
    ("empty", b"", 1024, "truncated IDX header: expected 4 bytes, found 0"),
    ("short-magic", b"\x00\x00", 1024, "truncated IDX header: expected 4 bytes, found 2"),
    (
        "bad-magic",
        b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00",
        1024,
        "bad IDX magic: expected first bytes 00 00, found 01 00",
    ),
    (
        "bad-dtype",
        b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00",
        1024,
        "bad IDX dtype code: .*found 0x07",
    ),
    ("zero-ndim", b"\x00\x00\x08\x00", 1024, "number of dimensions: expected 1..8, found 0"),
    ("huge-ndim", b"\x00\x00\x08\xff", 1024, "number of dimensions: expected 1..8, found 255"),
    (
        "truncated-dims",
        b"\x00\x00\x08\x03" + struct.pack(">I", 2),
        1024,
        "expected 3 dimension sizes",
    ),
    ("truncated-data", _DIMS_10 + bytes(4), 1024, r"truncated IDX data: .*\(18 bytes\), found 12"),
    (
        "declared-larger",
        idx_header(0x0C, (5, 5)) + bytes(10),
        1024,
        r"declares shape \(5, 5\) \(112 bytes\), found 22",
    ),
    (
        "trailing-data",
        _DIMS_10 + bytes(11),
        1024,
        "more data than its header declares: expected 18 bytes",
    ),
    (
        "over-max-bytes",
        idx_header(0x08, (100, 100)),
        1024,
        r"declares shape \(100, 100\).*10012 bytes.*max_bytes=1024",
    ),
    ("overflowing-dims", idx_header(0x0E, (2**32 - 1,) * 4), 1024, "max_bytes=1024"),
]


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    ("content", "max_bytes", "problem"), [c[1:] for c in _MALFORMED], ids=[c[0] for c in _MALFORMED]
)
def test_read_idx_rejects_malformed(
    tmp_path: Path, compress: bool, content: bytes, max_bytes: int, problem: str
) -> None:
    path = write(tmp_path / "bad-idx", gz(content) if compress else content)
    with pytest.raises(DatasetError, match=problem) as info:
        read_idx(path, max_bytes=max_bytes)
    assert "bad-idx" in str(info.value)  # names the file
    assert not isinstance(info.value, ChecksumError)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x1f\x8b" + b"garbage" * 4, "not a valid gzip stream"),
        (gz(_DIMS_10 + bytes(10))[:-6], "not a valid gzip stream"),  # cut inside the trailer
        (
            gz(_DIMS_10 + bytes(10))[:-8] + b"\x00" * 4 + gz(b"")[-4:],
            "not a valid gzip stream",
        ),  # bad CRC
    ],
    ids=["not-gzip", "truncated-gzip", "bad-crc"],
)
def test_read_idx_rejects_broken_gzip(tmp_path: Path, content: bytes, problem: str) -> None:
    with pytest.raises(DatasetError, match=problem):
        read_idx(write(tmp_path / "x.gz", content))


def test_read_idx_rejects_file_larger_than_max_on_disk(tmp_path: Path) -> None:
    path = write(tmp_path / "big", _DIMS_10 + bytes(10) + bytes(2000))
    with pytest.raises(DatasetError, match=r"2018 bytes on disk, more than max_bytes=1000"):
        read_idx(path, max_bytes=1000)


BOMB_ZEROS = 128 << 20


@pytest.fixture(scope="module")
def gzip_bomb_tail() -> bytes:
    """128 MiB of zeros as the tail of a gzip stream, ~0.6 MB compressed."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    head = compressor.compress(b"")
    return (
        head
        + b"".join(compressor.compress(block) for _ in range(BOMB_ZEROS >> 20))
        + compressor.flush()
    )


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ((16,), "more data than its header declares"),  # honest header, 128 MiB hidden after
        ((BOMB_ZEROS,), f"more than max_bytes={1 << 20}"),  # header admits it is huge
    ],
    ids=["hidden-tail", "declared-huge"],
)
def test_read_idx_gzip_bomb_is_bounded(
    tmp_path: Path, gzip_bomb_tail: bytes, shape: tuple[int, ...], problem: str
) -> None:
    # A gzip member holding the header, followed by the bomb as a second member: gzip
    # readers concatenate members, so the IDX stream is header + 128 MiB of zeros.
    path = write(tmp_path / "bomb.gz", gz(idx_header(0x08, shape)) + gzip_bomb_tail)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=problem):
            read_idx(path, max_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"reading a bomb allocated {peak} bytes"


# --- MNIST and Fashion-MNIST from disk --------------------------------------------------


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path) -> Dataset:
    return load_dataset("mnist", mnist_dir)


def test_mnist_loads_with_documented_splits(mnist: Dataset, mnist_dir: Path) -> None:
    assert (mnist.name, mnist.image_shape, mnist.num_classes, mnist.dim) == (
        "mnist",
        (28, 28),
        10,
        784,
    )
    assert [s.x.shape for s in (mnist.pretrain, mnist.pool, mnist.test)] == [
        (50_000, 784),
        (10_000, 784),
        (10_000, 784),
    ]
    for split in (mnist.pretrain, mnist.pool, mnist.test):
        assert split.x.dtype == np.float32 and split.x.flags.c_contiguous
        assert split.y.dtype == np.int64
        assert split.x.min() == 0.0 and split.x.max() == 1.0
    # The canonical first labels of MNIST's training and test sets.
    assert mnist.pretrain.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    train_labels = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(mnist.pool.y, train_labels[50_000:])
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(mnist.test.x[7], images[7].reshape(-1) / np.float32(255))


def test_fashion_mnist_loads_from_debian_copy(fashion_mnist_dir: Path) -> None:
    # Debian re-compressed every file, so each one passes on its uncompressed md5.
    ds = load_dataset("fashion-mnist", fashion_mnist_dir)
    assert [s.y.shape[0] for s in (ds.pretrain, ds.pool, ds.test)] == [50_000, 10_000, 10_000]
    assert ds.pretrain.y[:5].tolist() == [9, 0, 0, 3, 0]  # ankle boot, T-shirt, ...
    assert ds.test.x.max() == 1.0


def test_recompressed_and_raw_copies_pass_on_content_md5(mnist_dir: Path, tmp_path: Path) -> None:
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    images_gz = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    directory = mnist_copy(
        mnist_dir,
        tmp_path,
        # A new gzip wrapper (different mtime, level) and a plain uncompressed file.
        {
            "t10k-labels-idx1-ubyte.gz": gz(labels, mtime=12345),
            "t10k-images-idx3-ubyte": gzip.decompress(images_gz),
        },
    )
    assert hashlib.md5(gz(labels, mtime=12345)).hexdigest() != "ec29112dd5afa0611ce80d1b7f02629c"
    ds = load_dataset("mnist", directory)
    assert ds.test.y[:3].tolist() == [7, 2, 1]


@pytest.mark.parametrize(
    ("filename", "tamper"),
    [
        ("t10k-labels-idx1-ubyte.gz", flip_label),  # still valid gzip and IDX
        (
            "t10k-labels-idx1-ubyte.gz",
            lambda data: data[:2000] + bytes([data[2000] ^ 0xFF]) + data[2001:],
        ),
        ("t10k-labels-idx1-ubyte", lambda data: gzip.decompress(flip_label(data))),
    ],
    ids=["content-flipped", "gz-byte-flipped", "raw-flipped"],
)
def test_tampered_file_raises_checksum_error(
    mnist_dir: Path, tmp_path: Path, filename: str, tamper: Callable[[bytes], bytes]
) -> None:
    original = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    directory = mnist_copy(mnist_dir, tmp_path, {filename: tamper(original)})
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", directory)
    message = str(info.value)
    assert filename in message
    assert "ec29112dd5afa0611ce80d1b7f02629c" in message  # official .gz md5
    assert "27ae3e4e09519cfbb04c329615203637" in message  # official uncompressed md5
    found = hashlib.md5((directory / filename).read_bytes()).hexdigest()
    assert found in message


def test_raw_file_is_preferred_over_gz(mnist_dir: Path, tmp_path: Path) -> None:
    labels_gz = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    directory = mnist_copy(
        mnist_dir,
        tmp_path,
        {
            "t10k-labels-idx1-ubyte": gzip.decompress(labels_gz),
            "t10k-labels-idx1-ubyte.gz": b"not read",
        },
    )
    assert load_dataset("mnist", directory).test.y.shape == (10_000,)


def test_missing_file_names_it_and_suggests_flags(mnist_dir: Path, tmp_path: Path) -> None:
    directory = mnist_copy(mnist_dir, tmp_path)
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", directory)
    message = str(info.value)
    assert not isinstance(info.value, ChecksumError)
    for fragment in ("train-labels-idx1-ubyte", str(directory), "--data-dir DIR", "--download"):
        assert fragment in message


def test_missing_directory_defaults_to_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    with pytest.raises(DatasetError, match=re.escape(f"not found in {tmp_path / 'fashion-mnist'}")):
        load_dataset("fashion-mnist")


# --- downloads from loopback mirrors ----------------------------------------------------


@dataclass
class Mirror:
    url: str
    requests: list[str] = field(default_factory=list)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        self.requests.append(self.path)


@pytest.fixture
def serve() -> Iterator[Callable[[Path], Mirror]]:
    """Start a static HTTP server on 127.0.0.1 (ephemeral port) for a directory."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(directory: Path) -> Mirror:
        mirror = Mirror("")
        handler = type("Handler", (_QuietHandler,), {"requests": mirror.requests})
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(handler, directory=str(directory))
        )
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append((server, thread))
        mirror.url = f"http://127.0.0.1:{server.server_address[1]}/"
        return mirror

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would swallow loopback requests.
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


def leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".part"
    )


def test_download_fetches_and_verifies(
    serve: Callable[[Path], Mirror], mnist_dir: Path, tmp_path: Path
) -> None:
    mirror = serve(mnist_dir)
    dest = tmp_path / "new" / "mnist"
    assert download_dataset("mnist", dest, mirrors=[mirror.url]) == dest
    for stem in IDX_FILES:
        assert (dest / f"{stem}.gz").read_bytes() == (mnist_dir / f"{stem}.gz").read_bytes()
    assert sorted(mirror.requests) == sorted(f"/{stem}.gz" for stem in IDX_FILES)
    assert leftovers(dest) == []


@pytest.mark.parametrize("first", ["not-found", "refused", "timeout", "file-scheme"])
def test_download_falls_through_to_next_mirror(
    request: pytest.FixtureRequest,
    serve: Callable[[Path], Mirror],
    mnist_dir: Path,
    tmp_path: Path,
    first: str,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    if first == "not-found":
        first_url = serve(empty).url
    elif first == "refused":
        first_url = request.getfixturevalue("dead_url")
    elif first == "timeout":
        first_url = request.getfixturevalue("silent_url")
    else:
        first_url = mnist_dir.as_uri() + "/"
    good = serve(mnist_dir)
    # Only the small test-labels file is missing, so each case costs one fetch.
    dest = mnist_copy(mnist_dir, tmp_path / "dest")
    (dest / "t10k-labels-idx1-ubyte.gz").unlink()
    download_dataset("mnist", dest, mirrors=[first_url, good.url], timeout_s=0.5)
    assert good.requests == ["/t10k-labels-idx1-ubyte.gz"]
    assert (dest / "t10k-labels-idx1-ubyte.gz").read_bytes() == (
        mnist_dir / "t10k-labels-idx1-ubyte.gz"
    ).read_bytes()
    assert leftovers(dest) == []


def test_download_all_mirrors_unreachable(dead_url: str, silent_url: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        download_dataset("fashion-mnist", tmp_path, mirrors=[dead_url, silent_url], timeout_s=0.3)
    message = str(info.value)
    assert not isinstance(info.value, ChecksumError)
    for fragment in ("offline", "unreachable", dead_url, silent_url, "--data-dir DIR", "by hand"):
        assert fragment in message
    assert list(tmp_path.iterdir()) == []


def test_download_rejects_corrupted_file_and_leaves_nothing(
    serve: Callable[[Path], Mirror], mnist_dir: Path, tmp_path: Path
) -> None:
    bad_dir = tmp_path / "bad-mirror"
    bad_dir.mkdir()
    original = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (bad_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(flip_label(original))
    bad = serve(bad_dir)
    dest = mnist_copy(mnist_dir, tmp_path / "dest")
    (dest / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ChecksumError) as info:
        download_dataset("mnist", dest, mirrors=[bad.url])
    assert "checksum mismatch" in str(info.value) and "--data-dir" in str(info.value)
    assert bad.requests == ["/t10k-labels-idx1-ubyte.gz"]
    assert not (dest / "t10k-labels-idx1-ubyte.gz").exists()
    assert leftovers(dest) == []
    # A good mirror after the bad one still delivers.
    good = serve(mnist_dir)
    download_dataset("mnist", dest, mirrors=[bad.url, good.url])
    assert (dest / "t10k-labels-idx1-ubyte.gz").read_bytes() == original


def test_download_keeps_files_already_present(
    serve: Callable[[Path], Mirror], mnist_dir: Path, tmp_path: Path
) -> None:
    dest = mnist_copy(mnist_dir, tmp_path / "dest")
    mirror = serve(mnist_dir)
    download_dataset("mnist", dest, mirrors=[mirror.url])
    assert mirror.requests == []


def test_load_with_download_fetches_only_missing_files(
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[Path], Mirror],
    mnist_dir: Path,
    tmp_path: Path,
) -> None:
    mirror = serve(mnist_dir)
    monkeypatch.setitem(download.DEFAULT_MIRRORS, "mnist", (mirror.url,))
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    cache = mnist_copy(mnist_dir, tmp_path / "mnist")  # == default_data_dir("mnist")
    (cache / "t10k-labels-idx1-ubyte.gz").unlink()
    (cache / "train-labels-idx1-ubyte.gz").unlink()
    ds = load_dataset("mnist", download=True)
    assert sorted(mirror.requests) == ["/t10k-labels-idx1-ubyte.gz", "/train-labels-idx1-ubyte.gz"]
    assert ds.test.y[:3].tolist() == [7, 2, 1]
    assert os.path.isfile(cache / "train-labels-idx1-ubyte.gz")


def test_digits_cannot_be_downloaded(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="bundled with scikit-learn"):
        download_dataset("digits", tmp_path)


# --- the registry ----------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_one_spec_per_dataset(name: str) -> None:
    s = spec.get_spec(name)
    assert s.name == name and spec.DATASETS[name] is s
    assert s.dim == s.image_shape[0] * s.image_shape[1] and s.num_classes == 10
    assert s.pretrain.dims <= s.dim
    # A downloadable dataset has a checksum for each of its files and a mirror to fetch them.
    assert set(s.files) == (set(IDX_FILES) if name in download.DEFAULT_MIRRORS else set())


def test_digits_spec_matches_the_loaded_dataset() -> None:
    ds = load_dataset("digits")
    s = spec.DIGITS
    assert (ds.name, ds.image_shape, ds.num_classes, ds.dim) == (s.name, s.image_shape, s.num_classes, s.dim)
