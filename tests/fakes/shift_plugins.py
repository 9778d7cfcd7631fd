"""Sensor-shift plugins for the daemon tests, registered in ``shift_plugins`` (NAME: module:function)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_calls = 0


def flaky(images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Darkens the images on its first two calls, then raises, as a buggy user plugin would."""
    global _calls
    _calls += 1
    if _calls > 2:
        raise RuntimeError("sensor model lost its calibration")
    return images * np.float32(0.5)


def exits(images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Calls ``sys.exit`` as a careless user plugin might: it must cost the batch, not TX."""
    raise SystemExit(3)
