"""Constellations, mapper/demappers, and BER versus Es/N0 in AWGN against the closed forms.

The BER tests find where the simulated curve crosses target BERs and bound the gap in dB.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import ConfigError
from common.modulation import Modulation
from common.phy.constellation import Constellation, Demapper, HardDemapper, Mapper
from common.phy.theory import ber_awgn, esn0_db_for_ber

ALL = list(Modulation)


def _all_labels_bits(c: Constellation) -> np.ndarray:
    k = c.bits_per_symbol
    labels = np.arange(1 << k)
    return ((labels[:, None] >> np.arange(k - 1, -1, -1)) & 1).astype(np.uint8).reshape(-1)


@pytest.mark.parametrize("mod", ALL)
def test_unit_energy_and_gray_neighbours(mod: Modulation) -> None:
    c = Constellation.of(mod)
    assert c is Constellation.of(mod)  # one shared object per modulation
    assert len(c.points) == mod.order
    assert np.mean(np.abs(c.points) ** 2) == pytest.approx(1.0, rel=1e-6)
    d = np.abs(c.points[:, None] - c.points[None, :])
    np.fill_diagonal(d, np.inf)
    nearest = np.isclose(d, d.min(), rtol=1e-5)
    for a, b in zip(*np.nonzero(nearest), strict=True):
        assert bin(int(a) ^ int(b)).count("1") == 1, (mod, a, b)
    # Every point has at least one nearest neighbour (no isolated labels).
    assert nearest.any(axis=1).all()


@pytest.mark.parametrize("mod", ALL)
def test_map_then_demap_is_identity(mod: Modulation) -> None:
    c = Constellation.of(mod)
    bits = _all_labels_bits(c)
    symbols = Mapper(c)(bits)
    assert symbols.dtype == np.complex64
    np.testing.assert_allclose(symbols, c.points, atol=1e-6)
    assert np.array_equal(HardDemapper(c)(symbols), bits)
    llr = Demapper(c)(symbols, 0.01)
    assert llr.dtype == np.float32
    assert np.array_equal(llr > 0, bits.astype(bool))


@pytest.mark.parametrize("mod", ALL)
def test_hard_demap_is_minimum_distance(mod: Modulation) -> None:
    c = Constellation.of(mod)
    rng = np.random.default_rng(1)
    y = (rng.normal(0, 0.8, 5000) + 1j * rng.normal(0, 0.8, 5000)).astype(np.complex64)
    if mod is Modulation.BPSK:
        nearest = np.argmin(np.abs(y.real[:, None] - c.points.real[None, :]), axis=1)
    else:
        nearest = np.argmin(np.abs(y[:, None] - c.points[None, :]), axis=1)
    expected = ((nearest[:, None] >> np.arange(c.bits_per_symbol - 1, -1, -1)) & 1).reshape(-1)
    assert np.array_equal(HardDemapper(c)(y), expected.astype(np.uint8))


def test_bpsk_maxlog_llr_is_exact() -> None:
    # For +-1 BPSK the max-log LLR equals the exact one: 4 Re(y) / N0.
    c = Constellation.of(Modulation.BPSK)
    y = np.array([-1.3 + 0.2j, -0.1 + 0j, 0.4 - 1j, 2.0 + 0j])
    np.testing.assert_allclose(Demapper(c)(y, 0.5), 4 * y.real / 0.5, rtol=1e-6)


def test_maxlog_llr_matches_bruteforce_16qam() -> None:
    c = Constellation.of(Modulation.QAM16)
    rng = np.random.default_rng(2)
    y = rng.normal(0, 0.7, 200) + 1j * rng.normal(0, 0.7, 200)
    no = 0.3
    llr = Demapper(c)(y, no).reshape(-1, 4)
    labels = np.arange(16)
    d2 = np.abs(y[:, None] - c.points[None, :]) ** 2
    for b in range(4):
        bit = (labels >> (3 - b)) & 1
        expected = (d2[:, bit == 0].min(axis=1) - d2[:, bit == 1].min(axis=1)) / no
        np.testing.assert_allclose(llr[:, b], expected, rtol=1e-4, atol=1e-4)


def test_blocks_validate_inputs() -> None:
    c = Constellation.of(Modulation.QAM16)
    with pytest.raises(ConfigError, match="multiple of bits_per_symbol"):
        Mapper(c)(np.zeros(6, dtype=np.uint8))
    with pytest.raises(ConfigError):
        Mapper("16qam")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no must be > 0"):
        Demapper(c)(np.zeros(3, dtype=np.complex64), 0.0)
    with pytest.raises(ConfigError, match="1-D"):
        HardDemapper(c)(np.zeros((2, 2), dtype=np.complex64))


def _exact_pam_ber(mod: Modulation, esn0_db: float) -> float:
    """Independent check of the closed form: sum region probabilities of the per-axis PAM."""
    c = Constellation.of(mod)
    sigma = math.sqrt(10 ** (-esn0_db / 10) / 2)  # per real dimension
    levels = c.levels
    edges = np.concatenate([[-np.inf], (levels[1:] + levels[:-1]) / 2, [np.inf]])
    def q(x: float) -> float:
        return 0.5 * math.erfc(x / (sigma * math.sqrt(2)))

    total = 0.0
    for i, a in enumerate(levels):
        for j in range(len(levels)):
            if j == i:
                continue  # no bit errors in the own region
            # Both tails taken on the far side of the point: no cancellation in the tails.
            if j > i:
                p = q(edges[j] - a) - q(edges[j + 1] - a)
            else:
                p = q(a - edges[j + 1]) - q(a - edges[j])
            total += p * int(np.sum(c.level_bits[i] != c.level_bits[j]))
    return total / (len(levels) * c.axis_bits)


@pytest.mark.parametrize("mod", ALL)
@pytest.mark.parametrize("esn0_db", [3.0, 12.0, 24.0])
def test_closed_form_matches_exact_region_sum(mod: Modulation, esn0_db: float) -> None:
    assert float(ber_awgn(mod, esn0_db)) == pytest.approx(_exact_pam_ber(mod, esn0_db), rel=1e-9, abs=1e-300)


def test_known_reference_points() -> None:
    # Textbook values: BPSK/QPSK at Eb/N0 = 9.6 dB give ~1e-5; 16QAM at Eb/N0 = 13.4 dB ~1e-5.
    assert float(ber_awgn(Modulation.BPSK, 9.59)) == pytest.approx(1e-5, rel=0.05)
    assert float(ber_awgn(Modulation.QPSK, 9.59 + 3.0103)) == pytest.approx(1e-5, rel=0.05)
    assert esn0_db_for_ber(Modulation.QAM16, 1e-5) - 6.0206 == pytest.approx(13.44, abs=0.05)


def _simulated_ber(mod: Modulation, esn0_db: float, n_bits: int, rng: np.random.Generator) -> float:
    c = Constellation.of(mod)
    n_bits -= n_bits % c.bits_per_symbol
    bits = rng.integers(0, 2, n_bits, dtype=np.uint8)
    sym = Mapper(c)(bits)
    n0 = 10 ** (-esn0_db / 10)  # Es = 1
    noise = rng.standard_normal((sym.size, 2)).view(np.complex128).reshape(-1) * math.sqrt(n0 / 2)
    return float(np.mean(HardDemapper(c)(sym + noise) != bits))


#: Target BERs and the bits simulated per point (>= ~1000 errors at the lowest target).
TARGETS = (1e-2, 1e-3, 1e-4)
BITS_PER_POINT = 2_000_000


@pytest.mark.parametrize("mod", ALL)
def test_ber_within_half_db_of_theory(mod: Modulation) -> None:
    rng = np.random.default_rng(1234 + mod.bits_per_symbol)
    for target in TARGETS:
        es_theory = esn0_db_for_ber(mod, target)
        grid = es_theory + np.array([-0.75, 0.0, 0.75])
        sims = np.array([_simulated_ber(mod, es, BITS_PER_POINT, rng) for es in grid])
        assert np.all(sims > 0) and np.all(np.diff(sims) < 0), (mod, target, sims)
        # Es/N0 where the simulated curve crosses the target (log-BER is ~linear locally).
        es_sim = float(np.interp(-math.log10(target), -np.log10(sims), grid))
        gap = abs(es_sim - es_theory)
        assert gap <= 0.5, f"{mod.value} at BER {target}: gap {gap:.3f} dB"
        # Far tighter in practice: a sanity bound that catches a wrong Es normalisation.
        assert gap <= 0.1, f"{mod.value} at BER {target}: gap {gap:.3f} dB"
