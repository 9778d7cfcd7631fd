"""A fake ``adi`` module whose Plutos share one real-time "air", for over-the-air daemon tests.

Each device is the pyadi-iio fake of ``tests/fakes/adi.py`` (gain writes ignored unless
manual, the TX buffer length fixed at the first ``tx()``, ``rx()`` returning
``rx_buffer_size`` complex128 12-bit samples). Unlike that fake, time passes as on the
hardware: a sample exists at an instant, ``tx()`` queues its buffer on the air after what
is already there, and ``rx()`` blocks until its buffer's last sample has been "received",
so a receiver that starts late misses what came before. Idle time leaves stale buffers in
the kernel queue, returned at once, as on a real Pluto.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from tests.fakes.adi import KERNEL_BUFFERS, FakeAdiModule, FakePluto

#: RMS of the transmitted burst at full scale 1.0 (``PhyConfig.tx_rms``).
SIGNAL_RMS = 0.3
#: RMS of the received signal in ADC counts (12-bit, full scale 2048): about -15 dBFS.
RX_RMS = 360.0
TX_FULL_SCALE = 2.0**14


class Air:
    """One shared medium: bursts placed on a sample timeline, noise everywhere."""

    def __init__(self, sample_rate_hz: float, snr_db: float, *, cfo: float = 2e-4, seed: int = 0) -> None:
        self.fs = sample_rate_hz
        self.t0 = time.monotonic()
        self.snr_db = snr_db
        self.lock = threading.Lock()
        self.segments: list[tuple[int, np.ndarray]] = []
        self.tx_end = 0
        # The two LOs differ by ``cfo`` cycles/sample: a rotation continuous in absolute time,
        # starting from an arbitrary phase.
        self.cfo = cfo
        self.rng = np.random.default_rng(seed)
        self.phase = float(self.rng.uniform(0, 2 * np.pi))
        self.bursts = 0

    def now(self) -> int:
        return int((time.monotonic() - self.t0) * self.fs)

    def put(self, iq: np.ndarray) -> None:
        """Queue ``iq`` (int16 units, complex) right after whatever is already on the air."""
        burst = np.asarray(iq, dtype=np.complex128) / TX_FULL_SCALE
        with self.lock:
            start = max(self.now(), self.tx_end)
            self.segments.append((start, burst))
            self.tx_end = start + burst.size
            self.bursts += 1

    def window(self, start: int, n: int, signal_rms: float) -> np.ndarray:
        """What an antenna hears in samples [start, start + n): bursts plus noise, 12-bit."""
        out = np.zeros(n, dtype=np.complex128)
        with self.lock:
            segments = list(self.segments)
        for seg_start, burst in segments:
            lo, hi = max(start, seg_start), min(start + n, seg_start + burst.size)
            if lo < hi:
                out[lo - start : hi - start] += burst[lo - seg_start : hi - seg_start]
        out *= np.exp(1j * (self.phase + 2 * np.pi * self.cfo * np.arange(start, start + n)))
        # Es/N0 with 4 samples per symbol, relative to the burst's mean power.
        noise_power = signal_rms**2 * 4 / 10 ** (self.snr_db / 10)
        out += (self.rng.standard_normal(n) + 1j * self.rng.standard_normal(n)) * np.sqrt(noise_power / 2)
        gain = RX_RMS / signal_rms
        adc = np.clip(np.round(out.real * gain), -2048, 2047) + 1j * np.clip(np.round(out.imag * gain), -2048, 2047)
        return adc


class AirPluto(FakePluto):
    """The pyadi-iio fake of ``tests/fakes/adi.py``, whose buffers go to and come from the air."""

    def __init__(self, module: FakeAdiModule, uri: str) -> None:
        super().__init__(module, uri)
        self._read_pos: int | None = None

    @property
    def air(self) -> Air:
        module = self._module
        assert isinstance(module, AirModule)
        return module.air

    def tx(self, data: np.ndarray) -> None:
        super().tx(data)  # pyadi-iio's checks: fixed buffer length, cyclic mode, OSError injection
        self.air.put(np.asarray(data, dtype=np.complex128))

    def rx(self) -> np.ndarray:
        air, n = self.air, self.rx_buffer_size
        now = air.now()
        oldest = now - KERNEL_BUFFERS * n
        if self._read_pos is None or self._read_pos < oldest:
            # The kernel kept only the last few buffers while nobody read: those come first.
            self._read_pos = max(oldest, 0)
        start = self._read_pos
        self._read_pos += n
        wait = (start + n - now) / air.fs
        if wait > 0:
            time.sleep(wait)
        return air.window(start, n, SIGNAL_RMS)

    def rx_destroy_buffer(self) -> None:
        super().rx_destroy_buffer()
        self._read_pos = None


class AirModule(FakeAdiModule):
    """Install as ``sys.modules["adi"]``; every ``Pluto`` it makes shares ``air``."""

    def __init__(self, air: Air) -> None:
        self.air = air
        super().__init__(AirPluto)
