"""The radio physical layer of semalign: DSP blocks only, one block family per module.

Daemons use ``modulate_payload``/``demodulate_payload``, ``Channel``, and ``AmcPolicy``.
The Pluto driver lives in ``common.radio``; errors live in ``common.errors``.
"""

from __future__ import annotations

from common.phy.amc import DEFAULT_THRESHOLDS, AmcPolicy, threshold_table
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

__all__ = [
    "DEFAULT_THRESHOLDS",
    "RX_BITS",
    "TX_FULL_SCALE",
    "AmcPolicy",
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
    "threshold_table",
    "tx_to_int16",
]
