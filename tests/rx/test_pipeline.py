"""The receiver pipeline in-process: payload -> reconstruction -> adaptation -> predictions."""

from __future__ import annotations

import numpy as np
import pytest

from common.clock import realtime_ns
from common.data.spec import load_dataset
from common.errors import AlphaOutOfRange
from common.ml.adapt import AdaptConfig, AdaptMode
from common.ml.bundle import Bundle
from common.ml.config import AlignPolicy
from common.wire import payload as wire
from rx.pipeline import Receiver


def batch(bundle: Bundle, alpha: int, t: int = 120, n: int = 200) -> tuple[bytes, np.ndarray]:
    ds = load_dataset("digits")
    coeffs = bundle.codec.encode(np.concatenate([ds.test.x[:t], ds.pool.x[:n]]), alpha)
    return wire.build(coeffs[:t], coeffs[t:], ds.pool.y[:n]), ds.test.y[:t]


@pytest.mark.parametrize("mode", list(AdaptMode))
def test_process_reports_predictions_and_timings(digits_bundle: Bundle, mode: AdaptMode) -> None:
    rx = Receiver(digits_bundle, AdaptConfig(mode=mode, policy=AlignPolicy.RESET))
    rx.warm_up()
    buf, labels = batch(digits_bundle, alpha=30)
    before = realtime_ns()
    out = rx.process(buf, seed=1)
    assert out.predictions.shape == (120,) and out.predictions.dtype == np.uint8
    assert before <= out.t_b_ns <= realtime_ns()
    assert out.parse_s >= 0 and out.reconstruct_s > 0 and out.classify_s > 0
    assert out.fit.samples == (0 if mode is AdaptMode.NONE else 200)
    accuracy = float((out.predictions == labels).mean())
    assert accuracy > (0.7 if mode is AdaptMode.E2E else 0.85)


def test_lora_recovers_accuracy_lost_at_low_alpha(digits_bundle: Bundle) -> None:
    """At alpha far below the bundle's dims the base model degrades; LoRA on the received samples helps."""
    buf, labels = batch(digits_bundle, alpha=6, t=300, n=300)
    none = Receiver(digits_bundle, AdaptConfig(mode=AdaptMode.NONE)).process(buf)
    lora = Receiver(digits_bundle, AdaptConfig(mode=AdaptMode.LORA, epochs=30, policy=AlignPolicy.RESET)).process(buf)
    acc_none = float((none.predictions == labels).mean())
    acc_lora = float((lora.predictions == labels).mean())
    assert acc_lora > acc_none + 0.02, (acc_none, acc_lora)


def test_alpha_beyond_bundle_is_rejected(digits_bundle: Bundle) -> None:
    rx = Receiver(digits_bundle, AdaptConfig(mode=AdaptMode.NONE))
    buf = wire.build(np.zeros((1, digits_bundle.dims + 1), np.float32), np.zeros((0, digits_bundle.dims + 1), np.float32),
                     np.zeros(0, np.int64))
    with pytest.raises(AlphaOutOfRange):
        rx.process(buf)


@pytest.mark.parametrize("value_type", list(wire.ValueType))
def test_every_value_type_reconstructs_alike(digits_bundle: Bundle, value_type: wire.ValueType) -> None:
    ds = load_dataset("digits")
    codec = digits_bundle.codec
    coeffs = codec.encode(ds.test.x[:100], 30)
    values = codec.quantise(coeffs) if value_type is wire.ValueType.INT8 else coeffs
    buf = wire.build(values, values[:0], np.zeros(0, np.int64), value_type)
    rx = Receiver(digits_bundle, AdaptConfig(mode=AdaptMode.NONE))
    got = codec.decode(rx.parse(buf).values)
    ref = codec.decode(coeffs)
    # int8's rounding is 4 std / 127 / sqrt(12) per component: about 1 % of the images' spread.
    assert float(np.abs(got - ref).max()) < {wire.ValueType.FLOAT32: 1e-6, wire.ValueType.FLOAT16: 1e-2,
                                             wire.ValueType.INT8: 0.15}[value_type]
    assert int((rx.process(buf).predictions == ds.test.y[:100]).sum()) >= 85
