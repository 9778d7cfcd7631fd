"""The modulator block: payload bytes -> frames (header, CRC-32, pilots) -> one shaped burst.

``modulate_payload`` is what TX calls; ``Modulator`` is the block behind it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError
from common.modulation import Modulation
from common.phy.config import PhyConfig
from common.phy.constellation import Constellation, Mapper
from common.phy.frame import (
    DATA_CRC,
    FrameHeader,
    assemble_section,
    bytes_to_bits,
    data_crc,
    geometry,
    preamble_symbols,
)

ComplexArray = npt.NDArray[np.complex64]

#: Largest batch id (u32 on the wire).
MAX_BATCH_ID = 0xFFFFFFFF


def _pad_bits(bits: npt.NDArray[np.uint8], k: int) -> npt.NDArray[np.uint8]:
    extra = (-bits.size) % k
    if extra:
        bits = np.concatenate([bits, np.zeros(extra, dtype=np.uint8)])
    return bits


class Modulator:
    """Payload bytes -> one burst of frames.

    ``__call__(payload, modulation, batch_id)`` -> [n] complex64 baseband samples at
    ``config.tx_rms`` RMS, peak |I|, |Q| <= 1, with ``guard`` silence before, between
    and after the frames.
    """

    def __init__(self, config: PhyConfig) -> None:
        if not isinstance(config, PhyConfig):
            raise ConfigError(f"expected a PhyConfig, got {config!r}")
        self.config = config
        self._preamble = preamble_symbols(config)
        self._header_mapper = Mapper(Constellation.of(config.header_modulation))

    def frame_symbols(self, header: FrameHeader, chunk: bytes) -> ComplexArray:
        """All symbols of one frame: [geometry.total] complex64."""
        cfg = self.config
        geo = geometry(cfg, header.modulation, len(chunk))
        raw_header = header.encode()
        hdr_bits = _pad_bits(bytes_to_bits(raw_header), cfg.header_modulation.bits_per_symbol)
        hdr = assemble_section(
            self._header_mapper(hdr_bits), cfg.pilot_spacing, cfg.pilot_length, 0
        )
        body = chunk + DATA_CRC.pack(data_crc(raw_header, chunk))
        data_bits = _pad_bits(bytes_to_bits(body), header.modulation.bits_per_symbol)
        data_syms = Mapper(Constellation.of(header.modulation, header.labelling))(data_bits)
        data = assemble_section(
            data_syms, cfg.pilot_spacing, cfg.pilot_length, geo.header.pilot.size
        )
        return np.concatenate([self._preamble, hdr, data])

    def __call__(
        self, payload: bytes | bytearray | memoryview, modulation: Modulation, batch_id: int
    ) -> ComplexArray:
        cfg = self.config
        if not isinstance(modulation, Modulation):
            raise ConfigError(f"expected a Modulation, got {modulation!r}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise ConfigError(f"payload must be bytes, got {type(payload).__name__}")
        if not 0 <= batch_id <= MAX_BATCH_ID:
            raise ConfigError(f"batch_id must be in [0, 2**32 - 1], got {batch_id}")
        total = len(payload)
        if total > cfg.max_payload_bytes:
            raise ConfigError(
                f"payload of {total} bytes exceeds max_payload_bytes={cfg.max_payload_bytes}"
            )
        step = cfg.max_frame_payload
        count = max(1, -(-total // step))
        view = memoryview(payload)
        guard = np.zeros(cfg.guard_symbols, dtype=np.complex64)
        parts: list[ComplexArray] = [guard]
        for index in range(count):
            offset = index * step
            chunk = bytes(view[offset : offset + step])
            header = FrameHeader(modulation, batch_id, index, count, total, offset, len(chunk), cfg.labelling)
            parts.append(self.frame_symbols(header, chunk))
            parts.append(guard)
        # One shaping pass over the whole burst; silent guard symbols keep frames apart.
        burst = cfg.rrc.shape(np.concatenate(parts))
        burst *= np.float32(cfg.tx_rms * math.sqrt(cfg.samples_per_symbol))
        # The rare burst whose peak would clip is scaled down whole: the demodulator is
        # gain-agnostic, and the Pluto contract treats clipping as an error.
        peak = float(max(np.abs(burst.real).max(), np.abs(burst.imag).max()))
        if peak > 1.0:
            burst *= np.float32(0.999 / peak)
        return burst


@functools.lru_cache(maxsize=4)
def _modulator(config: PhyConfig) -> Modulator:
    return Modulator(config)


def modulate_payload(
    payload: bytes, modulation: Modulation, batch_id: int, config: PhyConfig
) -> ComplexArray:
    """Fragment ``payload`` into frames and modulate them.

    Returns [n] complex64 baseband (full scale 1.0 per rail, RMS ``config.tx_rms``):
    guard, frame 0, guard, frame 1, ..., guard.
    """
    return _modulator(config)(payload, modulation, batch_id)
