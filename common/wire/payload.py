"""The batch payload: the paper's header-framed binary file of PCA vectors.

This module owns the bytes and nothing else; ``docs/protocol.md`` is its specification.

Layout (all integers little-endian)::

    file header (H = 8 bytes)      FILE_HEADER = struct "<BBHHH"
      magic      u8   0xA7
      ver_type   u8   high nibble: format version (1); low nibble: value type
      alpha      u16  values per vector (PCA components kept)
      t          u16  number of test vectors
      n          u16  number of training vectors
    then t + n vectors, test vectors first, each (h + s*alpha bytes):
      kind       u8   0 = test, 1 = train
      label      u8   class label for training vectors; 0xFF for test vectors
      index      u16  position of the vector among those of its kind (0, 1, ...)
      values     alpha values of the value type (s bytes each: float32 4, float16 2, int8 1)

A payload of t test and n training vectors is exactly ``H + (t + n) * (h + s * alpha)``
bytes; the link's ``N_max`` (``common.link.budget.n_max``) is that size solved for ``n``.
"""

from __future__ import annotations

import enum
import functools
import math
import struct
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from common.errors import (
    AlphaOutOfRange,
    BadMagic,
    BadValueType,
    BadVector,
    BadVersion,
    BudgetError,
    EmptyPayload,
    LabelOutOfRange,
    NonFiniteValue,
    SizeMismatch,
)

MAGIC = 0xA7
VERSION = 1

FILE_HEADER = struct.Struct("<BBHHH")
FILE_HEADER_SIZE = FILE_HEADER.size  # H
assert FILE_HEADER_SIZE == 8

VECTOR_HEADER = struct.Struct("<BBH")
VECTOR_HEADER_SIZE = VECTOR_HEADER.size  # h
assert VECTOR_HEADER_SIZE == 4

KIND_TEST = 0
KIND_TRAIN = 1
NO_LABEL = 0xFF

#: Largest count the u16 header fields can carry.
MAX_COUNT = 0xFFFF


class ValueType(enum.IntEnum):
    """Type of each value; ``s`` in the paper's formula is its size in bytes.

    ``INT8`` values are PCA coefficients quantised with per-component steps both sides derive
    from the bundle (``PCACodec.quantise``/``decode``), so no scale travels and ``s`` = 1.
    """

    FLOAT32 = 1
    FLOAT16 = 2
    INT8 = 3

    @property
    def size(self) -> int:
        return _SIZES[self]

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(_DTYPES[self])

    @classmethod
    def parse(cls, name: str | ValueType) -> ValueType:
        if isinstance(name, ValueType):
            return name
        try:
            return cls[str(name).upper()]
        except KeyError:
            from common.errors import ConfigError

            names = ", ".join(v.name.lower() for v in cls)
            raise ConfigError(f"unknown value type {name!r}: expected one of {names}") from None


_SIZES = {ValueType.FLOAT32: 4, ValueType.FLOAT16: 2, ValueType.INT8: 1}
_DTYPES = {ValueType.FLOAT32: "<f4", ValueType.FLOAT16: "<f2", ValueType.INT8: "i1"}


def vector_size(alpha: int, value_type: ValueType = ValueType.FLOAT32) -> int:
    """``h + s*alpha``: bytes one vector takes on the wire."""
    return VECTOR_HEADER_SIZE + value_type.size * alpha


def payload_size(t: int, n: int, alpha: int, value_type: ValueType = ValueType.FLOAT32) -> int:
    """``H + (t + n)(h + s*alpha)``: exact size of a payload."""
    return FILE_HEADER_SIZE + (t + n) * vector_size(alpha, value_type)


def _record_dtype(alpha: int, value_type: ValueType) -> np.dtype[np.void]:
    return np.dtype(
        [
            ("kind", "u1"),
            ("label", "u1"),
            ("index", "<u2"),
            ("values", value_type.dtype, (alpha,)),
        ]
    )


def _column(
    buf: Any, dtype: npt.DTypeLike, count: int, offset: int, stride: int
) -> npt.NDArray[Any]:
    """[count] items of ``dtype`` at ``offset``, ``offset + stride``, ... of ``buf``, in place.

    One field of every vector record, without the per-call cost of a structured dtype: the
    u32 vector header (``kind | label << 8 | index << 16``, little-endian), or the values as
    one opaque item, so copying them is one memcpy per record where a strided float copy is
    several times slower.
    """
    return np.ndarray((count,), dtype=dtype, buffer=buf, offset=offset, strides=(stride,))


@functools.lru_cache(maxsize=32)
def _opaque(nbytes: int) -> np.dtype[np.void]:
    return np.dtype(f"V{nbytes}")


@functools.lru_cache(maxsize=8)
def _expected_heads(t: int, n: int) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """Vector headers [t + n] of a well-formed payload (training labels 0), and the mask [t + n]
    that keeps every header bit except a training vector's label (both read-only)."""
    head = np.empty(t + n, dtype="<u4")
    head[:t] = np.arange(t, dtype=np.uint32) << 16
    head[:t] |= (NO_LABEL << 8) | KIND_TEST
    head[t:] = np.arange(n, dtype=np.uint32) << 16
    head[t:] |= KIND_TRAIN
    mask = np.full(t + n, 0xFFFFFFFF, dtype="<u4")
    mask[t:] = 0xFFFF00FF
    for arr in (head, mask):
        arr.setflags(write=False)
    return head, mask


def _as_rows(values: npt.NDArray[Any], value_type: ValueType) -> npt.NDArray[np.void]:
    """[k, alpha] values -> [k] opaque rows of the wire's value type (converted if needed)."""
    if value_type is ValueType.INT8 and values.dtype != np.int8:
        # A float cast to int8 would wrap silently; quantising needs the bundle's steps.
        raise ValueError(f"int8 payload values must be int8 (PCACodec.quantise), got {values.dtype}")
    rows = np.ascontiguousarray(values, dtype=value_type.dtype)
    return rows.view(_opaque(value_type.size * rows.shape[1])).reshape(rows.shape[0])


def _all_finite(buf: bytes | memoryview, header: Header, values: npt.NDArray[Any]) -> bool:
    """True when no value is NaN or infinite.

    Fast path for float32: one BLAS dot product of the whole record area with itself. A NaN
    or infinity anywhere makes it non-finite, so a finite result proves every value finite. A
    non-finite result can also come from overflow, or from vector headers that read as huge
    floats (indices of about 24000 and more), so that case is settled exactly on the values.
    """
    if values.size == 0 or header.value_type is ValueType.INT8:  # every int8 code is a value
        return True
    if header.value_type is ValueType.FLOAT32:
        area = np.frombuffer(buf, dtype="<f4", offset=FILE_HEADER_SIZE)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow and NaN are the answer here
            square_sum = np.dot(area, area)
        if math.isfinite(square_sum):
            return True
    return bool(np.isfinite(values).all())


@dataclass(frozen=True)
class Header:
    """The decoded 8-byte file header."""

    version: int
    value_type: ValueType
    alpha: int
    t: int
    n: int

    @property
    def size(self) -> int:
        return payload_size(self.t, self.n, self.alpha, self.value_type)


@dataclass(frozen=True)
class Payload:
    """A parsed payload. Arrays are read-only views into the received buffer where possible."""

    header: Header
    values: npt.NDArray[Any]  # [t + n, alpha] value_type, test vectors first (int8: quantised)
    train_labels: npt.NDArray[np.uint8]  # [n]

    @property
    def alpha(self) -> int:
        return self.header.alpha

    @property
    def test(self) -> npt.NDArray[Any]:
        return self.values[: self.header.t]

    @property
    def train(self) -> npt.NDArray[Any]:
        return self.values[self.header.t :]


def build(
    test: npt.ArrayLike,
    train: npt.ArrayLike,
    train_labels: npt.ArrayLike,
    value_type: ValueType = ValueType.FLOAT32,
) -> bytes:
    """Pack ``test`` [t, alpha] and ``train`` [n, alpha] with labels [n] into one payload."""
    test_arr = np.asarray(test)
    train_arr = np.asarray(train)
    labels = np.asarray(train_labels)
    if test_arr.ndim != 2 or train_arr.ndim != 2:
        raise ValueError("test and train must be 2-D [count, alpha] arrays")
    alpha = test_arr.shape[1] if test_arr.shape[0] else train_arr.shape[1]
    if test_arr.shape[0] and train_arr.shape[0] and train_arr.shape[1] != alpha:
        raise ValueError(f"test has alpha={alpha} but train has alpha={train_arr.shape[1]}")
    t, n = test_arr.shape[0], train_arr.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"train_labels must have shape ({n},), got {labels.shape}")
    if not 1 <= alpha <= MAX_COUNT or t > MAX_COUNT or n > MAX_COUNT:
        raise ValueError(f"alpha={alpha}, t={t}, n={n} exceed the header's u16 fields")
    if t + n == 0:
        # A receiver refuses such a payload (EmptyPayload): nothing is worth sending.
        raise BudgetError("nothing to send: t = n = 0")
    if n and (np.minimum.reduce(labels) < 0 or np.maximum.reduce(labels) >= NO_LABEL):
        raise ValueError("training labels must be in [0, 254]")

    row = vector_size(alpha, value_type)
    out = np.empty(payload_size(t, n, alpha, value_type), dtype=np.uint8)
    FILE_HEADER.pack_into(out.data, 0, MAGIC, (VERSION << 4) | int(value_type), alpha, t, n)
    _column(out, "<u4", t + n, FILE_HEADER_SIZE, row)[:] = _expected_heads(t, n)[0]
    out[FILE_HEADER_SIZE + 1 :: row][t:] = labels  # the label byte of each training vector
    values = _column(out, _opaque(row - VECTOR_HEADER_SIZE), t + n, FILE_HEADER_SIZE + VECTOR_HEADER_SIZE, row)
    values[:t] = _as_rows(test_arr.reshape(t, alpha), value_type)
    values[t:] = _as_rows(train_arr.reshape(n, alpha), value_type)
    return out.tobytes()


def parse_header(buf: bytes | memoryview) -> Header:
    """Decode and check the file header alone (no allocation proportional to the payload)."""
    if len(buf) < FILE_HEADER_SIZE:
        raise SizeMismatch(f"payload is {len(buf)} bytes, shorter than the {FILE_HEADER_SIZE}-byte header")
    magic, ver_type, alpha, t, n = FILE_HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BadMagic(f"magic is 0x{magic:02X}, expected 0x{MAGIC:02X}")
    version, vtype = ver_type >> 4, ver_type & 0x0F
    if version != VERSION:
        raise BadVersion(f"format version {version}, this receiver speaks {VERSION}")
    try:
        value_type = ValueType(vtype)
    except ValueError:
        raise BadValueType(
            f"value type {vtype}, expected one of {[int(v) for v in ValueType]}"
        ) from None
    return Header(version, value_type, alpha, t, n)


def _check_not_empty(header: Header) -> None:
    # Zero records would also make the strided views below ill-formed.
    if header.t + header.n == 0:
        raise EmptyPayload("the header announces t = n = 0: a payload carries at least one vector")


def _check_records(records: np.ndarray, t: int, n: int, num_classes: int, keep: npt.NDArray[np.bool_] | None) -> None:
    """Validate vector headers and values of ``records`` (only the ``keep`` ones, if given)."""
    kinds, labels, index = records["kind"], records["label"], records["index"]
    expected_kind = np.repeat(np.array([KIND_TEST, KIND_TRAIN], np.uint8), [t, n])
    expected_index = np.concatenate([np.arange(t), np.arange(n)])
    is_test = np.arange(t + n) < t
    if keep is not None:
        kinds, labels, index = kinds[keep], labels[keep], index[keep]
        expected_kind, expected_index, is_test = expected_kind[keep], expected_index[keep], is_test[keep]
    if np.any(kinds != expected_kind):
        raise BadVector(f"expected {t} test vectors (kind 0) followed by {n} training vectors (kind 1)")
    if np.any(index != expected_index):
        raise BadVector("vector indices must count 0, 1, ... within each kind")
    if np.any(labels[is_test] != NO_LABEL):
        raise LabelOutOfRange("test vectors must carry no label (0xFF)")
    train_labels = labels[~is_test]
    if train_labels.size and int(train_labels.max()) >= num_classes:
        raise LabelOutOfRange(
            f"training label {int(train_labels.max())} is out of range for {num_classes} classes"
        )


@dataclass(frozen=True)
class PartialPayload:
    """The vectors of a payload that arrived whole, when a lossy link dropped some bytes.

    ``payload`` holds only the kept vectors (its header counts them); ``test_index`` maps
    each kept test vector to its position in the batch as sent.
    """

    payload: Payload
    test_index: npt.NDArray[np.intp]
    sent: Header
    vectors_lost: int


def parse_partial(
    buf: bytes | memoryview,
    valid: npt.NDArray[np.bool_],
    sent: Header,
    *,
    max_alpha: int,
    num_classes: int,
) -> PartialPayload:
    """Parse a payload of which only the bytes flagged in ``valid`` [len(buf)] are trusted.

    ``sent`` is the header the sender announced out of band (the envelope), used when the
    payload's own header was lost. A vector counts only if every one of its bytes is valid.
    """
    if not 1 <= sent.alpha <= max_alpha:
        raise AlphaOutOfRange(f"alpha={sent.alpha}, this receiver's bundle allows 1..{max_alpha}")
    _check_not_empty(sent)
    if len(buf) != sent.size or valid.shape != (len(buf),):
        raise SizeMismatch(
            f"announced t={sent.t}, n={sent.n}, alpha={sent.alpha} ({sent.size} bytes) but "
            f"{len(buf)} bytes and a validity mask of {valid.shape[0]} arrived"
        )
    if valid[:FILE_HEADER_SIZE].all():
        got = parse_header(buf)
        if got != sent:
            raise BadVector(f"payload header {got} disagrees with the announced {sent}")
    per_vector = vector_size(sent.alpha, sent.value_type)
    count = sent.t + sent.n
    keep: npt.NDArray[np.bool_] = np.asarray(valid[FILE_HEADER_SIZE:].reshape(count, per_vector).all(axis=1))
    records = np.frombuffer(buf, dtype=_record_dtype(sent.alpha, sent.value_type), offset=FILE_HEADER_SIZE)
    _check_records(records, sent.t, sent.n, num_classes, keep)
    values = records["values"][keep]
    if sent.value_type is not ValueType.INT8 and not np.isfinite(values).all():
        raise NonFiniteValue("payload holds NaN or infinite values")
    keep_test, keep_train = keep[: sent.t], keep[sent.t :]
    header = Header(sent.version, sent.value_type, sent.alpha, int(keep_test.sum()), int(keep_train.sum()))
    labels = records["label"][sent.t :][keep_train]
    return PartialPayload(
        payload=Payload(header, values, labels),
        test_index=np.flatnonzero(keep_test),
        sent=sent,
        vectors_lost=int(count - keep.sum()),
    )


def parse(
    buf: bytes | memoryview,
    *,
    max_alpha: int,
    num_classes: int,
) -> Payload:
    """Parse and validate an untrusted payload; every failure raises a ``PayloadError`` subclass.

    ``max_alpha`` is the receiver's bundle dimension; ``num_classes`` bounds training labels.
    """
    header = parse_header(buf)
    if not 1 <= header.alpha <= max_alpha:
        raise AlphaOutOfRange(f"alpha={header.alpha}, this receiver's bundle allows 1..{max_alpha}")
    _check_not_empty(header)
    if len(buf) != header.size:
        raise SizeMismatch(
            f"header announces t={header.t}, n={header.n}, alpha={header.alpha} "
            f"({header.size} bytes) but the payload is {len(buf)} bytes"
        )
    t, n = header.t, header.n
    row, s = vector_size(header.alpha, header.value_type), header.value_type.size
    head = np.ascontiguousarray(_column(buf, "<u4", t + n, FILE_HEADER_SIZE, row))
    expected, mask = _expected_heads(t, n)
    # A well-formed payload has exactly the expected headers, training labels aside; anything
    # else is diagnosed field by field, so each fault keeps its own error type.
    if not ((head & mask) == expected).all():
        _diagnose(buf, header, num_classes)
    train_labels = np.ascontiguousarray(head.view(np.uint8)[1::4][t:])  # byte 1 of each header
    if n and int(np.maximum.reduce(train_labels)) >= num_classes:
        raise LabelOutOfRange(
            f"training label {int(np.maximum.reduce(train_labels))} is out of range for {num_classes} classes"
        )
    values: npt.NDArray[Any] = np.ndarray(
        (t + n, header.alpha), dtype=header.value_type.dtype, buffer=buf,
        offset=FILE_HEADER_SIZE + VECTOR_HEADER_SIZE, strides=(row, s),
    )
    if not _all_finite(buf, header, values):
        raise NonFiniteValue("payload holds NaN or infinite values")
    return Payload(header, values, train_labels)


def _diagnose(buf: bytes | memoryview, header: Header, num_classes: int) -> NoReturn:
    """Raise the error naming the first malformed vector-header field (the slow path)."""
    records = np.frombuffer(buf, dtype=_record_dtype(header.alpha, header.value_type), offset=FILE_HEADER_SIZE)
    _check_records(records, header.t, header.n, num_classes, None)
    raise BadVector("vector headers are malformed")
