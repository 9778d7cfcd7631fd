"""Payloads through frames and the channel simulator: exactness, loss accounting, frame format.

The invariant under test everywhere: no byte marked valid differs from what was sent.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError, FrameError, SampleError
from common.modulation import Modulation
from common.phy.channel import Channel, ChannelConfig
from common.phy.config import PhyConfig
from common.phy.demodulator import Demodulator, PhyResult, demodulate_payload
from common.phy.frame import HEADER_BYTES, FrameHeader, geometry, section_layout
from common.phy.modulator import Modulator, modulate_payload
from common.phy.theory import esn0_db_for_ber

ALL = list(Modulation)
CFG = PhyConfig()


def _payload(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _corrupt_valid_bytes(result: PhyResult, sent: bytes) -> int:
    got = np.frombuffer(result.payload, dtype=np.uint8)
    ref = np.frombuffer(sent, dtype=np.uint8)
    assert got.size == ref.size
    return int(np.sum(result.valid & (got != ref)))


def _valid_from_frames(result: PhyResult) -> np.ndarray:
    mask = np.zeros(len(result.payload), dtype=bool)
    for f in result.frames:
        if f.crc_ok:
            mask[f.offset : f.offset + f.length] = True
    return mask


@pytest.mark.parametrize("mod", ALL)
def test_payload_bit_exact_through_impaired_channel(mod: Modulation) -> None:
    sent = _payload(50_000, seed=mod.bits_per_symbol)
    samples = modulate_payload(sent, mod, batch_id=41, config=CFG)
    assert samples.dtype == np.complex64
    channel = Channel(ChannelConfig(
        snr_db=45.0, fading="rayleigh", cfo=1.3e-3, timing_offset=0.37, start_offset=2000,
        start_jitter=3000, tail_samples=500, pluto=True, seed=7,
    ))
    received = channel(samples)
    result = demodulate_payload(channel.buffers(received), CFG)  # [buffers, size] accepted
    assert result.payload == sent
    assert result.valid.all() and result.complete
    assert result.batch_id == 41 and result.modulation is mod
    assert result.frames_total == math.ceil(50_000 / CFG.max_frame_payload)
    assert (result.frames_lost, result.frames_crc_failed, result.headers_failed) == (0, 0, 0)
    assert result.cfo == pytest.approx(1.3e-3, abs=2e-5)
    assert result.valid_ranges() == [(0, 50_000)]


@pytest.mark.parametrize("mod", ALL)
def test_low_snr_drops_frames_but_never_passes_corruption(mod: Modulation) -> None:
    sent = _payload(30_000, seed=10 + mod.bits_per_symbol)
    # Around BER 1e-4 for this modulation: ~1 bit error per 8 kbit frame, so roughly half
    # the frames fail their CRC while the header (BPSK) still decodes.
    snr = esn0_db_for_ber(mod, 1e-4)
    channel = Channel(ChannelConfig(snr_db=snr, cfo=-7e-4, timing_offset=0.61, start_offset=333,
                                    pluto=True, seed=11))
    result = Demodulator(CFG)(channel(Modulator(CFG)(sent, mod, 9)), expected_batch_id=9)
    assert result.frames_total == math.ceil(30_000 / CFG.max_frame_payload)
    assert 0 < result.frames_lost < result.frames_total
    assert result.frames_crc_failed > 0
    assert result.frames_lost >= result.frames_crc_failed
    assert _corrupt_valid_bytes(result, sent) == 0
    assert np.array_equal(result.valid, _valid_from_frames(result))
    lost_bytes = np.frombuffer(result.payload, dtype=np.uint8)[~result.valid]
    assert not lost_bytes.any()  # lost bytes are zero-filled
    good = sum(1 for f in result.frames if f.crc_ok)
    assert good == result.frames_total - result.frames_lost
    assert result.snr_db == pytest.approx(snr, abs=1.0)


def test_snr_estimate_tracks_channel() -> None:
    sent = _payload(8_000)
    tx, rx = Modulator(CFG), Demodulator(CFG)
    for snr in (12.0, 20.0, 28.0):
        channel = Channel(ChannelConfig(snr_db=snr, cfo=2e-4, timing_offset=0.2, seed=3))
        result = rx(channel(tx(sent, Modulation.BPSK, 1)))
        assert result.complete
        assert result.snr_db == pytest.approx(snr, abs=0.5)
        per_frame = [f.snr_db for f in result.frames]
        assert max(per_frame) - min(per_frame) < 1.5


def test_time_varying_fading_is_tracked() -> None:
    sent = _payload(20_000, seed=5)
    channel = Channel(ChannelConfig(snr_db=40.0, fading="rician", rician_k=4.0, doppler=1e-5,
                                    cfo=5e-4, timing_offset=0.8, seed=5))
    result = demodulate_payload(channel(modulate_payload(sent, Modulation.QAM64, 3, CFG)), CFG)
    assert result.payload == sent and result.complete


def test_lost_last_frame_still_gives_total_length() -> None:
    sent = _payload(5_000, seed=2)
    samples = modulate_payload(sent, Modulation.QPSK, 77, CFG)
    cut = samples[: int(samples.size * 0.85)]  # the burst is cut inside the last frame
    result = demodulate_payload(cut, CFG)
    assert len(result.payload) == 5_000 and result.frames_total == 5
    assert result.frames_lost == 1 and not result.valid[4096:].any() and result.valid[:4096].all()
    assert result.lost_indices() == [4]
    assert result.payload[:4096] == sent[:4096]


def test_missing_first_frames_and_ranges() -> None:
    sent = _payload(4_000, seed=3)
    tx = Modulator(CFG)
    samples = tx(sent, Modulation.QAM16, 5)
    # Silence the first frame's preamble and header: it is lost without a trace.
    samples[CFG.guard_symbols * 4 : CFG.guard_symbols * 4 + 1200] = 0
    result = Demodulator(CFG)(samples)
    assert result.frames_lost == 1 and result.frames_crc_failed == 0
    assert result.lost_indices() == [0]
    assert result.valid_ranges() == [(1024, 4000)]
    assert result.payload[1024:] == sent[1024:]


def test_corrupted_data_is_dropped_and_counted() -> None:
    sent = _payload(3_000, seed=4)
    samples = Modulator(CFG)(sent, Modulation.QAM16, 8)
    geo = geometry(CFG, Modulation.QAM16, 1024)
    # Hit the middle of frame 1's data section: its header survives, its CRC-32 must fail.
    frame_start = (CFG.guard_symbols * 2 + geo.total) * 4
    middle = frame_start + (geo.preamble + geo.header.length + geo.data.length // 2) * 4
    samples[middle : middle + 40] *= -1
    result = Demodulator(CFG)(samples)
    assert result.frames_crc_failed == 1 and result.frames_lost == 1
    assert result.lost_indices() == [1]
    assert result.valid_ranges() == [(0, 1024), (2048, 3000)]
    assert _corrupt_valid_bytes(result, sent) == 0


def test_other_batches_are_ignored() -> None:
    a, b = _payload(1500, seed=6), _payload(1500, seed=7)
    tx = Modulator(CFG)
    samples = np.concatenate([tx(a, Modulation.QPSK, 1), tx(b, Modulation.QPSK, 2)])
    result = Demodulator(CFG)(samples, expected_batch_id=2)
    assert result.payload == b and result.frames_foreign == 2 and result.batch_id == 2


def test_empty_payload_round_trip() -> None:
    result = demodulate_payload(modulate_payload(b"", Modulation.QAM256, 4, CFG), CFG)
    assert result.payload == b"" and result.frames_total == 1 and result.complete


def test_noise_only_gives_an_empty_result() -> None:
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(200_000) + 1j * rng.standard_normal(200_000)).astype(np.complex64)
    for samples in (noise, np.zeros(50_000, dtype=np.complex64), np.zeros(10, dtype=np.complex64)):
        result = demodulate_payload(samples, CFG)
        assert result.batch_id is None and result.payload == b"" and result.frames_total == 0
        assert math.isnan(result.snr_db)


def test_transmitter_output_levels() -> None:
    for mod in ALL:
        x = modulate_payload(_payload(3000), mod, 1, CFG)
        active = x[np.abs(x) > 0]
        assert max(np.abs(x.real).max(), np.abs(x.imag).max()) <= 1.0
        rms = math.sqrt(float(np.mean(np.abs(active) ** 2)))
        assert rms == pytest.approx(CFG.tx_rms, rel=0.1)


def test_input_validation() -> None:
    with pytest.raises(ConfigError, match="batch_id"):
        modulate_payload(b"x", Modulation.QPSK, -1, CFG)
    with pytest.raises(ConfigError, match="max_payload_bytes"):
        modulate_payload(bytes(10), Modulation.QPSK, 0, PhyConfig(max_payload_bytes=5))
    with pytest.raises(SampleError, match="complex"):
        demodulate_payload(np.zeros(100), CFG)
    with pytest.raises(ConfigError, match="zc_root"):
        PhyConfig(zc_length=63, zc_root=21)
    with pytest.raises(ConfigError, match="header_modulation"):
        PhyConfig(header_modulation=Modulation.QAM16)


def test_header_round_trip_and_rejections() -> None:
    h = FrameHeader(Modulation.QAM64, 0xDEADBEEF, 3, 7, 6500, 3072, 1024)
    raw = h.encode()
    assert len(raw) == HEADER_BYTES == 22
    assert FrameHeader.decode(raw, CFG) == h
    flipped = bytearray(raw)
    flipped[5] ^= 0x10
    with pytest.raises(FrameError, match="CRC-16"):
        FrameHeader.decode(bytes(flipped), CFG)
    for bad, match in [
        (FrameHeader(Modulation.QPSK, 1, 7, 7, 10, 0, 10), "frame index"),
        (FrameHeader(Modulation.QPSK, 1, 0, 1, 10, 5, 10), "byte range"),
        (FrameHeader(Modulation.QPSK, 1, 0, 1, 10**9, 0, 10), "exceeds limit"),
        (FrameHeader(Modulation.QPSK, 1, 0, 1, 4000, 0, 2000), "exceeds 1024"),
    ]:
        with pytest.raises(FrameError, match=match):
            FrameHeader.decode(bad.encode(), CFG)


def test_pilot_layout() -> None:
    layout = section_layout(130, 64, 4)
    assert layout.length == 130 + 3 * 4
    assert layout.pilot.tolist() == [64, 65, 66, 67, 132, 133, 134, 135, 138, 139, 140, 141]
    assert np.array_equal(np.sort(np.concatenate([layout.pilot, layout.payload])), np.arange(142))


def test_phy_is_dsp_only() -> None:
    """``common.phy`` imports neither the radio driver, nor the transports, nor zmq."""
    code = (
        "import sys, common.phy, common.phy.modulator, common.phy.demodulator, common.phy.equaliser; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'zmq' "
        "or m.startswith(('common.radio', 'common.transport'))); "
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.stdout.strip() == ""
