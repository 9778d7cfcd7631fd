"""The IDX file format (MNIST's): a strict reader for untrusted files, and their checksums.

A file is read gzipped or raw, detected from its first bytes, and bounded before anything is
allocated; :func:`read_verified` checks it against its official MD5s in the same pass.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from common.errors import ChecksumError, DatasetError

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

#: The four files of an MNIST-format dataset, without the ``.gz`` suffix.
IDX_FILE_NAMES: Final = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class Checksums:
    """Official MD5s of one IDX file: of the published ``.gz`` and of its content."""

    gz_md5: str
    raw_md5: str


def read_idx(path: str | Path, *, max_bytes: int = DEFAULT_MAX_IDX_BYTES) -> npt.NDArray[Any]:
    """Read one IDX file, gzipped or raw (detected from its first bytes), into a native-endian
    array of the declared shape and type.

    The file is untrusted: the header is validated and the declared size (header included)
    is checked against ``max_bytes`` before anything is allocated; decompression reads at
    most that much, so a gzip bomb costs one chunk. Any mismatch raises ``DatasetError``.
    """
    return _read_idx_hashed(Path(path), max_bytes).array


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` if present (no decompression needed), else ``stem.gz``, else None."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_verified(path: Path, sums: Checksums) -> npt.NDArray[Any]:
    """Read an IDX file and check it against its official checksums in the same pass."""
    try:
        result = _read_idx_hashed(path, DEFAULT_MAX_IDX_BYTES)
    except DatasetError as exc:
        # A tampered official file usually breaks the gzip stream or the header before it
        # can be hashed; "not the published file" is the truer diagnosis, so say that.
        found = md5_file(path)
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


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc
    return digest.hexdigest()


def gunzip_md5(path: Path, max_bytes: int) -> str | None:
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
