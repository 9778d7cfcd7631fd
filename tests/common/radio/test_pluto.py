"""PlutoRadio against a fake pyadi-iio, and the real adi.Pluto against the shared XML context.

Hardware tests (real Pluto loopback) are marked ``hardware`` and skipped by default.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.errors import ConfigError, RadioError, RadioUnreachable, SampleError, SampleOverflow
from common.phy.contract import TX_FULL_SCALE
from common.radio.pluto import PlutoConfig, PlutoRadio
from tests.common.radio.emu.conftest import real_stack_missing

REPO_ROOT = Path(__file__).resolve().parents[3]
PLUTO_XML = REPO_ROOT.parent / "shared" / "sdr" / "pluto.xml"


def _radio(**kw: object) -> PlutoRadio:
    """A radio whose sleeps are recorded and advance a fake clock instead of waiting."""
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    radio = PlutoRadio(PlutoConfig(**kw), sleep=sleep, clock=lambda: now[0])  # type: ignore[arg-type]
    radio.sleeps = sleeps  # type: ignore[attr-defined]
    return radio


def test_settings_are_applied_as_properties(fake_adi: Any) -> None:
    cfg = dict(uri="ip:pluto.test", tx_lo_hz=915_000_000, rx_lo_hz=915_000_000,
               sample_rate_hz=1_000_000, rf_bandwidth_hz=1_500_000, tx_gain_db=-20.0,
               gain_control_mode="manual", rx_gain_db=42.0, rx_buffer_size=4096,
               tx_buffer_size=8192)
    with _radio(**cfg) as radio:
        dev = fake_adi.devices[0]
        assert radio.device is dev
        assert dev.uri == "ip:pluto.test"
        assert (dev.rx_lo, dev.tx_lo) == (915_000_000, 915_000_000)
        assert dev.sample_rate == 1_000_000
        assert (dev.rx_rf_bandwidth, dev.tx_rf_bandwidth) == (1_500_000, 1_500_000)
        assert dev.gain_control_mode_chan0 == "manual"
        assert dev.rx_hardwaregain_chan0 == 42.0
        assert dev.tx_hardwaregain_chan0 == -20.0
        assert dev.rx_buffer_size == 4096
        assert dev.tx_cyclic_buffer is False
    assert dev.closed and not radio.is_open


def test_rx_gain_only_takes_effect_in_manual_mode(fake_adi: Any) -> None:
    # pyadi-iio ignores gain writes in AGC modes: the device keeps its own gain.
    with _radio(gain_control_mode="slow_attack", rx_gain_db=10.0):
        dev = fake_adi.devices[0]
        assert dev.gain_control_mode_chan0 == "slow_attack"
        assert dev.rx_hardwaregain_chan0 == 71.0
    with _radio(gain_control_mode="manual", rx_gain_db=10.0):
        assert fake_adi.devices[1].rx_hardwaregain_chan0 == 10.0


def test_transmit_uses_one_fixed_buffer_length(fake_adi: Any) -> None:
    rng = np.random.default_rng(0)
    with _radio(tx_buffer_size=1000) as radio:
        for n in (10, 999, 1000, 2500):  # pyadi-iio would refuse a second, different length
            x = (rng.uniform(-0.9, 0.9, n) + 1j * rng.uniform(-0.9, 0.9, n)).astype(np.complex64)
            pushed = radio.transmit(x)
            assert pushed == -(-n // 1000)
        dev = fake_adi.devices[0]
        assert all(buf.size == 2 * 1000 for buf in dev.pushed)
        # The last transmission's samples arrive exactly, scaled to +-2**14, zero padded.
        tail = np.concatenate(dev.pushed[-3:])
        i, q = tail[0::2], tail[1::2]
        assert np.array_equal(i[:n], np.rint(x.real.astype(np.float64) * TX_FULL_SCALE))
        assert np.array_equal(q[:n], np.rint(x.imag.astype(np.float64) * TX_FULL_SCALE))
        assert not i[n:].any() and not q[n:].any()


def test_transmit_overflow_is_an_error_not_a_wrap(fake_adi: Any) -> None:
    with _radio() as radio:
        with pytest.raises(SampleOverflow):
            radio.transmit(np.array([0.5 + 0.5j, 1.001 + 0j]))
        assert fake_adi.devices[0].pushed == []  # nothing reached the device


def test_cyclic_retransmit_destroys_the_buffer_first(fake_adi: Any) -> None:
    with _radio(tx_cyclic=True, tx_buffer_size=256) as radio:
        radio.transmit(np.full(100, 0.25 + 0j))
        radio.transmit(np.full(200, -0.25 + 0j))  # fake raises without tx_destroy_buffer
        dev = fake_adi.devices[0]
        assert len(dev.pushed) == 2 and dev.tx_destroyed >= 2
        with pytest.raises(SampleError, match="cyclic"):
            radio.transmit(np.zeros(257, dtype=np.complex64))
        radio.stop_transmit()
        assert dev.tx_destroyed >= 3


def test_receive_flushes_stale_buffers(fake_adi: Any) -> None:
    with _radio(rx_buffer_size=512) as radio:
        got = radio.receive(1500)
        assert got.dtype == np.complex128 and got.shape == (3 * 512,)
        assert not np.any(got == fake_adi.STALE)
        assert np.array_equal(got[:5].real, [0, 1, 2, 3, 4])
        dev = fake_adi.devices[0]
        dev.idle()
        again = radio.receive(512)
        assert not np.any(again == fake_adi.STALE)
        # Without flushing the kernel's old buffers come first: what flush protects against.
        dev.idle()
        stale = radio.receive(512, flush=False)
        assert np.all(stale == fake_adi.STALE)


def test_receive_reconnects_after_oserror(fake_adi: Any) -> None:
    with _radio(rx_buffer_size=256, reconnect_attempts=2, reconnect_delay_s=0.25) as radio:
        fake_adi.rx_oserrors = 1
        got = radio.receive(256)
        assert got.shape == (256,) and not np.any(got == fake_adi.STALE)
        assert radio.reconnects == 1
        assert len(fake_adi.devices) == 2 and fake_adi.devices[0].closed
        assert radio.device is fake_adi.devices[1]
        assert radio.sleeps == [0.25]  # type: ignore[attr-defined]
        # Settings are re-applied on the new connection.
        assert fake_adi.devices[1].rx_buffer_size == 256


def test_transmit_reconnects_after_oserror(fake_adi: Any) -> None:
    with _radio(tx_buffer_size=64) as radio:
        fake_adi.tx_oserrors = 1
        assert radio.transmit(np.full(64, 0.1 + 0.1j)) == 1
        assert radio.reconnects == 1 and len(fake_adi.devices[1].pushed) == 1


def test_persistent_oserror_becomes_radio_error(fake_adi: Any) -> None:
    with _radio(reconnect_attempts=2) as radio:
        fake_adi.rx_oserrors = 10
        with pytest.raises(RadioError) as info:
            radio.receive(10)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.ETIMEDOUT
        assert radio.reconnects == 2


def test_reconnect_backs_off_through_an_outage(fake_adi: Any) -> None:
    # The radio is away for 5 reconnect attempts (a USB re-enumeration): ridden out.
    with _radio(rx_buffer_size=64, reconnect_delay_s=0.5, reconnect_window_s=10.0) as radio:
        fake_adi.rx_oserrors = 1
        fake_adi.fail_open = 5
        assert radio.receive(64).shape == (64,)
        assert radio.reconnects == 1
        assert radio.sleeps == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]  # type: ignore[attr-defined]


def test_reconnect_gives_up_after_the_window(fake_adi: Any) -> None:
    with _radio(reconnect_delay_s=0.5, reconnect_window_s=6.0) as radio:
        fake_adi.rx_oserrors = 1
        fake_adi.fail_open = 1000
        with pytest.raises(RadioUnreachable, match=r"reconnecting failed.*unreachable for 6\.0 s") as info:
            radio.receive(10)
        assert isinstance(info.value.__cause__, OSError)
        assert sum(radio.sleeps) == pytest.approx(6.0)  # type: ignore[attr-defined]
        assert not radio.is_open


def test_a_failed_call_leaves_no_buffer_and_a_detached_cause(fake_adi: Any) -> None:
    with _radio(reconnect_attempts=0) as radio:
        dev = fake_adi.devices[0]
        fake_adi.tx_oserrors = 1
        with pytest.raises(RadioError) as info:
            radio.transmit(np.zeros(16, dtype=np.complex64))
        cause = info.value.__cause__
        assert isinstance(cause, OSError) and cause.__traceback__ is None and cause.__context__ is None
        assert dev.tx_destroyed >= 1 and dev.rx_destroyed >= 1 and dev.closed and not radio.is_open


def test_open_failure_translated(fake_adi: Any) -> None:
    fake_adi.fail_open = 1
    with pytest.raises(RadioError, match="cannot open Pluto") as info:
        PlutoRadio(PlutoConfig()).open()
    assert str(info.value.__cause__) == "No device found"


def test_bad_device_setting_translated(fake_adi: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A value pyadi-iio itself rejects (PlutoConfig's bounds are wider than this fake's).
    monkeypatch.setattr("common.radio.pluto.SAMPLE_RATE_RANGE_HZ", (1, 10**9))
    with pytest.raises(RadioError, match="cannot configure") as info:
        PlutoRadio(PlutoConfig(sample_rate_hz=100_000)).open()
    assert isinstance(info.value.__cause__, ValueError)
    assert fake_adi.devices[0].closed


def test_missing_pyadi_is_a_radio_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "adi", None)  # makes `import adi` raise ImportError
    with pytest.raises(RadioError, match="semalign\\[sdr\\]"):
        PlutoRadio(PlutoConfig()).open()


def test_use_before_open_is_an_error() -> None:
    radio = PlutoRadio(PlutoConfig())
    with pytest.raises(RadioError, match="not open"):
        radio.receive(10)


def test_receive_checks_buffer_shape(fake_adi: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with _radio(rx_buffer_size=128, flush_reads=0) as radio:
        dev = fake_adi.devices[0]
        monkeypatch.setattr(dev, "rx", lambda: np.zeros(127, dtype=np.complex128))
        with pytest.raises(RadioError, match="expected 128"):
            radio.receive(128)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tx_lo_hz", 10_000_000),
        ("sample_rate_hz", 100_000),
        ("rf_bandwidth_hz", 100e6),
        ("tx_gain_db", 3.0),
        ("rx_gain_db", 80.0),
        ("gain_control_mode", "auto"),
        ("rx_buffer_size", 0),
        ("tx_buffer_size", 1.5),
        ("flush_reads", -1),
        ("uri", ""),
    ],
)
def test_config_validation(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        PlutoConfig(**{field: value})  # type: ignore[arg-type]


def _have_real_stack() -> str | None:
    missing = real_stack_missing()
    if missing is None and not PLUTO_XML.is_file():
        return f"{PLUTO_XML} is missing"
    return missing


_SKIP_REAL = _have_real_stack()


@pytest.mark.skipif(_SKIP_REAL is not None, reason=_SKIP_REAL or "")
def test_real_pluto_constructs_from_xml_context() -> None:
    import adi
    import iio

    ctx = iio.XMLContext(str(PLUTO_XML))
    assert {"ad9361-phy", "cf-ad9361-lpc", "cf-ad9361-dds-core-lpc"} <= {d.name for d in ctx.devices}
    dev = adi.Pluto(ctx)
    assert dev._ctrl.name == "ad9361-phy"
    assert dev._rxadc.name == "cf-ad9361-lpc"
    assert dev._txdac.name == "cf-ad9361-dds-core-lpc"
    assert dev.rx_buffer_size == 1024
    # Attribute I/O is not served by an XML context: pyadi-iio surfaces ENOSYS as OSError.
    with pytest.raises(OSError) as info:
        dev.sample_rate = 2_000_000
    assert info.value.errno == errno.ENOSYS
    dev.close()


@pytest.mark.skipif(_SKIP_REAL is not None, reason=_SKIP_REAL or "")
def test_real_adi_through_the_adapter_translates_enosys() -> None:
    # Real pyadi-iio + libiio behind PlutoRadio: construction succeeds, the first
    # setting fails with ENOSYS, and the adapter reports it as a RadioError.
    radio = PlutoRadio(PlutoConfig(uri=f"xml:{PLUTO_XML}"))
    with pytest.raises(RadioError, match="cannot configure") as info:
        radio.open()
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSYS
    assert not radio.is_open


@pytest.mark.hardware
def test_hardware_loopback() -> None:
    """Real Pluto, TX cabled to RX through an attenuator (or antennas at short range).

    The burst is pushed once while the capture runs (``tests/common/radio/loopback.py``),
    so the test decodes whatever the burst length and whether or not the device repeats a
    cyclic buffer.
    """
    from common.modulation import Modulation
    from common.radio.loopback import loopback, wrong_bytes

    uri = os.environ.get("SEMALIGN_PLUTO_URI", "ip:192.168.2.1")
    payload = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    with PlutoRadio(PlutoConfig(uri=uri, sample_rate_hz=2_000_000)) as radio:
        run = loopback(radio, payload, Modulation.QPSK, attempts=3)
    assert run.result.frames_total > 0, f"no frame found in {run.captures} capture(s)"
    assert wrong_bytes(run.result, payload) == 0


def test_a_device_without_a_status_register_cannot_say_whether_a_capture_overflowed(fake_adi: Any) -> None:
    with _radio(uri="ip:fake", rx_buffer_size=1024) as radio:
        radio.receive(10)
    assert radio.overflowed is None and radio.overflows == 0
