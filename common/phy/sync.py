"""Preamble detection by normalised cross-correlation, with timing and CFO estimates.

One FFT correlation of the whole buffer against one shaped ZC period serves all three.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import numpy.typing as npt
from scipy.signal import oaconvolve

from common.errors import ConfigError, SampleError
from common.phy.config import PhyConfig
from common.phy.frame import zadoff_chu

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Detection:
    """A detected preamble.

    Attributes
    ----------
    t0 : float
        Fractional sample index (in the searched buffer) of the centre of the frame's
        first symbol (the first cyclic-prefix symbol of the preamble).
    cfo : float
        Carrier frequency offset estimate in cycles per sample.
    metric : float
        Normalised correlation at the peak, in [0, 1].
    """

    t0: float
    cfo: float
    metric: float


class PreambleDetector:
    """Finds every preamble in a buffer.

    ``__call__(x)``: x : [N] complex -> list of :class:`Detection`, in time order.

    The correlator template is one period of the *periodically* shaped ZC sequence; the
    cyclic prefix/suffix of the transmitted preamble makes each of the R copies match it
    exactly. The metric is ``sum_r |c_r| / sqrt(E_w * R * sum_r E_x,r)`` (<= 1 by
    Cauchy-Schwarz): copies are combined non-coherently so an uncorrected CFO costs
    little, and the phase advance between copies gives the CFO.

    The search runs at ``sps / 2`` samples per symbol (the signal is band-limited to
    (1 + rolloff) / 2 symbol rates, so this does not alias it), then the peak is
    refined at the full rate with direct correlations.
    """

    def __init__(self, config: PhyConfig) -> None:
        if not isinstance(config, PhyConfig):
            raise ConfigError(f"expected a PhyConfig, got {config!r}")
        self.config = config
        sps = config.samples_per_symbol
        self.period = config.zc_length * sps
        self.repeats = config.zc_repeats
        self.prefix = config.rrc_span // 2
        zc = zadoff_chu(config.zc_length, config.zc_root)
        # Shape three periods and keep the middle one: that is the periodic waveform.
        shaped = config.rrc.shape(np.tile(zc, 3))
        start = config.rrc.delay + self.period
        self.template = shaped[start : start + self.period].astype(np.complex64)
        self._template_energy = float(np.sum(np.abs(self.template) ** 2))
        self._conj_template = np.conj(self.template)
        self.decimation = sps // 2 if sps % 2 == 0 else 1
        d = self.decimation
        self._template_d = self.template[::d]
        self._kernel_d = np.conj(self._template_d[::-1])
        self._energy_d = float(np.sum(np.abs(self._template_d) ** 2))
        #: Peaks closer than one preamble are the same preamble (shifted copies score high).
        self._window = self.repeats * self.period

    def metric(
        self, x: npt.NDArray[np.complex64], decimated: bool = False
    ) -> tuple[FloatArray, npt.NDArray[np.complex64]]:
        """Detection metric [N - R L + 1] and per-period correlation [N - L + 1].

        With ``decimated`` the input is taken as already decimated by ``self.decimation``.
        """
        template_energy = self._energy_d if decimated else self._template_energy
        kernel = self._kernel_d if decimated else np.conj(self.template[::-1])
        length = kernel.size
        n = x.size
        corr = np.asarray(oaconvolve(x, kernel, mode="valid"), dtype=np.complex64)
        power = (x.real.astype(np.float64) ** 2) + (x.imag.astype(np.float64) ** 2)
        csum = np.concatenate([[0.0], np.cumsum(power)])
        energy = csum[length:] - csum[: n - length + 1]  # [N - L + 1]
        m = n - self.repeats * length + 1
        mag = np.abs(corr)
        num = np.zeros(m)
        den = np.zeros(m)
        for r in range(self.repeats):
            num += mag[r * length : r * length + m]
            den += energy[r * length : r * length + m]
        # Tiny floor: silent (all-zero) stretches must score 0, not NaN.
        return num / np.sqrt(template_energy * self.repeats * den + 1e-30), corr

    def _full_rate(self, x: npt.NDArray[np.complex64], n: int) -> tuple[float, npt.NDArray[np.complex128]]:
        """Metric and the R period correlations at full-rate offset ``n`` (direct sums)."""
        seg = x[n : n + self.repeats * self.period].reshape(self.repeats, self.period)
        corr = (seg @ self._conj_template).astype(np.complex128)
        flat = seg.view(np.float32)
        energy = float(np.dot(flat.reshape(-1), flat.reshape(-1)))
        num = float(np.sum(np.abs(corr)))
        return num / math.sqrt(self._template_energy * self.repeats * energy + 1e-30), corr

    def _score(
        self,
        x: npt.NDArray[np.complex64],
        limit: int,
        cache: dict[int, tuple[float, npt.NDArray[np.complex128]]],
        n: int,
    ) -> float:
        """Memoised full-rate metric at offset ``n`` (-1 outside the buffer)."""
        if n < 0 or n > limit:
            return -1.0
        if n not in cache:
            cache[n] = self._full_rate(x, n)
        return cache[n][0]

    def __call__(self, x: npt.ArrayLike) -> list[Detection]:
        arr = np.asarray(x)
        if arr.ndim != 1:
            raise SampleError(f"samples must be 1-D, got shape {arr.shape}")
        arr = arr.astype(np.complex64, copy=False)
        span = self.repeats * self.period
        if arr.size < span + 2:
            return []
        d = self.decimation
        metric, _ = self.metric(np.ascontiguousarray(arr[::d]), decimated=True)
        thr = self.config.detect_threshold
        # The coarse grid can straddle the peak: screen a little below the threshold and
        # let the full-rate metric decide.
        candidates = np.flatnonzero(metric >= 0.8 * thr)
        if candidates.size == 0:
            return []
        window_d = self._window // d
        breaks = np.flatnonzero(np.diff(candidates) > window_d) + 1
        out: list[Detection] = []
        last = -self._window - 1
        limit = arr.size - span  # last full-rate offset with a whole preamble inside
        for cluster in np.split(candidates, breaks):
            coarse = int(cluster[np.argmax(metric[cluster])]) * d
            scores: dict[int, tuple[float, npt.NDArray[np.complex128]]] = {}
            score = functools.partial(self._score, arr, limit, scores)
            best = max(range(coarse - 1, coarse + 2), key=score)
            # Walk uphill in case the coarse peak was off by more than the grid step.
            while score(best + 1) > score(best):
                best += 1
            while score(best - 1) > score(best):
                best -= 1
            peak = score(best)
            if peak < thr or best - last <= self._window:
                continue
            last = best
            a, b, c = score(best - 1), peak, score(best + 1)
            frac = 0.0
            denom = a - 2 * b + c
            if a >= 0 and c >= 0 and denom < 0:
                # Parabola through the peak and its neighbours: sub-sample timing.
                frac = float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
            copies = scores[best][1]
            lagged = np.sum(np.conj(copies[:-1]) * copies[1:])
            cfo = float(np.angle(lagged)) / (2.0 * math.pi * self.period)
            t0 = best + frac - self.prefix * self.config.samples_per_symbol
            out.append(Detection(t0=t0, cfo=cfo, metric=peak))
        return out
