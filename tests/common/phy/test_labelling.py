"""TS 38.211 sec. 5.1 bit labelling, checked against the standard's formulas, and carried in frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import ConfigError
from common.modulation import Modulation
from common.phy import (
    Constellation,
    Demapper,
    HardDemapper,
    Mapper,
    PhyConfig,
    demodulate_payload,
    modulate_payload,
)
from common.phy.frame import FrameHeader


def _sign(b: int) -> int:
    return 1 - 2 * int(b)


def ts38211_point(modulation: Modulation, b: list[int]) -> complex:
    """The modulation mapper of TS 38.211 sec. 5.1.2-5.1.6, written out as the standard gives it."""
    if modulation is Modulation.BPSK:  # 5.1.2, projected on the real axis (see Constellation)
        return float(_sign(b[0]))
    if modulation is Modulation.QPSK:  # 5.1.3
        return (_sign(b[0]) + 1j * _sign(b[1])) / math.sqrt(2)
    if modulation is Modulation.QAM16:  # 5.1.4
        return (_sign(b[0]) * (2 - _sign(b[2])) + 1j * _sign(b[1]) * (2 - _sign(b[3]))) / math.sqrt(10)
    if modulation is Modulation.QAM64:  # 5.1.5
        return (_sign(b[0]) * (4 - _sign(b[2]) * (2 - _sign(b[4])))
                + 1j * _sign(b[1]) * (4 - _sign(b[3]) * (2 - _sign(b[5])))) / math.sqrt(42)
    # 5.1.6, 256QAM
    return (_sign(b[0]) * (8 - _sign(b[2]) * (4 - _sign(b[4]) * (2 - _sign(b[6]))))
            + 1j * _sign(b[1]) * (8 - _sign(b[3]) * (4 - _sign(b[5]) * (2 - _sign(b[7]))))) / math.sqrt(170)


def _all_labels(k: int) -> np.ndarray:
    labels = np.arange(1 << k)
    return ((labels[:, None] >> np.arange(k - 1, -1, -1)[None, :]) & 1).astype(np.uint8)


@pytest.mark.parametrize("modulation", list(Modulation))
def test_3gpp_labelling_matches_the_standards_formulas(modulation: Modulation) -> None:
    c = Constellation.of(modulation, "3gpp")
    bits = _all_labels(c.bits_per_symbol)
    expected = np.array([ts38211_point(modulation, list(row)) for row in bits])
    mapped = Mapper(c)(bits.reshape(-1))
    assert np.allclose(mapped, expected, atol=1e-6)
    assert np.allclose(c.points, expected, atol=1e-6)
    # The same points as the project's labelling, only labelled differently.
    assert np.allclose(np.sort_complex(c.points), np.sort_complex(Constellation.of(modulation).points))
    # Demapping inverts mapping, hard and soft (positive LLR means 1).
    assert np.array_equal(HardDemapper(c)(mapped), bits.reshape(-1))
    llr = Demapper(c)(mapped, 0.01)
    assert np.array_equal((llr > 0).astype(np.uint8), bits.reshape(-1))


def test_labellings_differ_by_reordered_inverted_bits() -> None:
    gray, tgpp = Constellation.of(Modulation.QAM16), Constellation.of(Modulation.QAM16, "3gpp")
    # 38.211 b0 b1 b2 b3 = (I1, Q1, I2, Q2) inverted, where the project sends I1 I2 Q1 Q2.
    for label, point in enumerate(tgpp.points):
        b = [(label >> (3 - i)) & 1 for i in range(4)]
        project = [1 - b[0], 1 - b[2], 1 - b[1], 1 - b[3]]
        assert gray.points[int("".join(map(str, project)), 2)] == point


def test_unknown_labelling_is_refused() -> None:
    with pytest.raises(ConfigError, match="labelling"):
        Constellation(Modulation.QPSK, "lte")
    with pytest.raises(ConfigError, match="labelling"):
        PhyConfig(labelling="lte")


@pytest.mark.parametrize("labelling", ["gray", "3gpp"])
def test_the_frame_header_carries_the_labelling(labelling: str) -> None:
    header = FrameHeader(Modulation.QAM64, 9, 0, 1, 100, 0, 100, labelling)
    assert FrameHeader.decode(header.encode(), PhyConfig()) == header
    # RX decodes whatever TX chose: the demodulator reads the labelling from each header.
    payload = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    burst = modulate_payload(payload, Modulation.QAM64, 9, PhyConfig(labelling=labelling))
    result = demodulate_payload(burst, PhyConfig())
    assert result.complete and result.payload == payload


def test_labellings_put_different_symbols_on_the_air() -> None:
    payload = bytes(range(256)) * 4
    a = modulate_payload(payload, Modulation.QAM16, 1, PhyConfig())
    b = modulate_payload(payload, Modulation.QAM16, 1, PhyConfig(labelling="3gpp"))
    assert a.shape == b.shape and not np.allclose(a, b)
