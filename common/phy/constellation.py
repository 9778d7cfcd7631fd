"""Gray-mapped unit-energy constellations and the Mapper/Demapper blocks that share them.

Square QAM is built as two reflected-Gray PAM axes, so demapping is per-axis and vectorised.
Two labellings of the same points: the project's (``"gray"``) and TS 38.211 sec. 5.1's (``"3gpp"``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError
from common.modulation import Modulation

ComplexArray = npt.NDArray[np.complex64]
BitArray = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]


#: Bit labellings: ``gray`` (the project's, on the air by default) and ``3gpp`` (TS 38.211
#: sec. 5.1, Sionna's). They label the same points; 38.211's bits are the project's with the
#: in-phase bits on even positions, the quadrature bits on odd ones, each inverted.
LABELLINGS = ("gray", "3gpp")

#: One constellation object per modulation and labelling, shared by every block of the process.
_SHARED: dict[tuple[Modulation, str], Constellation] = {}


def gray_code(n: int) -> int:
    """Binary-reflected Gray code of ``n``: neighbouring integers differ in one bit."""
    return n ^ (n >> 1)


class Constellation:
    """Points, labels and per-axis PAM of one modulation, with unit average symbol energy.

    A symbol carries ``k = bits_per_symbol`` bits, most significant first. For square QAM
    the first ``k/2`` bits select the in-phase level and the last ``k/2`` the quadrature
    level; each axis is ``L = 2**(k/2)``-PAM labelled with the reflected Gray code, so
    horizontally or vertically adjacent points differ in exactly one bit. BPSK is a
    single real axis (bit 0 -> -1, bit 1 -> +1).

    With ``labelling="3gpp"`` the bits of a symbol are TS 38.211's ``b(0) .. b(k-1)``:
    ``b(0), b(2), ...`` select the in-phase level and ``b(1), b(3), ...`` the quadrature
    level, 0 meaning the positive side (BPSK: bit b -> 1 - 2b on the real axis; 38.211's
    BPSK point is that times ``(1 + j) / sqrt(2)``, a rotation the receiver's channel
    estimate absorbs, so the project keeps BPSK real).

    Use :meth:`of` to get the shared, cached instance of a modulation.
    """

    def __init__(self, modulation: Modulation, labelling: str = "gray") -> None:
        if not isinstance(modulation, Modulation):
            raise ConfigError(f"expected a Modulation, got {modulation!r}")
        if labelling not in LABELLINGS:
            raise ConfigError(f"labelling must be one of {LABELLINGS}, got {labelling!r}")
        self.modulation = modulation
        self.labelling = labelling
        self.bits_per_symbol = modulation.bits_per_symbol
        self.is_real = modulation is Modulation.BPSK
        self.axis_bits = self.bits_per_symbol if self.is_real else self.bits_per_symbol // 2
        self.axis_order = 1 << self.axis_bits
        levels = 2.0 * np.arange(self.axis_order) - (self.axis_order - 1)
        # Unit average energy: a PAM axis has mean energy (L**2 - 1) / 3, square QAM two axes.
        axis_energy = (self.axis_order**2 - 1) / 3.0
        self.scale = 1.0 / math.sqrt(axis_energy if self.is_real else 2.0 * axis_energy)
        #: [L] float64 amplitude of each PAM level, ascending.
        self.levels = levels * self.scale
        labels = np.array([gray_code(i) for i in range(self.axis_order)], dtype=np.int64)
        #: [L] int label of the level at index i; and its inverse.
        self.label_of_level = labels
        self.level_of_label = np.argsort(labels)
        shifts = np.arange(self.axis_bits - 1, -1, -1)
        #: [L, axis_bits] uint8 bits of each level, most significant first.
        self.level_bits = ((labels[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
        self._bit_weights = (1 << shifts).astype(np.int64)
        k = self.bits_per_symbol
        #: 38.211 bit positions in the project's order (I bits then Q bits).
        self._perm = np.arange(k) if self.is_real else np.concatenate([np.arange(0, k, 2), np.arange(1, k, 2)])
        self._inv_perm = np.argsort(self._perm)
        #: [M] complex64 point of each symbol label (label = bits read as an integer).
        self.points = self._build_points()

    @classmethod
    def of(cls, modulation: Modulation, labelling: str = "gray") -> Constellation:
        """The shared constellation of ``modulation`` (built once per process and labelling)."""
        shared = _SHARED.get((modulation, labelling))
        if shared is None:
            shared = _SHARED[(modulation, labelling)] = cls(modulation, labelling)
        return shared

    def to_project(self, bits: BitArray) -> BitArray:
        """[n, k] bits in this labelling -> the project's labelling (identity for ``gray``)."""
        if self.labelling == "gray":
            return bits
        return np.asarray(1 - bits[:, self._perm], dtype=np.uint8)

    def from_project(self, bits: BitArray) -> BitArray:
        """Inverse of :meth:`to_project`."""
        if self.labelling == "gray":
            return bits
        return np.asarray((1 - bits)[:, self._inv_perm], dtype=np.uint8)

    def _build_points(self) -> ComplexArray:
        k = self.bits_per_symbol
        labels = np.arange(1 << k)
        bits = ((labels[:, None] >> np.arange(k - 1, -1, -1)[None, :]) & 1).astype(np.uint8)
        project = self.to_project(bits).astype(np.int64)
        amp = self.levels[self.level_of_label]
        if self.is_real:
            return np.asarray(amp[project @ self._bit_weights], dtype=np.complex64)
        i_amp = amp[project[:, : self.axis_bits] @ self._bit_weights]
        q_amp = amp[project[:, self.axis_bits :] @ self._bit_weights]
        return np.asarray(i_amp + 1j * q_amp, dtype=np.complex64)

    def __repr__(self) -> str:
        return f"Constellation({self.modulation.value}, M={len(self.points)})"

    # Per-axis helpers shared by the mapper and demappers.
    def _axis_indices(self, bits: BitArray) -> npt.NDArray[np.int64]:
        """[n, axis_bits] bits -> [n] level index."""
        labels = bits.astype(np.int64) @ self._bit_weights
        return np.asarray(self.level_of_label[labels], dtype=np.int64)

    def _nearest_level(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        """Index of the nearest PAM level of each real value (the axis slicer)."""
        idx = np.rint((x / self.scale + (self.axis_order - 1)) * 0.5)
        return np.asarray(np.clip(idx, 0, self.axis_order - 1), dtype=np.int64)


def _check_bits(bits: npt.ArrayLike, bits_per_symbol: int) -> BitArray:
    arr = np.asarray(bits)
    if arr.ndim != 1:
        raise ConfigError(f"bits must be 1-D, got shape {arr.shape}")
    if arr.size % bits_per_symbol:
        raise ConfigError(
            f"bit count {arr.size} is not a multiple of bits_per_symbol={bits_per_symbol}"
        )
    return arr.astype(np.uint8, copy=False)


class Mapper:
    """Bits to symbols.

    ``__call__(bits)``: bits : [n * k] uint8 in {0, 1} -> symbols : [n] complex64.
    """

    def __init__(self, constellation: Constellation) -> None:
        if not isinstance(constellation, Constellation):
            raise ConfigError(f"expected a Constellation, got {constellation!r}")
        self.constellation = constellation

    def __call__(self, bits: npt.ArrayLike) -> ComplexArray:
        c = self.constellation
        arr = _check_bits(bits, c.bits_per_symbol)
        groups = c.to_project(arr.reshape(-1, c.bits_per_symbol))
        if c.is_real:
            return c.levels[c._axis_indices(groups)].astype(np.complex64)
        i_amp = c.levels[c._axis_indices(groups[:, : c.axis_bits])]
        q_amp = c.levels[c._axis_indices(groups[:, c.axis_bits :])]
        out = np.empty(groups.shape[0], dtype=np.complex64)
        out.real = i_amp
        out.imag = q_amp
        return out


class HardDemapper:
    """Symbols to bits by minimum distance (per-axis slicing).

    ``__call__(y)``: y : [n] complex -> bits : [n * k] uint8.
    """

    def __init__(self, constellation: Constellation) -> None:
        if not isinstance(constellation, Constellation):
            raise ConfigError(f"expected a Constellation, got {constellation!r}")
        self.constellation = constellation

    def __call__(self, y: npt.ArrayLike) -> BitArray:
        c = self.constellation
        arr = np.asarray(y)
        if arr.ndim != 1:
            raise ConfigError(f"symbols must be 1-D, got shape {arr.shape}")
        if c.is_real:
            return c.from_project(c.level_bits[c._nearest_level(arr.real)]).reshape(-1)
        out = np.empty((arr.size, c.bits_per_symbol), dtype=np.uint8)
        out[:, : c.axis_bits] = c.level_bits[c._nearest_level(arr.real)]
        out[:, c.axis_bits :] = c.level_bits[c._nearest_level(arr.imag)]
        return c.from_project(out).reshape(-1)


class Demapper:
    """Symbols to max-log LLRs.

    ``LLR = ln(P(b=1 | y) / P(b=0 | y))`` (Sionna's sign convention: positive means 1),
    approximated by ``(min_{c: b=0} |y-c|^2 - min_{c: b=1} |y-c|^2) / N0``. For square
    QAM the quadrature term cancels in each in-phase bit, so each axis is demapped alone.

    ``__call__(y, no)``: y : [n] complex, no : noise variance N0 (scalar or [n]) ->
    llr : [n * k] float32.
    """

    def __init__(self, constellation: Constellation) -> None:
        if not isinstance(constellation, Constellation):
            raise ConfigError(f"expected a Constellation, got {constellation!r}")
        self.constellation = constellation
        bits = constellation.level_bits.astype(bool)
        #: [axis_bits, L] masks of levels whose bit is 1 (and 0).
        self._ones = bits.T
        self._zeros = ~bits.T

    def _axis_llr(self, x: npt.NDArray[np.float64], inv_no: npt.NDArray[np.float64]) -> FloatArray:
        c = self.constellation
        dist = (x[:, None] - c.levels[None, :]) ** 2  # [n, L]
        out = np.empty((x.size, c.axis_bits), dtype=np.float32)
        for b in range(c.axis_bits):
            d0 = dist[:, self._zeros[b]].min(axis=1)
            d1 = dist[:, self._ones[b]].min(axis=1)
            out[:, b] = (d0 - d1) * inv_no
        return out

    def __call__(self, y: npt.ArrayLike, no: float | npt.ArrayLike) -> FloatArray:
        c = self.constellation
        arr = np.asarray(y)
        if arr.ndim != 1:
            raise ConfigError(f"symbols must be 1-D, got shape {arr.shape}")
        no_arr = np.broadcast_to(np.asarray(no, dtype=np.float64), arr.shape)
        if np.any(no_arr <= 0):
            raise ConfigError("noise variance no must be > 0")
        inv_no = 1.0 / no_arr
        real = arr.real.astype(np.float64)
        if c.is_real:
            out = self._axis_llr(real, inv_no)
        else:
            out = np.empty((arr.size, c.bits_per_symbol), dtype=np.float32)
            out[:, : c.axis_bits] = self._axis_llr(real, inv_no)
            out[:, c.axis_bits :] = self._axis_llr(arr.imag.astype(np.float64), inv_no)
        if c.labelling != "gray":
            out = -out[:, c._inv_perm]  # an inverted bit flips its LLR's sign
        return np.ascontiguousarray(out).reshape(-1)
