"""The radio physical layer of semalign: DSP blocks only, one block family per module.

Bearers use ``modulate_payload``/``demodulate_payload`` and ``Channel``. The Pluto driver
lives in ``common.radio``, link adaptation (AMC) in ``common.link``, errors in ``common.errors``.

The names below are loaded on first use (PEP 562): importing ``common.phy.config`` for a
``PhyConfig``, as every bearer does, costs neither scipy nor the demodulator's tables.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.phy.channel import Channel, ChannelConfig, SnrProfile, normalised_cfo
    from common.phy.config import PhyConfig
    from common.phy.constellation import Constellation, Demapper, HardDemapper, Mapper
    from common.phy.contract import RX_BITS, TX_FULL_SCALE, quantise_rx, tx_to_int16
    from common.phy.demodulator import (
        DecodedFrame,
        Demodulator,
        FrameReport,
        PhyResult,
        demodulate_payload,
    )
    from common.phy.modulator import Modulator, modulate_payload
    from common.phy.theory import ber_awgn, esn0_db_for_ber

#: Where each public name lives.
_HOME = {
    **dict.fromkeys(("Channel", "ChannelConfig", "SnrProfile", "normalised_cfo"), "channel"),
    "PhyConfig": "config",
    **dict.fromkeys(("Constellation", "Demapper", "HardDemapper", "Mapper"), "constellation"),
    **dict.fromkeys(("RX_BITS", "TX_FULL_SCALE", "quantise_rx", "tx_to_int16"), "contract"),
    **dict.fromkeys(("DecodedFrame", "Demodulator", "FrameReport", "PhyResult", "demodulate_payload"),
                    "demodulator"),
    **dict.fromkeys(("Modulator", "modulate_payload"), "modulator"),
    **dict.fromkeys(("ber_awgn", "esn0_db_for_ber"), "theory"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'common.phy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"common.phy.{home}"), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

__all__ = [
    "RX_BITS",
    "TX_FULL_SCALE",
    "Channel",
    "ChannelConfig",
    "Constellation",
    "DecodedFrame",
    "Demapper",
    "Demodulator",
    "FrameReport",
    "HardDemapper",
    "Mapper",
    "Modulator",
    "PhyConfig",
    "PhyResult",
    "SnrProfile",
    "ber_awgn",
    "demodulate_payload",
    "esn0_db_for_ber",
    "modulate_payload",
    "normalised_cfo",
    "quantise_rx",
    "tx_to_int16",
]
