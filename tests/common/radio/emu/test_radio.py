"""``PlutoRadio`` over the real libiio 0.24 + pylibiio + pyadi-iio stack, against the emulator.

What the project's pyadi-iio fakes cannot show: settings as the driver rounds them, bits
through real buffers, a Pluto that goes away and comes back, and pylibiio's teardown order.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.errors import RadioError, RadioUnreachable
from common.modulation import Modulation
from common.radio.emu import Air, AirConfig, PlutoEmulator
from common.radio.loopback import loopback, wrong_bytes
from common.radio.pluto import PlutoConfig, PlutoRadio
from tests.common.radio.emu.conftest import needs_libiio

pytestmark = needs_libiio

ROOT = Path(__file__).resolve().parents[4]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
#: Captures a loopback may take while frames are missing and the ADC reports an overflow (a
#: stalled host, not a fault of the procedure under test).
ATTEMPTS = 5
PAYLOAD = np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes()


def _config(emu: PlutoEmulator, **kw: object) -> PlutoConfig:
    return PlutoConfig(uri=emu.uri, rx_buffer_size=16384, **kw)  # type: ignore[arg-type]


def test_settings_read_back_as_the_driver_rounds_them(emulator: PlutoEmulator) -> None:
    cfg = _config(emulator, sample_rate_hz=1_000_000, tx_gain_db=-20.1, gain_control_mode="manual",
                  rx_gain_db=40.0, tx_lo_hz=915_000_000, rx_lo_hz=915_000_000, rf_bandwidth_hz=1_500_000)
    with PlutoRadio(cfg) as radio:
        dev = radio.device
        assert dev.sample_rate == 1_000_000
        assert dev.tx_hardwaregain_chan0 == -20.0  # 0.25 dB steps
        assert dev.rx_hardwaregain_chan0 == 40 and dev.gain_control_mode_chan0 == "manual"
        assert abs(dev.tx_lo - 915_000_000) < 2 and dev.rx_rf_bandwidth == 1_500_000
    assert emulator.state.fir_enabled  # pyadi-iio's path to 1 MS/s goes through the FIR


@pytest.mark.parametrize("modulation", list(Modulation))
def test_loopback_is_bit_exact_at_every_modulation(emulator: PlutoEmulator, modulation: Modulation) -> None:
    with PlutoRadio(PlutoConfig(uri=emulator.uri)) as radio:  # the daemons' 65536-sample buffers
        run = loopback(radio, PAYLOAD, modulation, attempts=ATTEMPTS)
    assert run.result.complete, f"incomplete after {run.captures} capture(s), overflowed: {run.overflowed}"
    assert bytes(run.result.payload) == PAYLOAD
    assert abs(run.result.snr_db - 35.0) < 3.0


def test_loopback_does_not_need_cyclic_repetition() -> None:
    """The hardware test's procedure against a device that plays a cyclic buffer once."""
    with PlutoEmulator(Air(AirConfig(snr_db=30.0)), repeat_cyclic=False) as emu, PlutoRadio(PlutoConfig(uri=emu.uri)) as radio:
        run = loopback(radio, PAYLOAD, Modulation.QPSK, attempts=ATTEMPTS)
    assert run.result.complete, f"incomplete after {run.captures} capture(s), overflowed: {run.overflowed}"
    assert run.result.frames_total > 0 and wrong_bytes(run.result, PAYLOAD) == 0


def test_a_capture_that_lost_samples_says_so(emulator: PlutoEmulator) -> None:
    """The ADC core's status register, read through libiio, tells a gapped capture from a whole one."""
    # A ring of four 65536-sample blocks holds 262 ms at 1 MS/s: only a stall that long overflows.
    cfg = PlutoConfig(uri=emulator.uri, rx_buffer_size=1 << 16, sample_rate_hz=1_000_000)
    with PlutoRadio(cfg) as radio:
        radio.receive(1 << 16)
        assert radio.overflowed is False and radio.overflows == 0
        radio.flush()
        time.sleep(0.6)
        radio.receive(1 << 16, flush=False)
        assert radio.overflowed is True and radio.overflows == 1
        radio.receive(1 << 16, flush=False)  # reading the status cleared it
        assert radio.overflowed is False and radio.overflows == 1


def test_reconnect_rides_out_an_outage(emulator: PlutoEmulator) -> None:
    with PlutoRadio(_config(emulator, reconnect_delay_s=0.25, reconnect_window_s=10.0)) as radio:
        radio.receive(16384)
        t0 = time.monotonic()
        emulator.outage(2.0)  # the Pluto re-enumerates
        got = radio.receive(16384)
        elapsed = time.monotonic() - t0
    assert got.shape == (16384,) and radio.reconnects == 1
    assert 1.9 < elapsed < 6.0


def test_an_outage_longer_than_the_window_is_a_clear_error(emulator: PlutoEmulator) -> None:
    radio = PlutoRadio(_config(emulator, reconnect_delay_s=0.25, reconnect_window_s=1.5)).open()
    emulator.outage(60.0)
    t0 = time.monotonic()
    with pytest.raises(RadioUnreachable, match=r"unreachable for 1\.[5-9] s") as info:
        radio.transmit(np.zeros(100, dtype=np.complex64))
    assert 1.4 < time.monotonic() - t0 < 5.0
    assert isinstance(info.value, RadioError) and isinstance(info.value.__cause__, OSError)
    assert not radio.is_open


def _run(script: str, emu: PlutoEmulator) -> subprocess.CompletedProcess[str]:
    emu.faults.drop_writebuf = 1  # the TX push fails with EPIPE, as when the USB link drops
    return subprocess.run([sys.executable, str(SCRIPTS / script), emu.uri], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_keeping_a_failed_transmit_error_exits_cleanly(emulator: PlutoEmulator) -> None:
    proc = _run("keep_radio_error.py", emulator)
    assert proc.returncode == 0, proc.stderr
    assert "kept RadioError" in proc.stdout and "BrokenPipeError" in proc.stdout


def test_the_emulator_reproduces_pylibiios_crash(emulator: PlutoEmulator) -> None:
    """The hazard the adapter guards against: pyadi-iio alone, its OSError kept until exit."""
    proc = _run("keep_pyadi_error.py", emulator)
    assert "kept BrokenPipeError" in proc.stdout
    assert proc.returncode == -signal.SIGSEGV
