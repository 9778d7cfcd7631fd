"""Modulation orders, the byte budget they allow per batch, and the alpha policy.

``B_max = floor(symbols_per_window * bits_per_symbol * code_rate / 8)``: the number
of payload bytes one transmission window carries at a given modulation.
"""

from __future__ import annotations

import enum
import math

from common.errors import ConfigError


class Modulation(enum.Enum):
    """Supported modulations; the value is the canonical lowercase name."""

    BPSK = "bpsk"
    QPSK = "qpsk"
    QAM16 = "16qam"
    QAM64 = "64qam"
    QAM256 = "256qam"

    @property
    def bits_per_symbol(self) -> int:
        return _BITS[self]

    @property
    def order(self) -> int:
        return 1 << self.bits_per_symbol

    @classmethod
    def parse(cls, text: str | Modulation) -> Modulation:
        """Accept ``64qam``, ``64QAM``, ``qam64`` or ``QAM-64``; raise ``ConfigError`` otherwise."""
        if isinstance(text, Modulation):
            return text
        key = str(text).strip().lower().replace("-", "").replace("_", "")
        if key.startswith("qam") and key[3:].isdigit():
            key = key[3:] + "qam"
        for mod in cls:
            if mod.value == key:
                return mod
        names = ", ".join(m.value for m in cls)
        raise ConfigError(f"unknown modulation {text!r}: expected one of {names}")


_BITS = {
    Modulation.BPSK: 1,
    Modulation.QPSK: 2,
    Modulation.QAM16: 4,
    Modulation.QAM64: 6,
    Modulation.QAM256: 8,
}

#: The reference modulation of the proportional alpha policy (alpha = dims at 256QAM).
REFERENCE = Modulation.QAM256


def byte_budget(modulation: Modulation, symbols_per_window: int, code_rate: float) -> int:
    """``B_max`` in bytes for one window of ``symbols_per_window`` symbols."""
    if symbols_per_window <= 0:
        raise ConfigError(f"symbols_per_window must be > 0, got {symbols_per_window}")
    if not 0.0 < code_rate <= 1.0:
        raise ConfigError(f"code_rate must be in (0, 1], got {code_rate}")
    return math.floor(symbols_per_window * modulation.bits_per_symbol * code_rate / 8)


def proportional_alpha(dims: int, modulation: Modulation) -> int:
    """``round(dims * bits(mod) / bits(256QAM))``, at least 1: 200 at 256QAM, 150 at 64QAM."""
    return max(1, round(dims * modulation.bits_per_symbol / REFERENCE.bits_per_symbol))
