"""The radio frame format: preamble, header bytes and their CRCs, pilot layout, data CRC-32.

This module owns the wire format and nothing else; ``docs/sdr.md`` describes it in prose.
"""

from __future__ import annotations

import binascii
import dataclasses
import math
import struct
import zlib
from functools import cache

import numpy as np
import numpy.typing as npt

from common.errors import FrameError
from common.modulation import Modulation
from common.phy.config import PhyConfig

ComplexArray = npt.NDArray[np.complex64]
IntArray = npt.NDArray[np.int64]

# A frame, in symbols (``sps`` samples each after RRC shaping):
#
#     | ZC[-Q:] | ZC x R | ZC[:Q] | header section (BPSK/QPSK) | data section (frame modulation) |
#
# Q = rrc_span / 2 symbols of cyclic prefix/suffix make every ZC copy look periodic to the
# correlator. A section is its symbols with a group of ``pilot_length`` pilots inserted
# after every ``pilot_spacing`` symbols and after the last one, so pilot positions depend
# only on the section length. Bits are taken from bytes most significant bit first; the
# data section carries the payload then its CRC-32, zero bits pad the last symbol.

#: Header layout, big-endian: magic, version << 4 | labelling flag << 3 | modulation id,
#: batch id, frame index, frame count, total payload bytes, byte offset of this frame,
#: payload bytes in this frame.
HEADER = struct.Struct(">BBIHHIIH")
#: CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF; ``binascii.crc_hqx``) over HEADER bytes.
HEADER_CRC = struct.Struct(">H")
HEADER_BYTES = HEADER.size + HEADER_CRC.size  # 22
#: CRC-32 (IEEE 802.3, ``zlib.crc32``) over the header bytes then the payload bytes,
#: appended after the payload.
DATA_CRC = struct.Struct(">I")

MAGIC = 0xC5
VERSION = 1
#: Modulation id on the wire (4 bits).
MODULATION_IDS: dict[Modulation, int] = {
    Modulation.BPSK: 0,
    Modulation.QPSK: 1,
    Modulation.QAM16: 2,
    Modulation.QAM64: 3,
    Modulation.QAM256: 4,
}
_MODULATION_BY_ID = {v: k for k, v in MODULATION_IDS.items()}
#: Bit 3 of the modulation nibble: the data section's bit labelling (0 the project's Gray,
#: 1 TS 38.211 sec. 5.1). The header itself is always BPSK/QPSK with the project's labelling.
LABELLING_3GPP = 0x08


@dataclasses.dataclass(frozen=True)
class FrameHeader:
    """One frame's header; ``encode``/``decode`` are inverses (22 bytes with CRC-16)."""

    modulation: Modulation
    batch_id: int
    index: int
    count: int
    total_length: int
    offset: int
    length: int
    #: ``gray`` or ``3gpp``: how the data section's bits are labelled (``Constellation``).
    labelling: str = "gray"

    def encode(self) -> bytes:
        flag = LABELLING_3GPP if self.labelling == "3gpp" else 0
        body = HEADER.pack(
            MAGIC,
            VERSION << 4 | flag | MODULATION_IDS[self.modulation],
            self.batch_id,
            self.index,
            self.count,
            self.total_length,
            self.offset,
            self.length,
        )
        return body + HEADER_CRC.pack(binascii.crc_hqx(body, 0xFFFF))

    @classmethod
    def decode(cls, raw: bytes, config: PhyConfig) -> FrameHeader:
        """Parse and check a received header; raise ``FrameError`` saying what is wrong."""
        if len(raw) != HEADER_BYTES:
            raise FrameError(f"header must be {HEADER_BYTES} bytes, got {len(raw)}")
        body = raw[: HEADER.size]
        (crc,) = HEADER_CRC.unpack(raw[HEADER.size :])
        if binascii.crc_hqx(body, 0xFFFF) != crc:
            raise FrameError("header CRC-16 mismatch")
        magic, ver_mod, batch_id, index, count, total, offset, length = HEADER.unpack(body)
        if magic != MAGIC:
            raise FrameError(f"bad magic 0x{magic:02x}, expected 0x{MAGIC:02x}")
        if ver_mod >> 4 != VERSION:
            raise FrameError(f"unsupported frame version {ver_mod >> 4}, expected {VERSION}")
        modulation = _MODULATION_BY_ID.get(ver_mod & 0x07)
        if modulation is None:
            raise FrameError(f"unknown modulation id {ver_mod & 0x07}")
        labelling = "3gpp" if ver_mod & LABELLING_3GPP else "gray"
        # Untrusted input: every field must be consistent before anything is allocated.
        if total > config.max_payload_bytes:
            raise FrameError(f"total length {total} exceeds limit {config.max_payload_bytes}")
        if length > config.max_frame_payload:
            raise FrameError(f"frame length {length} exceeds {config.max_frame_payload}")
        if count < 1 or index >= count:
            raise FrameError(f"frame index {index} not below frame count {count}")
        if offset + length > total or (length == 0 and total != 0):
            raise FrameError(f"byte range {offset}+{length} outside total {total}")
        return cls(modulation, batch_id, index, count, total, offset, length, labelling)


def data_crc(header_bytes: bytes, payload: bytes) -> int:
    """CRC-32 over header and payload (chained, no concatenation copy)."""
    return zlib.crc32(payload, zlib.crc32(header_bytes)) & 0xFFFFFFFF


def bytes_to_bits(data: bytes) -> npt.NDArray[np.uint8]:
    """[n] bytes -> [8n] uint8 bits, most significant first."""
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


def bits_to_bytes(bits: npt.NDArray[np.uint8]) -> bytes:
    """[8n] bits -> n bytes (inverse of :func:`bytes_to_bits`)."""
    return np.packbits(bits).tobytes()


def symbols_for_bits(n_bits: int, modulation: Modulation) -> int:
    k = modulation.bits_per_symbol
    return -(-n_bits // k)


def zadoff_chu(length: int, root: int) -> ComplexArray:
    """Zadoff-Chu sequence ``exp(-j pi u n (n + 1) / N)`` for odd N: [N] complex64."""
    n = np.arange(length, dtype=np.float64)
    return np.asarray(np.exp(-1j * np.pi * root * n * (n + 1) / length), dtype=np.complex64)


@cache
def _prbs_qpsk(length: int) -> ComplexArray:
    """Pilot sequence: QPSK from PRBS-9 (x^9 + x^5 + 1, seed all ones), repeating."""
    state = 0x1FF
    bits = np.empty(2 * length, dtype=np.uint8)
    for i in range(bits.size):
        new = ((state >> 8) ^ (state >> 4)) & 1
        bits[i] = new
        state = ((state << 1) | new) & 0x1FF
    pairs = bits.reshape(-1, 2).astype(np.float32)
    points = ((1 - 2 * pairs[:, 0]) + 1j * (1 - 2 * pairs[:, 1])) / math.sqrt(2.0)
    return np.asarray(points, dtype=np.complex64)


#: Period of the pilot sequence in symbols.
PILOT_PERIOD = 511


def pilot_symbols(start: int, count: int) -> ComplexArray:
    """Pilot values for frame pilot positions ``start .. start + count - 1``."""
    seq = _prbs_qpsk(PILOT_PERIOD)
    return seq[(start + np.arange(count)) % PILOT_PERIOD]


@dataclasses.dataclass(frozen=True)
class Section:
    """Where payload and pilot symbols sit inside a pilotised section.

    ``payload`` and ``pilot`` index the section; pilot group g occupies
    ``pilot[g * pilot_length : (g + 1) * pilot_length]``.
    """

    length: int
    payload: IntArray
    pilot: IntArray


@cache
def section_layout(n_payload: int, spacing: int, group: int) -> Section:
    """Layout of ``n_payload`` symbols with a pilot group after every ``spacing`` and at the end."""
    n_groups = max(1, -(-n_payload // spacing))
    total = n_payload + n_groups * group
    is_pilot = np.zeros(total, dtype=bool)
    for g in range(n_groups):
        start = min((g + 1) * spacing, n_payload) + g * group
        is_pilot[start : start + group] = True
    idx = np.arange(total)
    return Section(total, idx[~is_pilot], idx[is_pilot])


def assemble_section(payload: ComplexArray, spacing: int, group: int, pilot_start: int) -> ComplexArray:
    """Insert pilots (numbered from ``pilot_start``) into ``payload``: [len] complex64."""
    layout = section_layout(payload.size, spacing, group)
    out = np.empty(layout.length, dtype=np.complex64)
    out[layout.payload] = payload
    out[layout.pilot] = pilot_symbols(pilot_start, layout.pilot.size)
    return out


@dataclasses.dataclass(frozen=True)
class FrameGeometry:
    """Symbol counts of a frame of one modulation and payload length."""

    preamble: int
    header: Section
    data: Section
    data_symbols: int

    @property
    def total(self) -> int:
        return self.preamble + self.header.length + self.data.length


def preamble_symbols(config: PhyConfig) -> ComplexArray:
    """``ZC[-Q:] + ZC * R + ZC[:Q]``: [2Q + R N] complex64, unit energy per symbol."""
    zc = zadoff_chu(config.zc_length, config.zc_root)
    q = config.rrc_span // 2
    return np.concatenate([zc[-q:], np.tile(zc, config.zc_repeats), zc[:q]])


def header_symbol_count(config: PhyConfig) -> int:
    return symbols_for_bits(8 * HEADER_BYTES, config.header_modulation)


def geometry(config: PhyConfig, modulation: Modulation, payload_length: int) -> FrameGeometry:
    """Layout of a frame carrying ``payload_length`` bytes (+ CRC-32) at ``modulation``."""
    n_pre = 2 * (config.rrc_span // 2) + config.zc_repeats * config.zc_length
    hdr = section_layout(header_symbol_count(config), config.pilot_spacing, config.pilot_length)
    n_data = symbols_for_bits(8 * (payload_length + DATA_CRC.size), modulation)
    data = section_layout(n_data, config.pilot_spacing, config.pilot_length)
    return FrameGeometry(n_pre, hdr, data, n_data)
