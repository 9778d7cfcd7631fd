"""The modulations semalign knows: names and bits per symbol, shared by the PHY and the link.

The byte budget a modulation allows and the alpha policy live in ``common.link``.
"""

from __future__ import annotations

import enum

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
