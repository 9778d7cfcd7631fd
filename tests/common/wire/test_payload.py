"""Payload layout: round trips, the N_max budget, and every malformed-input class."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from common import errors
from common.link.budget import n_max
from common.wire import payload as wire

ALPHA, CLASSES = 6, 10


def make(t: int = 3, n: int = 5, alpha: int = ALPHA, seed: int = 0,
         value_type: wire.ValueType = wire.ValueType.FLOAT32) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = rng.standard_normal((t, alpha)).astype(np.float32)
    train = rng.standard_normal((n, alpha)).astype(np.float32)
    if value_type is wire.ValueType.INT8:  # int8 values are codes; the codec quantises them
        test = rng.integers(-128, 128, (t, alpha)).astype(np.int8)
        train = rng.integers(-128, 128, (n, alpha)).astype(np.int8)
    labels = rng.integers(0, CLASSES, n)
    return wire.build(test, train, labels, value_type), test, train, labels


@pytest.mark.parametrize("value_type", list(wire.ValueType))
@pytest.mark.parametrize(("t", "n", "alpha"), [(3, 5, 6), (0, 4, 1), (2, 0, 200), (1, 1, 784)])
def test_round_trip(value_type: wire.ValueType, t: int, n: int, alpha: int) -> None:
    buf, test, train, labels = make(t, n, alpha, value_type=value_type)
    assert len(buf) == wire.payload_size(t, n, alpha, value_type)
    assert len(buf) == 8 + (t + n) * (4 + value_type.size * alpha)
    got = wire.parse(buf, max_alpha=alpha, num_classes=CLASSES)
    assert (got.header.t, got.header.n, got.alpha) == (t, n, alpha)
    tol = 2e-3 if value_type is wire.ValueType.FLOAT16 else 0
    np.testing.assert_allclose(got.test, test, atol=tol * 10, rtol=tol)
    np.testing.assert_allclose(got.train, train, atol=tol * 10, rtol=tol)
    np.testing.assert_array_equal(got.train_labels, labels)


def test_n_max_fits_and_one_more_does_not() -> None:
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(2000):
        alpha = int(rng.integers(1, 800))
        t = int(rng.integers(0, 200))
        b_max = int(rng.integers(8, 2_000_000))
        try:
            n = n_max(b_max, t, alpha)
        except errors.BudgetError:
            assert wire.payload_size(t, 0, alpha) > b_max
            continue
        checked += 1
        assert wire.payload_size(t, n, alpha) <= b_max
        if n < wire.MAX_COUNT:
            assert wire.payload_size(t, n + 1, alpha) > b_max
        assert n == min((b_max - 8 - t * (4 + 4 * alpha)) // (4 + 4 * alpha), wire.MAX_COUNT)
    assert checked > 1000


def test_built_payload_with_n_max_fits_budget() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        alpha, t = int(rng.integers(1, 64)), int(rng.integers(0, 20))
        b_max = wire.payload_size(t, 0, alpha) + int(rng.integers(0, 5000))
        n = n_max(b_max, t, alpha)
        buf, *_ = make(t, n, alpha, seed=int(rng.integers(1 << 30)))
        assert len(buf) <= b_max < len(buf) + wire.vector_size(alpha)


def _corrupt(buf: bytes, offset: int, fmt: str, value: int | float) -> bytes:
    out = bytearray(buf)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


GOOD, *_ = make()
VEC = wire.vector_size(ALPHA)
FIRST_TRAIN = 8 + 3 * VEC

MALFORMED = [
    ("bad magic", _corrupt(GOOD, 0, "<B", 0x42), errors.BadMagic),
    ("bad version", _corrupt(GOOD, 1, "<B", (2 << 4) | 1), errors.BadVersion),
    ("bad value type", _corrupt(GOOD, 1, "<B", (1 << 4) | 9), errors.BadValueType),
    ("truncated", GOOD[:-1], errors.SizeMismatch),
    ("trailing byte", GOOD + b"\0", errors.SizeMismatch),
    ("shorter than header", GOOD[:5], errors.SizeMismatch),
    ("n inflated", _corrupt(GOOD, 6, "<H", 6000), errors.SizeMismatch),
    ("alpha zero", _corrupt(GOOD, 2, "<H", 0), errors.AlphaOutOfRange),
    ("alpha beyond bundle", _corrupt(GOOD, 2, "<H", 65535), errors.AlphaOutOfRange),
    ("train kind in test slot", _corrupt(GOOD, 8, "<B", 1), errors.BadVector),
    ("unknown kind", _corrupt(GOOD, FIRST_TRAIN, "<B", 7), errors.BadVector),
    ("index out of order", _corrupt(GOOD, 8 + 2, "<H", 9), errors.BadVector),
    ("test vector with label", _corrupt(GOOD, 8 + 1, "<B", 3), errors.LabelOutOfRange),
    ("label out of range", _corrupt(GOOD, FIRST_TRAIN + 1, "<B", CLASSES), errors.LabelOutOfRange),
    ("NaN value", _corrupt(GOOD, 8 + 4, "<f", float("nan")), errors.NonFiniteValue),
    ("inf value", _corrupt(GOOD, FIRST_TRAIN + 8, "<f", float("inf")), errors.NonFiniteValue),
]


@pytest.mark.parametrize(("name", "buf", "error"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_rejected_with_typed_error(name: str, buf: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        wire.parse(buf, max_alpha=ALPHA + 10, num_classes=CLASSES)
    assert issubclass(error, errors.PayloadError)


def test_alpha_beyond_bundle_dims() -> None:
    with pytest.raises(errors.AlphaOutOfRange, match=r"1\.\.5"):
        wire.parse(GOOD, max_alpha=ALPHA - 1, num_classes=CLASSES)


def test_budget_too_small_for_test_vectors() -> None:
    with pytest.raises(errors.BudgetError, match="cannot hold"):
        n_max(100, t=10, alpha=50)


def test_parse_does_not_copy_values() -> None:
    buf = bytearray(GOOD)
    got = wire.parse(memoryview(buf), max_alpha=ALPHA, num_classes=CLASSES)
    assert np.shares_memory(got.values, np.frombuffer(buf, dtype=np.uint8))


def _sent(t: int = 3, n: int = 5) -> wire.Header:
    return wire.Header(wire.VERSION, wire.ValueType.FLOAT32, ALPHA, t, n)


@pytest.mark.parametrize("lost", [[], [0], [2, 6], [0, 1, 2, 3, 4, 5, 6, 7]])
def test_partial_keeps_exactly_the_whole_vectors(lost: list[int]) -> None:
    buf, test, train, labels = make()
    valid = np.ones(len(buf), bool)
    for i in lost:
        # One bad byte anywhere in a vector loses the whole vector.
        valid[8 + i * VEC + (i * 7) % VEC] = False
    got = wire.parse_partial(buf, valid, _sent(), max_alpha=ALPHA, num_classes=CLASSES)
    kept_test = [i for i in range(3) if i not in lost]
    kept_train = [j for j in range(5) if j + 3 not in lost]
    assert got.vectors_lost == len(lost)
    np.testing.assert_array_equal(got.test_index, kept_test)
    np.testing.assert_array_equal(got.payload.test, test[kept_test])
    np.testing.assert_array_equal(got.payload.train, train[kept_train])
    np.testing.assert_array_equal(got.payload.train_labels, labels[kept_train])
    assert (got.payload.header.t, got.payload.header.n) == (len(kept_test), len(kept_train))


def test_partial_with_lost_header_uses_announced_header() -> None:
    buf, _, train, _ = make()
    damaged = b"\0" * 8 + buf[8:]
    valid = np.ones(len(buf), bool)
    valid[:8] = False
    got = wire.parse_partial(damaged, valid, _sent(), max_alpha=ALPHA, num_classes=CLASSES)
    assert got.vectors_lost == 0
    np.testing.assert_array_equal(got.payload.train, train)


def test_partial_rejects_header_disagreeing_with_announcement() -> None:
    buf, *_ = make()
    other = wire.Header(wire.VERSION, wire.ValueType.FLOAT32, ALPHA, 2, 6)
    with pytest.raises(errors.BadVector, match="disagrees"):
        wire.parse_partial(buf, np.ones(len(buf), bool), other, max_alpha=ALPHA, num_classes=CLASSES)


def test_partial_still_validates_kept_vectors() -> None:
    buf = _corrupt(GOOD, FIRST_TRAIN + 1, "<B", CLASSES)
    valid = np.ones(len(buf), bool)
    with pytest.raises(errors.LabelOutOfRange):
        wire.parse_partial(buf, valid, _sent(), max_alpha=ALPHA, num_classes=CLASSES)
    valid[FIRST_TRAIN] = False  # that vector is dropped, so the rest passes
    assert wire.parse_partial(buf, valid, _sent(), max_alpha=ALPHA, num_classes=CLASSES).vectors_lost == 1


@pytest.mark.parametrize("value_type", list(wire.ValueType))
@pytest.mark.parametrize(("b_max", "t", "alpha"), [(40000, 50, 40), (30000, 50, 30), (500000, 100, 200), (700, 3, 5)])
def test_n_max_exact_for_every_value_type(value_type: wire.ValueType, b_max: int, t: int, alpha: int) -> None:
    n = n_max(b_max, t, alpha, value_type)
    per = 4 + value_type.size * alpha
    assert n == min((b_max - 8 - t * per) // per, wire.MAX_COUNT)
    buf, *_ = make(t, n, alpha, value_type=value_type)
    assert len(buf) <= b_max < len(buf) + per


def test_int8_fits_more_than_three_and_a_half_times_float32_at_alpha_40() -> None:
    f32 = n_max(40000, 50, 40, wire.ValueType.FLOAT32)
    i8 = n_max(40000, 50, 40, wire.ValueType.INT8)
    assert (f32, i8) == (193, 858)
    assert i8 >= 3.5 * f32


def test_int8_refuses_float_values() -> None:
    with pytest.raises(ValueError, match="int8"):
        wire.build(np.zeros((1, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, int), wire.ValueType.INT8)


INT8_GOOD, *_ = make(value_type=wire.ValueType.INT8)
INT8_VEC = wire.vector_size(ALPHA, wire.ValueType.INT8)
INT8_MALFORMED = [
    ("truncated", INT8_GOOD[:-1], errors.SizeMismatch),
    ("read as float32", _corrupt(INT8_GOOD, 1, "<B", (1 << 4) | 1), errors.SizeMismatch),
    ("n inflated", _corrupt(INT8_GOOD, 6, "<H", 6), errors.SizeMismatch),
    ("label out of range", _corrupt(INT8_GOOD, 8 + 3 * INT8_VEC + 1, "<B", CLASSES), errors.LabelOutOfRange),
    ("index out of order", _corrupt(INT8_GOOD, 8 + 2, "<H", 9), errors.BadVector),
]


@pytest.mark.parametrize(("name", "buf", "error"), INT8_MALFORMED, ids=[m[0] for m in INT8_MALFORMED])
def test_int8_malformed_rejected(name: str, buf: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        wire.parse(buf, max_alpha=ALPHA + 10, num_classes=CLASSES)


@pytest.mark.parametrize("value_type", list(wire.ValueType))
def test_partial_for_every_value_type(value_type: wire.ValueType) -> None:
    buf, test, _, labels = make(value_type=value_type)
    sent = wire.Header(wire.VERSION, value_type, ALPHA, 3, 5)
    valid = np.ones(len(buf), bool)
    vec = wire.vector_size(ALPHA, value_type)
    valid[8 + 1 * vec + 2] = False  # test vector 1
    valid[8 + 4 * vec + 5] = False  # training vector 1
    got = wire.parse_partial(buf, valid, sent, max_alpha=ALPHA, num_classes=CLASSES)
    assert got.vectors_lost == 2
    np.testing.assert_array_equal(got.test_index, [0, 2])
    tol = 2e-3 if value_type is wire.ValueType.FLOAT16 else 0
    np.testing.assert_allclose(got.payload.test.astype(np.float64), test[[0, 2]].astype(np.float64), atol=tol * 10)
    np.testing.assert_array_equal(got.payload.train_labels, labels[[0, 2, 3, 4]])
