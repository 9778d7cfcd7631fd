"""Root-raised-cosine pulse shaping at the transmitter and matched filtering at the receiver.

The matched filter samples at fractional instants by evaluating the RRC in continuous time.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError

ComplexArray = npt.NDArray[np.complex64]
FloatArray = npt.NDArray[np.float64]

#: Resolution of the fractional sampling phase (steps per sample).
_MU_STEPS = 256


def rrc(t: npt.ArrayLike, beta: float) -> FloatArray:
    """Continuous root-raised-cosine impulse response at ``t`` symbol periods (peak 1 - b + 4b/pi).

    The two removable singularities (t = 0 and |t| = 1/(4 beta)) take their limits.
    """
    tt = np.asarray(t, dtype=np.float64)
    out = np.empty_like(tt)
    at_zero = np.abs(tt) < 1e-9
    at_pole = (
        np.abs(np.abs(tt) - 1.0 / (4.0 * beta)) < 1e-9 if beta > 0 else np.zeros_like(at_zero)
    )
    regular = ~(at_zero | at_pole)
    x = tt[regular]
    num = np.sin(math.pi * x * (1 - beta)) + 4 * beta * x * np.cos(math.pi * x * (1 + beta))
    den = math.pi * x * (1 - (4 * beta * x) ** 2)
    out[regular] = num / den
    out[at_zero] = 1 - beta + 4 * beta / math.pi
    if beta > 0:
        s, c = math.sin(math.pi / (4 * beta)), math.cos(math.pi / (4 * beta))
        out[at_pole] = beta / math.sqrt(2) * ((1 + 2 / math.pi) * s + (1 - 2 / math.pi) * c)
    return out


class RrcFilter:
    """The RRC filter of one link: taps, delay, shaping and fractional matched filtering.

    Parameters
    ----------
    samples_per_symbol : int >= 2
    rolloff : float in (0, 1]
    span : int >= 2, even
        Filter length in symbols; the filter has ``span * sps + 1`` taps.

    Taps have unit energy, so a unit-energy symbol stream gives Es = 1 per symbol and the
    matched-filter output at the symbol instants is the symbol itself (Nyquist overall).
    """

    def __init__(self, samples_per_symbol: int, rolloff: float, span: int) -> None:
        if samples_per_symbol < 2:
            raise ConfigError(f"samples_per_symbol must be >= 2, got {samples_per_symbol}")
        if not 0.0 < rolloff <= 1.0:
            raise ConfigError(f"rolloff must be in (0, 1], got {rolloff}")
        if span < 2 or span % 2:
            raise ConfigError(f"span must be an even number of symbols >= 2, got {span}")
        self.sps = samples_per_symbol
        self.rolloff = rolloff
        self.span = span
        #: Group delay in samples: symbol k's peak is at sample k * sps + delay.
        self.delay = span * samples_per_symbol // 2
        grid = (np.arange(2 * self.delay + 1) - self.delay) / samples_per_symbol
        raw = rrc(grid, rolloff)
        self._norm = 1.0 / float(np.sqrt(np.sum(raw**2)))
        #: [span * sps + 1] float32 unit-energy taps.
        self.taps = (raw * self._norm).astype(np.float32)
        self._taps_cache: dict[int, npt.NDArray[np.float64]] = {}

    def shape(self, symbols: npt.ArrayLike) -> ComplexArray:
        """Upsample and filter: [n] complex symbols -> [(n - 1) * sps + taps] complex64."""
        sym = np.asarray(symbols, dtype=np.complex64)
        n = sym.size
        if n == 0:
            return np.zeros(0, dtype=np.complex64)
        sps = self.sps
        out_len = (n - 1) * sps + self.taps.size
        rows = -(-out_len // sps)
        out = np.zeros((rows, sps), dtype=np.complex64)
        re, im = np.ascontiguousarray(sym.real), np.ascontiguousarray(sym.imag)
        # Polyphase: output phase p only sees taps p, p + sps, ...; real convolutions on
        # the I and Q rails are several times faster than a zero-stuffed complex filter.
        for p in range(sps):
            sub = self.taps[p::sps]
            m = n + sub.size - 1
            out[:m, p].real = np.convolve(re, sub)
            out[:m, p].imag = np.convolve(im, sub)
        return out.reshape(-1)[:out_len]

    def fractional_taps(self, mu: float) -> npt.NDArray[np.float64]:
        """Matched-filter taps for a sampling instant ``mu`` in [0, 1) samples past an integer.

        Tap m (m = -delay .. delay + 1) weights sample ``floor(t) + m`` for instant ``t``.
        ``mu`` is rounded to 1/256 sample (a timing error far below the RRC truncation
        ISI) so the taps of each phase are computed once.
        """
        key = round(mu * _MU_STEPS)
        taps = self._taps_cache.get(key)
        if taps is None:
            m = np.arange(-self.delay, self.delay + 2, dtype=np.float64)
            taps = rrc((m - key / _MU_STEPS) / self.sps, self.rolloff) * self._norm
            taps.flags.writeable = False
            self._taps_cache[key] = taps
        return taps

    def sample(
        self, x: npt.ArrayLike, t0: float, count: int, *, cfo: float = 0.0, ref: float = 0.0
    ) -> ComplexArray:
        """Matched-filter output at instants ``t0 + k * sps`` for ``k < count``, CFO removed.

        Parameters
        ----------
        x : [N] complex
            Received samples.
        t0 : float
            Fractional sample index of symbol 0's centre in ``x``.
        count : int
        cfo : float
            Frequency offset in cycles/sample to remove: the input is treated as if
            multiplied by ``exp(-2j pi cfo (n - ref))`` before filtering. Folding the
            rotation into the taps and the symbol-rate output is exact and avoids a
            per-sample complex exponential.
        ref : float
            Sample index where that rotation has zero phase.

        Returns
        -------
        [count] complex64; samples outside ``x`` count as zeros.
        """
        if count <= 0:
            return np.zeros(0, dtype=np.complex64)
        arr = np.asarray(x, dtype=np.complex64)
        base = math.floor(t0)
        taps = self.fractional_taps(t0 - base)
        width = taps.size
        first = base - self.delay  # sample under tap 0 for symbol 0
        last = first + (count - 1) * self.sps + width
        lo, hi = max(first, 0), min(last, arr.size)
        if lo == first and hi == last:
            window = arr[first:last]  # inside the buffer: a view, no copy
        else:
            window = np.zeros(last - first, dtype=np.complex64)
            if hi > lo:
                window[lo - first : hi - first] = arr[lo:hi]
        ctaps = taps * np.exp(-2j * math.pi * cfo * np.arange(width))
        # Complex dot as a real [.., 2 * width] @ [2 * width, 2] product on the I/Q view.
        mat = np.empty((2 * width, 2), dtype=np.float32)
        mat[0::2, 0] = ctaps.real
        mat[1::2, 0] = -ctaps.imag
        mat[0::2, 1] = ctaps.imag
        mat[1::2, 1] = ctaps.real
        rails = window.view(np.float32)
        view = np.lib.stride_tricks.sliding_window_view(rails, 2 * width)[:: 2 * self.sps][:count]
        out = np.dot(view, mat).view(np.complex64).reshape(-1)
        if cfo != 0.0:
            starts = first + self.sps * np.arange(count, dtype=np.float64)
            out = out * np.exp(-2j * math.pi * cfo * (starts - ref)).astype(np.complex64)
        return np.asarray(out, dtype=np.complex64)
