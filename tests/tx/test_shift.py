"""Sensor-shift specs and transforms: parsing, refusals, shape/dtype kept, plugins validated."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from common.errors import ConfigError, ShiftError
from tx.shift import Shift, parse_spec


@pytest.mark.parametrize(("spec", "expected"), [
    ("", "none"),
    ("none", "none"),
    ("rotate:40", "rotate:40"),
    ("rotate:20+noise:0.1", "rotate:20+noise:0.1"),
    (" invert + blur:1.5 ", "invert+blur:1.5"),
    ("scale:0.8", "scale:0.8"),
    ("ROTATE:-15", "rotate:-15"),
])
def test_specs_parse(spec: str, expected: str) -> None:
    assert str(Shift(spec)) == expected


@pytest.mark.parametrize("spec", [
    "rotate", "rotate:abc", "rotate:nan", "rotate:1000", "noise:-1", "invert:3", "scale:0", "blur:inf",
    "twist:3", "rotate:20+", "os.path", "x" * 300,
])
def test_bad_specs_refused(spec: str) -> None:
    with pytest.raises(ShiftError):
        parse_spec(spec)
    assert issubclass(ShiftError, ConfigError)


@pytest.mark.parametrize("spec", ["rotate:40", "noise:0.3", "invert", "blur:1", "scale:1.3", "rotate:20+noise:0.1"])
def test_transforms_keep_shape_dtype_and_range(spec: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 8, 8), dtype=np.float32)
    out = Shift(spec, seed=1).apply(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not np.array_equal(out, x)


def test_invert_and_rotate_do_what_they_say() -> None:
    x = np.zeros((1, 9, 9), np.float32)
    x[0, 0, 4] = 1.0  # top centre
    np.testing.assert_allclose(Shift("invert").apply(x), 1.0 - x)
    turned = Shift("rotate:180").apply(x)
    assert turned[0, 8, 4] > 0.9 and turned[0, 0, 4] < 0.1


def _plugin_module(**funcs: object) -> str:
    name = "semalign_test_shift_plugins"
    module = types.ModuleType(name)
    for key, value in funcs.items():
        setattr(module, key, value)
    sys.modules[name] = module
    return name


def test_plugin_applies_and_bad_plugins_are_refused_by_name() -> None:
    mod = _plugin_module(
        darker=lambda x: x * np.float32(0.5),
        wrong_shape=lambda x: x[:, :4],
        with_nan=lambda x: np.full_like(x, np.nan),
        as_float64=lambda x: x.astype(np.float64),
        not_array=lambda x: [1, 2],
        raising=lambda x: 1 / 0,
    )
    x = np.ones((2, 8, 8), np.float32)
    np.testing.assert_allclose(Shift(f"{mod}:darker+invert").apply(x), 0.5)
    for func, words in [("wrong_shape", "shape"), ("with_nan", "NaN"), ("as_float64", "dtype"), ("not_array", "numpy"),
                        ("raising", "raised ZeroDivisionError")]:
        with pytest.raises(ShiftError, match=words) as info:
            Shift(f"{mod}:{func}").apply(x)
        assert f"{mod}:{func}" in str(info.value)
    with pytest.raises(ShiftError, match="no callable"):
        Shift(f"{mod}:absent")
    with pytest.raises(ShiftError, match="cannot import"):
        Shift("semalign_no_such_module:f")
