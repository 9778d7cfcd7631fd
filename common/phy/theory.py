"""Closed-form bit error rates in AWGN for the Gray-mapped constellations of ``common.phy``.

Used as the reference of the BER tests and to derive the AMC threshold table.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq
from scipy.special import erfc

from common.errors import ConfigError
from common.modulation import Modulation

FloatArray = npt.NDArray[np.float64]


def _square_qam_ber(order: int, ebn0: FloatArray) -> FloatArray:
    """Exact BER of square Gray M-QAM (per-axis reflected Gray PAM).

    K. Cho and D. Yoon, "On the general BER expression of one- and two-dimensional
    amplitude modulations", IEEE Trans. Commun. 50(7), 2002, eq. (14)/(16): the BER of
    the k-th bit of a sqrt(M)-PAM axis is a finite alternating sum of erfc terms.
    """
    side = math.isqrt(order)
    bits = int(math.log2(order))
    axis_bits = bits // 2
    arg = np.sqrt(3.0 * bits * ebn0 / (2.0 * (order - 1)))
    total = np.zeros_like(ebn0)
    for k in range(1, axis_bits + 1):
        pk = np.zeros_like(ebn0)
        n_terms = int((1.0 - 2.0 ** (-k)) * side)
        for i in range(n_terms):
            step = i * 2 ** (k - 1) / side
            weight = (-1) ** math.floor(step) * (2 ** (k - 1) - math.floor(step + 0.5))
            pk += weight * erfc((2 * i + 1) * arg)
        total += pk / side
    return np.asarray(total / axis_bits, dtype=np.float64)


def ber_awgn(modulation: Modulation, esn0_db: float | npt.ArrayLike) -> FloatArray:
    """Theoretical bit error rate at the given Es/N0 (dB) with coherent detection.

    Parameters
    ----------
    modulation : Modulation
    esn0_db : float or [n] float
        Symbol energy to noise spectral density ratio in dB (complex noise of variance N0).

    Returns
    -------
    [n] float64 BER (a 0-d array for scalar input).
    """
    esn0 = 10.0 ** (np.asarray(esn0_db, dtype=np.float64) / 10.0)
    ebn0 = esn0 / modulation.bits_per_symbol
    if modulation is Modulation.BPSK:
        return np.asarray(0.5 * erfc(np.sqrt(ebn0)), dtype=np.float64)
    return _square_qam_ber(modulation.order, ebn0)


def esn0_db_for_ber(modulation: Modulation, ber: float) -> float:
    """Es/N0 (dB) at which the theoretical BER equals ``ber`` (monotone inversion)."""
    if not 0.0 < ber < 0.5:
        raise ConfigError(f"target BER must be in (0, 0.5), got {ber}")

    def gap(x: float) -> float:
        # Clamp: far above the waterfall erfc underflows to 0 and log10 would fail.
        return math.log10(max(float(ber_awgn(modulation, x)), 1e-300)) - math.log10(ber)

    return float(brentq(gap, -20.0, 60.0, xtol=1e-6))
