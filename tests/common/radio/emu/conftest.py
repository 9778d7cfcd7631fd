"""Fixtures of the emulator tests: emulated Plutos on loopback, and the real libiio stack."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from common.radio.emu import Air, AirConfig, PlutoEmulator


def real_stack_missing() -> str | None:
    """Why real pylibiio + pyadi-iio cannot run here, or None."""
    for mod in ("iio", "adi"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'semalign[sdr]')"
    try:
        import iio  # noqa: F401
    except (ImportError, OSError) as exc:  # pylibiio loads libiio.so at import
        return f"libiio is not loadable ({exc}); apt-get install libiio0"
    return None


needs_libiio = pytest.mark.skipif(real_stack_missing() is not None, reason=real_stack_missing() or "")


@pytest.fixture
def emulator() -> Iterator[PlutoEmulator]:
    """One emulated Pluto alone on its air (it hears its own TX, like a loopback cable)."""
    with PlutoEmulator(Air(AirConfig(snr_db=35.0, cfo=2e-4, timing_offset=0.3))) as emu:
        yield emu
