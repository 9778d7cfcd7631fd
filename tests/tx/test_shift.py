"""Sensor-shift specs and transforms: parsing, refusals, shape/dtype kept, plugins registered and validated."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError, ShiftError
from tx.config import TxConfig
from tx.shift import Shift, load_plugins, parse_spec


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
    names = ["darker", "wrong_shape", "with_nan", "as_float64", "not_array", "raising"]
    plugins = load_plugins({name: f"{mod}:{name}" for name in names})
    x = np.ones((2, 8, 8), np.float32)
    np.testing.assert_allclose(Shift("darker+invert", plugins=plugins).apply(x), 0.5)
    for func, words in [("wrong_shape", "shape"), ("with_nan", "NaN"), ("as_float64", "dtype"), ("not_array", "numpy"),
                        ("raising", "raised ZeroDivisionError")]:
        with pytest.raises(ShiftError, match=words) as info:
            Shift(func, plugins=plugins).apply(x)
        assert repr(func) in str(info.value)
    # A bad entry is refused at start, naming the entry.
    with pytest.raises(ShiftError, match="no callable") as info:
        load_plugins({"gone": f"{mod}:absent"})
    assert "gone" in str(info.value)
    with pytest.raises(ShiftError, match="cannot import") as info:
        load_plugins({"nomod": "semalign_no_such_module:f"})
    assert "nomod" in str(info.value)


@pytest.mark.parametrize("exc", [SystemExit(0), KeyboardInterrupt(), GeneratorExit(), MemoryError("plugin")])
def test_a_plugin_raising_any_base_exception_is_a_shift_error(exc: BaseException) -> None:
    """Defect 3: SystemExit (and the rest of BaseException) passed ``except Exception`` and ended TX."""

    def boom(x: object) -> object:
        raise exc

    plugins = load_plugins({"boom": f"{_plugin_module(boom=boom)}:boom"})
    with pytest.raises(ShiftError, match=f"raised {type(exc).__name__}"):
        Shift("boom", plugins=plugins).apply(np.ones((1, 4, 4), np.float32))


@pytest.mark.parametrize("spec", ["sys:exit", "os:abort", "tests.fakes.shift_plugins:flaky",
                                  "rotate:10+builtins:print", "semalign_no_such_module:f"])
def test_a_spec_naming_code_is_refused_and_nothing_is_imported(spec: str) -> None:
    """Defect 3: a spec (a control request's too) never names code, whatever is registered."""
    plugins = load_plugins({"flaky": "tests.fakes.shift_plugins:flaky"})
    before = set(sys.modules)
    with pytest.raises(ShiftError, match="names code") as info:
        Shift(spec, plugins=plugins)
    assert "shift_plugins" in str(info.value) and "flaky" in str(info.value)
    assert set(sys.modules) == before


def test_only_registered_names_are_plugins() -> None:
    plugins = load_plugins({"mysensor": "tests.fakes.shift_plugins:flaky"})
    assert str(Shift("mysensor+noise:0.1", plugins=plugins)) == "mysensor+noise:0.1"
    with pytest.raises(ShiftError, match=r"unknown shift 'othersensor'.*mysensor"):
        Shift("othersensor", plugins=plugins)
    with pytest.raises(ShiftError, match="unknown shift 'mysensor'"):
        Shift("mysensor")  # registered elsewhere is not registered here
    with pytest.raises(ShiftError, match="takes no value"):
        Shift("mysensor:3", plugins=plugins)


@pytest.mark.parametrize(("entries", "words"), [
    ({"rotate": "tests.fakes.shift_plugins:flaky"}, "built-in"),
    ({"Noise": "tests.fakes.shift_plugins:flaky"}, "built-in"),
    ({"none": "tests.fakes.shift_plugins:flaky"}, "built-in"),
    ({"my sensor": "tests.fakes.shift_plugins:flaky"}, "letters, digits"),
    ({"mysensor": "tests.fakes.shift_plugins"}, "expected module:function"),
    ({"mysensor": "semalign_no_such_module:f"}, "cannot import"),
])
def test_bad_shift_plugins_entries_are_config_errors_naming_the_entry(entries: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        load_plugins(entries)
    assert next(iter(entries)) in str(info.value)


def test_tx_yaml_registers_plugins_and_its_shift_uses_their_names(tmp_path: Path) -> None:
    from common.config import load_config

    path = tmp_path / "tx.yaml"
    path.write_text("shift: mysensor+noise:0.1\nshift_plugins:\n  mysensor: tests.fakes.shift_plugins:flaky\n")
    config = load_config(TxConfig, path)
    assert config.shift_plugins == {"mysensor": "tests.fakes.shift_plugins:flaky"}
    path.write_text("shift: tests.fakes.shift_plugins:flaky\n")
    with pytest.raises(ConfigError, match="names code"):
        load_config(TxConfig, path)
    path.write_text("shift_plugins:\n  invert: tests.fakes.shift_plugins:flaky\n")
    with pytest.raises(ConfigError, match=r"shift_plugins.*invert"):
        load_config(TxConfig, path)
