"""The Pluto sample contract: TX as int16 scaled to +-2**14, RX as 12-bit values in buffers.

Shared by the simulator (so tests see what the radio sees) and by ``PlutoRadio``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError, SampleError, SampleOverflow

#: TX full scale: pyadi-iio passes I and Q to the AD936x DAC as int16 where +-1.0 of
#: the baseband maps to +-2**14 (the DAC is 12-bit, MSB-aligned with headroom).
TX_FULL_SCALE = 2**14
#: RX ADC resolution: the AD936x returns 12-bit signed I and Q (-2048 .. 2047).
RX_BITS = 12
RX_FULL_SCALE = 2 ** (RX_BITS - 1)


def tx_to_int16(samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Scale baseband (|I|, |Q| <= 1) to the DAC contract.

    Parameters
    ----------
    samples : [n] complex
        Baseband with full scale 1.0.

    Returns
    -------
    [n, 2] int16 I/Q pairs in ``[-2**14, 2**14]``.

    Raises
    ------
    SampleOverflow
        If any component would exceed ``2**14`` after rounding, or is not finite. A plain
        ``astype(np.int16)`` (what pyadi-iio does) would wrap such values silently.
    SampleError
        If ``samples`` is not a 1-D complex array.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise SampleError(f"TX samples must be 1-D, got shape {x.shape}")
    if not np.iscomplexobj(x):
        raise SampleError(f"TX samples must be complex, got dtype {x.dtype}")
    rails = np.empty((x.size, 2), dtype=np.float64)
    rails[:, 0] = x.real
    rails[:, 1] = x.imag
    rails = np.rint(rails * TX_FULL_SCALE)
    if not np.all(np.isfinite(rails)):
        raise SampleOverflow("TX samples contain NaN or inf")
    peak = float(np.abs(rails).max()) if rails.size else 0.0
    if peak > TX_FULL_SCALE:
        worst = int(np.argmax(np.abs(rails).max(axis=1)))
        raise SampleOverflow(
            f"TX sample {worst} reaches {peak / TX_FULL_SCALE:.4f} of full scale; "
            f"|I|, |Q| must stay <= 1.0 (+-{TX_FULL_SCALE} on the DAC)"
        )
    return rails.astype(np.int16)


def int16_to_complex(iq: npt.NDArray[np.int16]) -> npt.NDArray[np.complex128]:
    """[n, 2] int16 I/Q -> [n] complex128 with the same integer values (what ``tx()`` takes)."""
    arr = np.asarray(iq)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise SampleError(f"I/Q pairs must have shape [n, 2], got {arr.shape}")
    return np.asarray(arr[:, 0] + 1j * arr[:, 1].astype(np.float64), dtype=np.complex128)


def quantise_rx(samples: npt.ArrayLike) -> npt.NDArray[np.complex128]:
    """Round I and Q to the 12-bit ADC grid and saturate (never wrap): [n] complex128.

    ``samples`` are in ADC units (full scale 2048).
    """
    x = np.asarray(samples)
    lo, hi = -RX_FULL_SCALE, RX_FULL_SCALE - 1
    re = np.clip(np.rint(x.real), lo, hi)
    im = np.clip(np.rint(x.imag), lo, hi)
    return np.asarray(re + 1j * im, dtype=np.complex128)


def to_buffers(samples: npt.NDArray[np.complex128], buffer_size: int) -> npt.NDArray[np.complex128]:
    """Cut a stream into ``[n_buffers, buffer_size]``; the tail must already be padded."""
    if buffer_size <= 0:
        raise ConfigError(f"buffer_size must be > 0, got {buffer_size}")
    if samples.size % buffer_size:
        raise SampleError(f"{samples.size} samples are not a whole number of {buffer_size}-sample buffers")
    return samples.reshape(-1, buffer_size)
