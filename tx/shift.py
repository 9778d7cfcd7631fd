"""Sensor shift at TX: image transforms applied before PCA, parsed from a spec like ``rotate:20+noise:0.1``.

The families are ``rotate:DEG``, ``noise:SIGMA``, ``invert``, ``blur:SIGMA``, ``scale:FACTOR``
and ``module:function`` (a callable of the user's own, validated on every call). numpy and
scipy only: TX never imports torch.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.errors import ShiftError

F32 = npt.NDArray[np.float32]
#: Pixel range of every dataset's images (``common.data.spec`` scales them to [0, 1]).
VALUE_RANGE = (0.0, 1.0)
#: Longest spec accepted (a control request carries it).
MAX_SPEC_CHARS = 256
_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Transform:
    """One step of a shift: its family and parameter."""

    family: str
    value: float | None = None
    plugin: str | None = None

    def __str__(self) -> str:
        if self.plugin is not None:
            return self.plugin
        return self.family if self.value is None else f"{self.family}:{self.value:g}"


#: family -> (needs a value, check of the value, what the value means)
_FAMILIES: dict[str, tuple[bool, Callable[[float], bool], str]] = {
    "rotate": (True, lambda v: -360 <= v <= 360, "degrees in [-360, 360]"),
    "noise": (True, lambda v: 0 <= v <= 10, "a standard deviation in [0, 10]"),
    "blur": (True, lambda v: 0 <= v <= 10, "a Gaussian sigma in pixels in [0, 10]"),
    "scale": (True, lambda v: 0.1 <= v <= 10, "a zoom factor in [0.1, 10]"),
    "invert": (False, lambda v: True, "no value"),
}


def parse_spec(spec: str) -> tuple[Transform, ...]:
    """``"rotate:20+noise:0.1"`` -> its transforms; ``""``/``"none"`` -> none; ``ShiftError`` otherwise."""
    text = spec.strip()
    if len(text) > MAX_SPEC_CHARS:
        raise ShiftError(f"shift spec is {len(text)} characters, at most {MAX_SPEC_CHARS}")
    if text.lower() in ("", "none"):
        return ()
    steps: list[Transform] = []
    for part in text.split("+"):
        part = part.strip()
        name, _, arg = part.partition(":")
        family = name.lower()
        if family in _FAMILIES:
            needs, ok, meaning = _FAMILIES[family]
            if not needs:
                if arg:
                    raise ShiftError(f"shift {family!r} takes no value, got {part!r}")
                steps.append(Transform(family))
                continue
            try:
                value = float(arg)
            except ValueError:
                raise ShiftError(f"shift {family!r} expects {meaning}, got {part!r}") from None
            if not math.isfinite(value) or not ok(value):
                raise ShiftError(f"shift {family!r} expects {meaning}, got {arg!r}")
            steps.append(Transform(family, value))
        elif _PLUGIN.match(part):
            steps.append(Transform("plugin", plugin=part))
        else:
            raise ShiftError(
                f"unknown shift {part!r}: expected rotate:DEG, noise:SIGMA, invert, blur:SIGMA, "
                "scale:FACTOR or module:function, joined with +"
            )
    return tuple(steps)


def _load_plugin(target: str) -> Callable[[F32], object]:
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ShiftError(f"shift plugin {target!r}: cannot import {module_name!r} ({exc})") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ShiftError(f"shift plugin {target!r}: {module_name} has no callable {func_name!r}")
    return func  # type: ignore[no-any-return]


class Shift:
    """A parsed shift spec, ready to apply to ``[n, H, W]`` float32 images.

    Plugins are imported when the shift is built, so a bad one is refused before any batch.
    """

    def __init__(self, spec: str = "", *, seed: int = 0) -> None:
        self.steps = parse_spec(spec)
        self.spec = "+".join(str(s) for s in self.steps)
        self.rng = np.random.default_rng(seed)
        self._plugins = {s.plugin: _load_plugin(s.plugin) for s in self.steps if s.plugin is not None}

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __str__(self) -> str:
        return self.spec or "none"

    def apply(self, images: F32) -> F32:
        """images [n, H, W] float32 in ``VALUE_RANGE`` -> the shifted images, same shape and dtype."""
        out = np.asarray(images, dtype=np.float32)
        for step in self.steps:
            out = self._step(step, out)
        return out

    def apply_flat(self, images: F32, shape: tuple[int, int]) -> F32:
        """images [n, H*W] -> shifted [n, H*W] (a no-op without steps)."""
        if not self.steps:
            return images
        n = images.shape[0]
        return np.ascontiguousarray(self.apply(images.reshape(n, *shape)).reshape(n, -1))

    def _step(self, step: Transform, x: F32) -> F32:
        from scipy import ndimage

        lo, hi = VALUE_RANGE
        if step.plugin is not None:
            try:
                result = self._plugins[step.plugin](x.copy())
            except Exception as exc:  # a user's code: any failure is that plugin's, named as such
                raise ShiftError(f"shift plugin {step.plugin!r} raised {type(exc).__name__}: {exc}") from exc
            return _checked(step.plugin, result, x)
        v = step.value if step.value is not None else 0.0
        if step.family == "invert":
            out = (lo + hi) - x
        elif step.family == "noise":
            out = x + self.rng.normal(0.0, v * (hi - lo), size=x.shape)
        elif step.family == "rotate":
            out = ndimage.rotate(x, v, axes=(2, 1), reshape=False, order=1, mode="constant", cval=lo)
        elif step.family == "blur":
            out = ndimage.gaussian_filter(x, sigma=(0, v, v), mode="constant", cval=lo)
        else:  # scale: zoom about the image centre, the frame size kept
            h, w = x.shape[1:]
            centre = np.array([(h - 1) / 2, (w - 1) / 2])
            matrix = np.diag([1.0, 1.0 / v, 1.0 / v])
            offset = np.concatenate([[0.0], centre - centre / v])
            out = ndimage.affine_transform(x, matrix, offset=offset, order=1, mode="constant", cval=lo)
        clipped: F32 = np.clip(out, lo, hi).astype(np.float32, copy=False)
        return clipped


def _checked(name: str, result: object, given: F32) -> F32:
    """A plugin's output, refused unless it is a finite float32 array of the input's shape."""
    if not isinstance(result, np.ndarray):
        raise ShiftError(f"shift plugin {name!r} returned {type(result).__name__}, expected a numpy array")
    if result.shape != given.shape:
        raise ShiftError(f"shift plugin {name!r} returned shape {result.shape}, expected {given.shape}")
    if result.dtype != np.float32:
        raise ShiftError(f"shift plugin {name!r} returned dtype {result.dtype}, expected float32")
    if not np.isfinite(result).all():
        raise ShiftError(f"shift plugin {name!r} returned NaN or infinite values")
    return result
