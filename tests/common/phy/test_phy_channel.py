"""The channel simulator and the Pluto data contract, and SNR profiles for scenarios.

Statistics are checked on seeded draws with tolerances a few standard errors wide.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError, ProtocolError, SampleError, SampleOverflow
from common.modulation import Modulation
from common.phy.channel import Channel, ChannelConfig, SnrProfile, normalised_cfo
from common.phy.config import PhyConfig
from common.phy.contract import (
    RX_FULL_SCALE,
    int16_to_complex,
    quantise_rx,
    to_buffers,
    tx_to_int16,
)
from common.phy.demodulator import Demodulator
from common.phy.modulator import Modulator
from common.phy.theory import ber_awgn, esn0_db_for_ber


# -- Pluto data contract --------------------------------------------------------------
def test_tx_int16_scaling_is_exact() -> None:
    x = np.array([1.0 + 0j, -1.0 - 1.0j, 0.5 - 0.25j, 1e-5 + 0j], dtype=np.complex128)
    iq = tx_to_int16(x)
    assert iq.dtype == np.int16 and iq.shape == (4, 2)
    assert iq.tolist() == [[16384, 0], [-16384, -16384], [8192, -4096], [0, 0]]
    back = int16_to_complex(iq)
    assert back.dtype == np.complex128
    np.testing.assert_array_equal(back, [16384, -16384 - 16384j, 8192 - 4096j, 0])


@pytest.mark.parametrize("bad", [1.0001 + 0j, -1.0001j, 2.0 + 0j, complex(np.nan, 0), complex(0, np.inf)])
def test_tx_overflow_raises_instead_of_wrapping(bad: complex) -> None:
    with pytest.raises(SampleOverflow):
        tx_to_int16(np.array([0.1 + 0.1j, bad]))


def test_tx_contract_rejects_real_or_2d() -> None:
    with pytest.raises(SampleError, match="complex"):
        tx_to_int16(np.zeros(4))
    with pytest.raises(SampleError, match="1-D"):
        tx_to_int16(np.zeros((2, 2), dtype=np.complex64))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: int16_to_complex(np.zeros((3, 3), dtype=np.int16)), r"\[n, 2\]"),
        (lambda: to_buffers(np.zeros(10, dtype=np.complex128), 4), "whole number"),
        (lambda: Channel(ChannelConfig(snr_db=30.0)).buffers(np.zeros(10, dtype=np.complex128)), "whole"),
        (lambda: Channel(ChannelConfig(snr_db=30.0))(np.zeros(8)), "1-D complex"),
    ],
)
def test_malformed_samples_raise_sample_error(call: Callable[[], object], match: str) -> None:
    # Samples are untrusted input: a protocol error, so a bad burst costs that burst only.
    with pytest.raises(SampleError, match=match) as info:
        call()
    assert isinstance(info.value, ProtocolError) and info.value.code == "samples"


def test_bad_buffer_size_stays_a_config_error() -> None:
    with pytest.raises(ConfigError, match="buffer_size"):
        to_buffers(np.zeros(8, dtype=np.complex128), 0)


def test_rx_quantisation_is_12_bit_and_saturates() -> None:
    y = quantise_rx(np.array([0.4 + 0.6j, -3000.2 + 5000j, 2047.4 - 2048.6j, -1.5 + 2.5j]))
    assert y.dtype == np.complex128
    np.testing.assert_array_equal(y, [0 + 1j, -2048 + 2047j, 2047 - 2048j, -2 + 2j])


def test_channel_pluto_contract_output() -> None:
    rng = np.random.default_rng(0)
    x = (0.3 * (rng.standard_normal(10_000) + 1j * rng.standard_normal(10_000)) / 2).astype(np.complex64)
    x = np.clip(x.real, -1, 1) + 1j * np.clip(x.imag, -1, 1)
    ch = Channel(ChannelConfig(snr_db=30.0, pluto=True, rx_buffer_size=4096, start_offset=100, seed=1))
    y = ch(x)
    assert y.dtype == np.complex128
    assert y.size % 4096 == 0 and y.size >= 10_100
    assert ch.buffers(y).shape == (y.size // 4096, 4096)
    assert np.array_equal(y.real, np.rint(y.real)) and np.array_equal(y.imag, np.rint(y.imag))
    assert y.real.min() >= -RX_FULL_SCALE and y.real.max() <= RX_FULL_SCALE - 1
    # The burst sits at the configured level: -15 dBFS RMS of the 12-bit full scale.
    burst = y[100 : 100 + 10_000]
    level = 20 * math.log10(math.sqrt(float(np.mean(np.abs(burst) ** 2))) / RX_FULL_SCALE)
    assert level == pytest.approx(-15.0, abs=0.3)


def test_channel_pluto_contract_overflow() -> None:
    ch = Channel(ChannelConfig(pluto=True))
    with pytest.raises(SampleOverflow):
        ch(np.array([0.5 + 0.5j, 1.2 + 0j]))


def test_channel_pluto_saturates_strong_signals() -> None:
    # A burst with one strong peak: the RMS lands at -6 dBFS, so the peak clips at the ADC.
    x = np.full(64, 0.01 + 0.01j, dtype=np.complex64)
    x[10] = 0.99 - 0.99j
    ch = Channel(ChannelConfig(snr_db=math.inf, pluto=True, rx_level_dbfs=-6.0, rx_buffer_size=64,
                               phase=0.0))
    y = ch(x)
    assert y[10] == (RX_FULL_SCALE - 1) - RX_FULL_SCALE * 1j  # saturated, not wrapped
    assert 0 < y[0].real < 200


# -- impairments ----------------------------------------------------------------------
def test_awgn_level_matches_esn0() -> None:
    sps, snr = 4, 10.0
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(200_000) + 1j * rng.standard_normal(200_000)) * 0.2
    ch = Channel(ChannelConfig(snr_db=snr, samples_per_symbol=sps, phase=0.0, seed=4))
    noise = ch(x.astype(np.complex64)) - x
    es = float(np.mean(np.abs(x) ** 2)) * sps
    n0 = float(np.mean(np.abs(noise) ** 2))
    assert 10 * math.log10(es / n0) == pytest.approx(snr, abs=0.05)


def test_cfo_and_offsets() -> None:
    x = np.ones(4000, dtype=np.complex64)
    cfo = normalised_cfo(1500.0, 1e6)
    ch = Channel(ChannelConfig(snr_db=math.inf, cfo=cfo, phase=0.3, start_offset=123, tail_samples=7))
    y = ch(x)
    assert y.size == 123 + 4000 + 7
    assert not y[:123].any() and not y[-7:].any()
    phase = np.unwrap(np.angle(y[123 : 123 + 4000]))
    slope = np.polyfit(np.arange(4000), phase, 1)[0]
    assert slope / (2 * math.pi) == pytest.approx(1.5e-3, rel=1e-6)
    assert phase[0] == pytest.approx(0.3, abs=1e-6)


def test_start_jitter_is_random_and_bounded() -> None:
    ch = Channel(ChannelConfig(snr_db=math.inf, start_offset=10, start_jitter=50, phase=0.0, seed=2))
    leads = {int(np.flatnonzero(ch(np.ones(8, dtype=np.complex64)))[0]) for _ in range(40)}
    assert min(leads) >= 10 and max(leads) <= 60 and len(leads) > 10


def test_fractional_timing_offset_delays_band_limited_signal() -> None:
    n = np.arange(2000)
    x = np.exp(2j * np.pi * 0.05 * n).astype(np.complex64)
    ch = Channel(ChannelConfig(snr_db=math.inf, timing_offset=0.3, phase=0.0))
    y = ch(x)
    # A tone delayed by 0.3 samples lags in phase by 2 pi f 0.3.
    ratio = y[100:1900] / x[100:1900]
    np.testing.assert_allclose(np.angle(ratio), -2 * np.pi * 0.05 * 0.3, atol=1e-3)
    np.testing.assert_allclose(np.abs(ratio), 1.0, atol=1e-3)


@pytest.mark.parametrize(("fading", "k"), [("rayleigh", 0.0), ("rician", 3.0)])
def test_block_fading_statistics(fading: str, k: float) -> None:
    ch = Channel(ChannelConfig(snr_db=math.inf, fading=fading, rician_k=k, phase=0.0, seed=9))  # type: ignore[arg-type]
    gains = np.array([ch(np.ones(4, dtype=np.complex64))[0] for _ in range(4000)])
    power = np.abs(gains) ** 2
    assert power.mean() == pytest.approx(1.0, abs=0.06)
    # Rayleigh power is exponential (variance 1); Rician K has variance (1 + 2K) / (1 + K)^2.
    assert power.var() == pytest.approx((1 + 2 * k) / (1 + k) ** 2, rel=0.15)


def test_block_samples_changes_gain_per_block() -> None:
    ch = Channel(ChannelConfig(snr_db=math.inf, fading="rayleigh", block_samples=100, phase=0.0, seed=1))
    g = ch(np.ones(1000, dtype=np.complex64))
    blocks = g.reshape(10, 100)
    assert np.allclose(blocks, blocks[:, :1])
    assert len({complex(b) for b in blocks[:, 0]}) == 10


def test_doppler_fading_is_continuous_with_jakes_correlation() -> None:
    fd = 1e-3
    ch = Channel(ChannelConfig(snr_db=math.inf, fading="rayleigh", doppler=fd, phase=0.0, seed=6))
    g = np.concatenate([ch(np.ones(100_000, dtype=np.complex64)) for _ in range(4)])
    assert np.mean(np.abs(g) ** 2) == pytest.approx(1.0, abs=0.25)
    assert np.max(np.abs(np.diff(g))) < 0.05  # smooth, also across call boundaries
    # Autocorrelation follows J0(2 pi fd lag): strong at a short lag, ~0 at the first null.
    def corr(lag: int) -> float:
        return float(np.abs(np.mean(g[lag:] * np.conj(g[:-lag]))) / np.mean(np.abs(g) ** 2))
    assert corr(20) > 0.9
    assert corr(383) < 0.25  # J0 first zero at 2.405 / (2 pi fd)


def test_same_seed_same_channel() -> None:
    x = np.ones(500, dtype=np.complex64)
    cfg = ChannelConfig(snr_db=5.0, fading="rayleigh", start_jitter=30, seed=42)
    assert np.array_equal(Channel(cfg)(x), Channel(cfg)(x))
    assert not np.array_equal(Channel(cfg)(x), Channel(ChannelConfig(snr_db=5.0, seed=43))(x))


@pytest.mark.parametrize(
    ("field", "value"),
    [("fading", "nakagami"), ("timing_offset", 1.0), ("cfo", 0.6), ("doppler", -1e-3),
     ("rician_k", -1.0), ("start_offset", -1), ("rx_level_dbfs", 0.0), ("snr_db", math.nan)],
)
def test_channel_config_validation(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        ChannelConfig(**{field: value})  # type: ignore[arg-type]


def test_doppler_and_block_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="exclusive"):
        ChannelConfig(fading="rayleigh", doppler=1e-4, block_samples=100)


# -- full chain implementation loss ---------------------------------------------------
@pytest.mark.parametrize("mod", [Modulation.QPSK, Modulation.QAM16, Modulation.QAM256])
def test_receiver_implementation_loss_below_one_db(mod: Modulation) -> None:
    """Waveform chain (RRC, sync, pilots, Pluto contract) vs the AWGN closed form."""
    cfg = PhyConfig()
    payload = np.random.default_rng(mod.bits_per_symbol).integers(0, 256, 40_000, dtype=np.uint8)
    reference = np.unpackbits(payload)
    es = esn0_db_for_ber(mod, 1e-3)
    channel = Channel(ChannelConfig(snr_db=es, cfo=9e-4, timing_offset=0.45, start_offset=500,
                                    pluto=True, seed=mod.bits_per_symbol))
    frames, _ = Demodulator(cfg).decode_frames(channel(Modulator(cfg)(payload.tobytes(), mod, 1)))
    errors = bits = 0
    for f in frames:
        got = np.unpackbits(np.frombuffer(f.payload, dtype=np.uint8))
        want = reference[8 * f.header.offset : 8 * (f.header.offset + f.header.length)]
        errors += int(np.sum(got != want))
        bits += got.size
    assert bits >= 0.9 * reference.size
    ber = errors / bits
    # Equivalent Es/N0 of the measured BER; the loss is how much less the receiver gets.
    loss = es - esn0_db_for_ber(mod, ber)
    assert loss < 1.0, f"{mod.value}: BER {ber:.2e}, implementation loss {loss:.2f} dB"
    assert float(ber_awgn(mod, es - 1.0)) > ber


# -- SNR profiles ---------------------------------------------------------------------
def test_profile_constant_and_steps() -> None:
    assert SnrProfile.parse("30").snr_at(0) == 30.0
    assert SnrProfile.parse(" 27.5 dB ").snr_at(99) == 27.5
    p = SnrProfile.parse("30 dB, drop 6 dB at batch 5")
    assert [p.snr_at(b) for b in (0, 4, 5, 50)] == [30.0, 30.0, 24.0, 24.0]
    q = SnrProfile.parse("30 dB, drop 6 dB at batch 5, rise 3 dB at batch 8, 12 dB at batch 10")
    assert [q.snr_at(b) for b in (4, 5, 8, 9, 10, 11)] == [30.0, 24.0, 27.0, 27.0, 12.0, 12.0]


def test_profile_trace(tmp_path: Path) -> None:
    text = "batch,snr_db\n# warm up\n0,30\n3, 24.5\n\n7,18\n"
    path = tmp_path / "trace.csv"
    path.write_text(text)
    p = SnrProfile.from_file(path)
    assert p.points == ((0, 30.0), (3, 24.5), (7, 18.0))
    assert [p.snr_at(b) for b in (0, 2, 3, 6, 7, 100)] == [30.0, 30.0, 24.5, 24.5, 18.0, 18.0]
    late = SnrProfile.parse("5,20\n9,10")
    assert late.snr_at(0) == 20.0  # before the first point, the first value holds


@pytest.mark.parametrize(
    "text",
    ["", "loud", "30 dB, drop at batch 5", "30, explode 3 dB at batch 2", "0,30\n0,20", "3,30\n1,20",
     "0,30\nfoo"],
)
def test_profile_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        SnrProfile.parse(text)


def test_profile_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        SnrProfile.from_file(tmp_path / "nope.csv")
    with pytest.raises(ConfigError):
        SnrProfile.constant(10.0).snr_at(-1)


def test_profile_drives_a_channel() -> None:
    profile = SnrProfile.parse("30 dB, drop 20 dB at batch 2")
    cfg = PhyConfig()
    payload = bytes(range(256)) * 8
    tx, rx = Modulator(cfg), Demodulator(cfg)
    channel = Channel(ChannelConfig(seed=1))
    ok = []
    for batch in range(4):
        result = rx(channel(tx(payload, Modulation.QAM64, batch), snr_db=profile.snr_at(batch)))
        ok.append(result.complete)
    assert ok == [True, True, False, False]
