"""``PhyConfig``: every waveform and framing parameter TX and RX must agree on, validated once.

Both ends build the same config; only the modulation travels in each frame header.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cached_property

from common.errors import ConfigError
from common.modulation import Modulation
from common.phy.constellation import LABELLINGS
from common.phy.pulse import RrcFilter

#: Header modulations allowed: the header must survive wherever any data frame could.
HEADER_MODULATIONS = (Modulation.BPSK, Modulation.QPSK)


@dataclasses.dataclass(frozen=True)
class PhyConfig:
    """Waveform and framing parameters (defaults suit a Pluto at 1-4 MS/s).

    Attributes
    ----------
    samples_per_symbol : int
        Oversampling of the RRC waveform (>= 2).
    rolloff, rrc_span : float, int
        RRC excess bandwidth and length in symbols (even).
    zc_length, zc_root : int
        Zadoff-Chu preamble sequence (odd length, root coprime with it). 63/25 is LTE's
        PSS choice; root 25 keeps the CFO-induced ZC ghost peak 5 symbols away.
    zc_repeats : int
        Repetitions of the ZC sequence (>= 2); consecutive copies give the CFO estimate,
        whose unambiguous range is ``|cfo| < 1 / (2 * zc_length * sps)`` cycles/sample.
    pilot_spacing, pilot_length : int
        A group of ``pilot_length`` known QPSK symbols follows every ``pilot_spacing``
        header or data symbols and ends each section (channel tracking, SNR estimate).
    pilot_smoothing : int
        Anchors (pilot groups, preamble) on each side that a weighted local linear fit
        of the channel spans; 0 interpolates raw estimates. Larger averages more noise
        but follows fast fading less well.
    max_frame_payload : int
        Payload bytes per frame (the last frame of a payload may be shorter).
    header_modulation : Modulation
        BPSK or QPSK.
    guard_symbols : int
        Silent symbols between frames, on top of the filter tails.
    detect_threshold : float
        Normalised cross-correlation (0..1) above which a preamble is declared.
    tx_rms : float
        RMS amplitude of the burst relative to DAC full scale 1.0 (bursts whose peak would
        exceed full scale are scaled down as a whole).
    max_payload_bytes : int
        Largest total payload a received header may announce (bounds RX allocation).
    labelling : str
        Bit labelling of the data sections TX sends: ``gray`` (the project's, default) or
        ``3gpp`` (TS 38.211 sec. 5.1). Each frame header says which, so RX follows TX.
    """

    samples_per_symbol: int = 4
    rolloff: float = 0.35
    rrc_span: int = 10
    zc_length: int = 63
    zc_root: int = 25
    zc_repeats: int = 3
    pilot_spacing: int = 64
    pilot_length: int = 4
    pilot_smoothing: int = 2
    max_frame_payload: int = 1024
    header_modulation: Modulation = Modulation.BPSK
    guard_symbols: int = 16
    detect_threshold: float = 0.5
    tx_rms: float = 0.3
    max_payload_bytes: int = 1 << 25
    labelling: str = "gray"

    def __post_init__(self) -> None:
        def need(ok: bool, what: str, got: object) -> None:
            if not ok:
                raise ConfigError(f"PhyConfig.{what}, got {got!r}")

        need(isinstance(self.samples_per_symbol, int) and self.samples_per_symbol >= 2,
             "samples_per_symbol must be an int >= 2", self.samples_per_symbol)
        need(0.0 < self.rolloff <= 1.0, "rolloff must be in (0, 1]", self.rolloff)
        need(self.rrc_span >= 2 and self.rrc_span % 2 == 0,
             "rrc_span must be an even int >= 2", self.rrc_span)
        need(self.zc_length >= 3 and self.zc_length % 2 == 1,
             "zc_length must be an odd int >= 3", self.zc_length)
        need(0 < self.zc_root < self.zc_length and math.gcd(self.zc_root, self.zc_length) == 1,
             "zc_root must be in (0, zc_length) and coprime with it", self.zc_root)
        need(self.zc_repeats >= 2, "zc_repeats must be >= 2", self.zc_repeats)
        need(self.pilot_spacing >= 1, "pilot_spacing must be >= 1", self.pilot_spacing)
        need(self.pilot_length >= 2,
             "pilot_length must be >= 2 (the SNR estimate needs two pilots per group)",
             self.pilot_length)
        need(self.pilot_smoothing >= 0, "pilot_smoothing must be >= 0", self.pilot_smoothing)
        need(1 <= self.max_frame_payload <= 0xFFFF,
             "max_frame_payload must be in [1, 65535]", self.max_frame_payload)
        need(self.header_modulation in HEADER_MODULATIONS,
             "header_modulation must be bpsk or qpsk", self.header_modulation)
        need(self.guard_symbols >= 0, "guard_symbols must be >= 0", self.guard_symbols)
        need(0.0 < self.detect_threshold < 1.0,
             "detect_threshold must be in (0, 1)", self.detect_threshold)
        need(0.0 < self.tx_rms <= 0.5, "tx_rms must be in (0, 0.5]", self.tx_rms)
        need(1 <= self.max_payload_bytes <= 0xFFFFFFFF,
             "max_payload_bytes must be in [1, 2**32 - 1]", self.max_payload_bytes)
        need(self.labelling in LABELLINGS, f"labelling must be one of {LABELLINGS}", self.labelling)
        # Frame indices travel as u16: the largest payload must fit in 65535 frames.
        need(self.max_payload_bytes <= 0xFFFF * self.max_frame_payload,
             "max_payload_bytes must be <= 65535 * max_frame_payload", self.max_payload_bytes)

    @cached_property
    def rrc(self) -> RrcFilter:
        """The shared shaping / matched filter."""
        return RrcFilter(self.samples_per_symbol, self.rolloff, self.rrc_span)
