"""Sensor shift at TX: image transforms applied before PCA, parsed from a spec like ``rotate:20+noise:0.1``.

The families are ``rotate:DEG``, ``noise:SIGMA``, ``invert``, ``blur:SIGMA``, ``scale:FACTOR``
and the NAMEs of ``tx.yaml``'s ``shift_plugins`` (callables of the user's own, imported once at
TX start by :func:`load_plugins`, their output validated on every call). A spec never names
code: ``module:function`` in a spec is refused, since specs also arrive by control request.
numpy and scipy only: TX never imports torch.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.errors import ShiftError

F32 = npt.NDArray[np.float32]
#: Pixel range of every dataset's images (``common.data.spec`` scales them to [0, 1]).
VALUE_RANGE = (0.0, 1.0)
#: Longest spec accepted (a control request carries it).
MAX_SPEC_CHARS = 256
#: A plugin's registered name (a shift spec's word for it).
PLUGIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
#: What ``shift_plugins`` maps a name to: ``module.path:function``.
PLUGIN_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
#: A shift plugin: ``[n, H, W]`` float32 images in, the same shape and dtype out.
Plugin = Callable[[F32], object]


@dataclass(frozen=True)
class Transform:
    """One step of a shift: its family and parameter."""

    family: str
    value: float | None = None
    #: The registered name of a plugin step (``shift_plugins``), None for a built-in family.
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


def parse_spec(spec: str, plugins: Collection[str] = ()) -> tuple[Transform, ...]:
    """``"rotate:20+noise:0.1"`` -> its transforms; ``""``/``"none"`` -> none; ``ShiftError`` otherwise.

    ``plugins`` are the registered plugin names a spec may use (``shift_plugins`` of ``tx.yaml``).
    """
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
        elif name in plugins:
            if arg:
                raise ShiftError(f"shift plugin {name!r} takes no value, got {part!r}")
            steps.append(Transform("plugin", plugin=name))
        elif PLUGIN_TARGET.match(part):
            # Specs come from control requests too: naming code here would let any request
            # import and call it inside TX. Only names registered at start are accepted.
            raise ShiftError(
                f"shift {part!r} names code (module:function): a shift names a plugin by the NAME "
                "it is registered under in tx.yaml's shift_plugins (NAME: module:function, "
                f"imported at TX start); registered: {_listed(plugins)}"
            )
        else:
            raise ShiftError(
                f"unknown shift {part!r}: expected rotate:DEG, noise:SIGMA, invert, blur:SIGMA, "
                f"scale:FACTOR or a registered plugin ({_listed(plugins)}), joined with +"
            )
    return tuple(steps)


def _listed(plugins: Collection[str]) -> str:
    return ", ".join(sorted(plugins)) if plugins else "none"


def check_plugin_entries(entries: Mapping[str, str]) -> None:
    """``ShiftError`` naming the entry unless every ``shift_plugins`` entry is NAME: module:function
    with a NAME that cannot be mistaken for a built-in family. Nothing is imported here."""
    for name, target in entries.items():
        if not PLUGIN_NAME.match(name):
            raise ShiftError(f"shift_plugins: {name!r}: expected a name of letters, digits and _ "
                             "(at most 32, not starting with a digit)")
        if name.lower() in _FAMILIES or name.lower() == "none":
            raise ShiftError(f"shift_plugins: {name!r}: the name of a built-in shift; expected another "
                             f"name than {', '.join(sorted(_FAMILIES))} or none")
        if not isinstance(target, str) or not PLUGIN_TARGET.match(target):
            raise ShiftError(f"shift_plugins: {name}: expected module:function, got {target!r}")


def load_plugins(entries: Mapping[str, str]) -> dict[str, Plugin]:
    """Import every ``shift_plugins`` entry (at TX start, never later); ``ShiftError`` names the
    entry that does not import or is not callable."""
    check_plugin_entries(entries)
    loaded: dict[str, Plugin] = {}
    for name, target in entries.items():
        module_name, _, func_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a user's module may even call sys.exit on import
            raise ShiftError(f"shift_plugins: {name}: cannot import {module_name!r} "
                             f"({type(exc).__name__}: {exc})") from exc
        func = getattr(module, func_name, None)
        if not callable(func):
            raise ShiftError(f"shift_plugins: {name}: {module_name} has no callable {func_name!r}")
        loaded[name] = func
    return loaded


class Shift:
    """A parsed shift spec, ready to apply to ``[n, H, W]`` float32 images.

    ``plugins`` are the ones :func:`load_plugins` imported at start, by registered name; a
    spec may use those and nothing else.
    """

    def __init__(self, spec: str = "", *, seed: int = 0, plugins: Mapping[str, Plugin] | None = None) -> None:
        plugins = plugins or {}
        self.steps = parse_spec(spec, plugins)
        self.spec = "+".join(str(s) for s in self.steps)
        self.rng = np.random.default_rng(seed)
        self._plugins = {s.plugin: plugins[s.plugin] for s in self.steps if s.plugin is not None}

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
            except BaseException as exc:
                # A user's code: whatever it raises (SystemExit and KeyboardInterrupt included;
                # TX's own signals set a stop flag, they never raise) is that plugin's failure,
                # and costs the batch its shift, never the daemon.
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
