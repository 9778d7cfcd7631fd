"""``PhyResult.constellation``: a decimated sample of the last frame's equalised symbols, for displays."""

from __future__ import annotations

import numpy as np
import pytest

from common.modulation import Modulation
from common.phy import Constellation, PhyConfig, demodulate_payload, modulate_payload
from common.phy.demodulator import CONSTELLATION_POINTS


@pytest.mark.parametrize("modulation", [Modulation.QPSK, Modulation.QAM16, Modulation.QAM64])
def test_sample_lies_on_the_constellation_of_a_clean_burst(modulation: Modulation) -> None:
    rng = np.random.default_rng(7)
    payload = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    config = PhyConfig()
    result = demodulate_payload(modulate_payload(payload, modulation, 1, config), config)
    assert result.complete
    points = result.constellation
    assert points.dtype == np.complex64 and 16 <= points.size <= CONSTELLATION_POINTS
    ideal = Constellation.of(modulation).points
    distance = np.abs(points[:, None] - ideal[None, :]).min(axis=1)
    spacing = np.abs(ideal[:, None] - ideal[None, :])[~np.eye(ideal.size, dtype=bool)].min()
    assert distance.max() < spacing / 4


def test_no_frame_no_sample() -> None:
    result = demodulate_payload(np.zeros(4096, np.complex64), PhyConfig())
    assert result.constellation.size == 0 and result.constellation.dtype == np.complex64
