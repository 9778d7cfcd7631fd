"""A fake ``adi`` module mirroring pyadi-iio's documented behaviour, for tests without a radio.

Injected through the lazy import seam (``sys.modules["adi"]``) so no hardware or libiio is needed.
"""

from __future__ import annotations

import errno
import types
from typing import Any

import numpy as np

#: Value of every sample in a stale kernel buffer (a 12-bit extreme, never fresh data).
STALE = -2048 - 2048j
#: libiio's default number of kernel buffers, which hold stale data after idle.
KERNEL_BUFFERS = 4


class FakeAdiModule(types.ModuleType):
    """``adi`` stand-in with knobs for failure injection and a log of created devices."""

    def __init__(self, device_class: type[FakePluto] | None = None) -> None:
        super().__init__("adi")
        self.STALE = STALE
        self.devices: list[FakePluto] = []
        self.fail_open = 0  # next N constructions raise like pyadi-iio's "No device found"
        self.rx_oserrors = 0  # next N rx() calls raise OSError (libiio error)
        self.tx_oserrors = 0
        module = self
        base = device_class or FakePluto

        class Pluto(base):  # type: ignore[valid-type,misc]
            def __init__(self, uri: str = "", **kwargs: Any) -> None:
                super().__init__(module, uri)

        self.Pluto = Pluto


class FakePluto:
    """Mirrors the pyadi-iio 0.0.21 ``ad9364``/``Pluto`` behaviour the adapter relies on.

    * ``rx_hardwaregain_chan0`` writes are ignored unless ``gain_control_mode_chan0`` is
      ``"manual"`` (ad936x.py setter).
    * ``tx()`` fixes the TX buffer length at the first call; a different length raises
      until ``tx_destroy_buffer()`` (rx_tx.py ``tx_core.tx``).
    * In cyclic mode a second ``tx()`` raises until ``tx_destroy_buffer()``; changing
      ``tx_cyclic_buffer`` with a live buffer raises.
    * ``rx()`` returns one complex array of ``rx_buffer_size`` samples (complex128 built
      from int16 I/Q); after creation or idle the first ``KERNEL_BUFFERS`` are stale.
    * ``sample_rate`` below 521 kS/s raises ValueError.
    * ``tx()`` casts with ``astype(int16)``, which wraps: the adapter must not rely on it.
    """

    def __init__(self, module: FakeAdiModule, uri: str) -> None:
        if module.fail_open > 0:
            module.fail_open -= 1
            raise Exception("No device found")
        self._module = module
        self.uri = uri
        self.closed = False
        self._sample_rate = 30_720_000
        self.rx_lo = 2_400_000_000
        self.tx_lo = 2_450_000_000
        self.rx_rf_bandwidth = 18_000_000
        self.tx_rf_bandwidth = 18_000_000
        self.gain_control_mode_chan0 = "slow_attack"
        self._rx_gain = 71.0
        self.tx_hardwaregain_chan0 = -10.0
        self.rx_buffer_size = 1024
        self._tx_cyclic = False
        self.rx_enabled_channels = [0]
        self.tx_enabled_channels = [0]
        self._txbuf: bool = False
        self._tx_buffer_size: int | None = None
        self.pushed: list[np.ndarray] = []
        self.tx_destroyed = 0
        self.rx_destroyed = 0
        self._stale = KERNEL_BUFFERS
        self._fresh_counter = 0
        self.rx_calls = 0
        module.devices.append(self)

    # -- properties with pyadi-iio semantics --------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @sample_rate.setter
    def sample_rate(self, rate: int) -> None:
        if rate < 521e3:
            raise ValueError("Error: Does not currently support sample rates below 521e3")
        self._sample_rate = int(rate)

    @property
    def rx_hardwaregain_chan0(self) -> float:
        return self._rx_gain

    @rx_hardwaregain_chan0.setter
    def rx_hardwaregain_chan0(self, value: float) -> None:
        if self.gain_control_mode_chan0 == "manual":
            self._rx_gain = float(value)

    @property
    def tx_cyclic_buffer(self) -> bool:
        return self._tx_cyclic

    @tx_cyclic_buffer.setter
    def tx_cyclic_buffer(self, value: bool) -> None:
        if self._txbuf:
            raise Exception(
                "TX buffer exists; it must be destroyed then recreated to modify tx_cyclic_buffer"
            )
        self._tx_cyclic = bool(value)

    # -- buffers ----------------------------------------------------------------------
    def tx(self, data: np.ndarray) -> None:
        if self._module.tx_oserrors > 0:
            self._module.tx_oserrors -= 1
            raise OSError(errno.EPIPE, "Broken pipe")
        if self._txbuf and self._tx_cyclic:
            raise Exception(
                "TX buffer has been submitted in cyclic mode. "
                "To push more data the tx buffer must be destroyed first."
            )
        raw = np.empty(2 * len(data), dtype=np.int16)
        raw[0::2] = np.real(data).astype(np.int16)  # wraps, as numpy does
        raw[1::2] = np.imag(data).astype(np.int16)
        if not self._txbuf:
            self._tx_buffer_size = len(data)
            self._txbuf = True
        if len(data) != self._tx_buffer_size:
            raise Exception(
                "Buffer length different than data length. Cannot change buffer length on the fly"
            )
        self.pushed.append(raw)

    def tx_destroy_buffer(self) -> None:
        self._txbuf = False
        self.tx_destroyed += 1

    def rx(self) -> np.ndarray:
        self.rx_calls += 1
        if self._module.rx_oserrors > 0:
            self._module.rx_oserrors -= 1
            raise OSError(errno.ETIMEDOUT, "Connection timed out")
        n = self.rx_buffer_size
        if self._stale > 0:
            self._stale -= 1
            return np.full(n, STALE, dtype=np.complex128)
        i = (self._fresh_counter + np.arange(n)) % 2000
        self._fresh_counter += n
        return i.astype(np.int16) + 1j * (-i).astype(np.int16)

    def rx_destroy_buffer(self) -> None:
        self.rx_destroyed += 1
        self._stale = 0  # the kernel queue goes with the buffer

    def idle(self) -> None:
        """Test hook: time passes without reads, so the kernel buffers fill with old data."""
        self._stale = KERNEL_BUFFERS

    def close(self) -> None:
        self.closed = True
