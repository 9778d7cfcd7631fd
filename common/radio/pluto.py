"""``PlutoRadio``: an ADALM-Pluto behind pyadi-iio, configured from a frozen ``PlutoConfig``.

``adi`` is imported lazily on open; every pyadi-iio/libiio failure becomes a ``RadioError``
whose cause is detached from libiio's frames, so no libiio object outlives a failed call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError, RadioError, RadioUnreachable, SampleError
from common.log import get_logger
from common.phy.contract import int16_to_complex, tx_to_int16

log = get_logger("semalign.radio")

T = TypeVar("T")

GAIN_CONTROL_MODES = ("manual", "slow_attack", "fast_attack", "hybrid")
#: AD9363 (Pluto) limits as documented by Analog Devices; the LO range is the AD9364's,
#: which most Plutos accept after the well-known firmware setting.
LO_RANGE_HZ = (70_000_000, 6_000_000_000)
#: pyadi-iio rejects rates below 521 kS/s (no FIR decimation); 61.44 MS/s is the AD936x max.
SAMPLE_RATE_RANGE_HZ = (521_000, 61_440_000)
RF_BANDWIDTH_RANGE_HZ = (200_000, 56_000_000)
TX_GAIN_RANGE_DB = (-89.75, 0.0)
RX_GAIN_RANGE_DB = (-3.0, 71.0)
#: libiio keeps 4 kernel buffers by default; after idle they hold stale samples.
DEFAULT_FLUSH_READS = 4
#: How long a lost Pluto is waited for: a USB re-enumeration (reset, brown-out, a cable
#: pulled and plugged back) takes several seconds before the network gadget answers again.
DEFAULT_RECONNECT_WINDOW_S = 10.0
#: Reconnect attempts back off from ``reconnect_delay_s`` by x2 up to this pause.
MAX_RECONNECT_DELAY_S = 2.0
#: Status register of the AXI ADC and DAC cores (``cf-ad9361-lpc``, ``cf-ad9361-dds-core-lpc``),
#: reached through their ``direct_reg_access`` debug attribute; writing a bit clears it.
STATUS_REG = 0x80000088
#: ADC status bit: the DMA found no free block and dropped samples (the host read too slowly).
ADC_OVERFLOW = 0x4


@dataclasses.dataclass(frozen=True)
class PlutoConfig:
    """Radio settings, applied to ``adi.Pluto`` properties in a fixed order on open.

    Attributes
    ----------
    uri : str
        libiio URI: ``"ip:192.168.2.1"`` (USB network gadget), ``"usb:1.5.5"``, ...
    tx_lo_hz, rx_lo_hz : int
        Carrier frequencies (TX and RX of one link must match).
    sample_rate_hz : int
        Baseband sample rate of both paths.
    rf_bandwidth_hz : int
        Analog filter bandwidth of both paths (about the signal bandwidth:
        ``sample_rate * (1 + rolloff) / sps``, with some room).
    tx_gain_db : float
        TX attenuation, -89.75 .. 0 dB (``tx_hardwaregain_chan0``).
    gain_control_mode : str
        ``manual``, ``slow_attack``, ``fast_attack`` or ``hybrid``.
    rx_gain_db : float
        RX gain, applied only in ``manual`` mode (pyadi-iio ignores it otherwise).
    rx_buffer_size : int
        Samples per ``rx()`` call.
    tx_buffer_size : int
        Fixed TX buffer length: pyadi-iio fixes it at the first ``tx()``, so every
        transmission is cut into buffers of exactly this length (the last zero-padded).
    tx_cyclic : bool
        Repeat the (single-buffer) transmission until the next one.
    flush_reads : int
        ``rx()`` calls discarded before each receive: stale kernel buffers.
    reconnect_attempts : int
        Times an operation is retried on a new connection after an ``OSError``.
    reconnect_delay_s : float
        Pause before the first reconnect; later ones back off x2 up to
        ``MAX_RECONNECT_DELAY_S``.
    reconnect_window_s : float
        How long reconnecting goes on while the radio does not answer; then the operation
        fails with ``RadioUnreachable``.
    """

    uri: str = "ip:192.168.2.1"
    tx_lo_hz: int = 2_400_000_000
    rx_lo_hz: int = 2_400_000_000
    sample_rate_hz: int = 2_000_000
    rf_bandwidth_hz: int = 2_000_000
    tx_gain_db: float = -10.0
    gain_control_mode: str = "slow_attack"
    rx_gain_db: float = 30.0
    rx_buffer_size: int = 1 << 16
    tx_buffer_size: int = 1 << 16
    tx_cyclic: bool = False
    flush_reads: int = DEFAULT_FLUSH_READS
    reconnect_attempts: int = 2
    reconnect_delay_s: float = 0.5
    reconnect_window_s: float = DEFAULT_RECONNECT_WINDOW_S

    def __post_init__(self) -> None:
        def within(name: str, value: float, lo: float, hi: float) -> None:
            if not (lo <= value <= hi):
                raise ConfigError(f"PlutoConfig.{name} must be in [{lo}, {hi}], got {value!r}")

        if not isinstance(self.uri, str) or not self.uri:
            raise ConfigError(f"PlutoConfig.uri must be a libiio URI string, got {self.uri!r}")
        within("tx_lo_hz", self.tx_lo_hz, *LO_RANGE_HZ)
        within("rx_lo_hz", self.rx_lo_hz, *LO_RANGE_HZ)
        within("sample_rate_hz", self.sample_rate_hz, *SAMPLE_RATE_RANGE_HZ)
        within("rf_bandwidth_hz", self.rf_bandwidth_hz, *RF_BANDWIDTH_RANGE_HZ)
        within("tx_gain_db", self.tx_gain_db, *TX_GAIN_RANGE_DB)
        within("rx_gain_db", self.rx_gain_db, *RX_GAIN_RANGE_DB)
        if self.gain_control_mode not in GAIN_CONTROL_MODES:
            raise ConfigError(
                f"PlutoConfig.gain_control_mode must be one of {GAIN_CONTROL_MODES}, "
                f"got {self.gain_control_mode!r}"
            )
        for name in ("rx_buffer_size", "tx_buffer_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"PlutoConfig.{name} must be an int >= 1, got {value!r}")
        if self.flush_reads < 0:
            raise ConfigError(f"PlutoConfig.flush_reads must be >= 0, got {self.flush_reads}")
        if self.reconnect_attempts < 0:
            raise ConfigError(
                f"PlutoConfig.reconnect_attempts must be >= 0, got {self.reconnect_attempts}"
            )
        for name in ("reconnect_delay_s", "reconnect_window_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise ConfigError(f"PlutoConfig.{name} must be a number >= 0, got {value!r}")


def _import_adi() -> Any:
    """The lazy import seam: ``adi`` is only needed once a radio is opened."""
    try:
        return importlib.import_module("adi")
    except ImportError as exc:
        raise RadioError(
            "pyadi-iio is not installed: pip install 'semalign[sdr]' (and apt-get install libiio0)"
        ) from exc


class PlutoRadio:
    """One Pluto, opened on ``__enter__``/``open()`` and closed on exit.

    ``transmit(samples)`` sends [n] complex baseband (full scale 1.0, see
    ``common.phy.contract``); ``receive(n)`` returns [k * rx_buffer_size] complex128 of
    12-bit ADC values (k = ceil(n / rx_buffer_size)). Both retry on a fresh connection
    after an ``OSError`` (USB re-enumeration, network hiccup), reconnecting with backoff
    for up to ``reconnect_window_s``, and raise ``RadioError`` when that fails too.

    A failed call leaves no libiio object behind: its buffers and context are destroyed
    (buffers first) before the ``RadioError`` is raised, and the error's cause is the
    library's exception stripped of its traceback, so code that keeps the error (a log
    record, a list of failures) cannot keep a ``iio.Buffer`` alive past its context, which
    crashes pylibiio at exit.
    """

    def __init__(self, config: PlutoConfig, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(config, PlutoConfig):
            raise ConfigError(f"expected a PlutoConfig, got {config!r}")
        self.config = config
        self._sleep = sleep
        self._clock = clock
        self._dev: Any = None
        #: Successful reconnections since construction.
        self.reconnects = 0
        #: Captures that lost samples to an ADC overflow since construction.
        self.overflows = 0
        #: The last ``receive`` lost samples: True, False, or None where the device has no
        #: status register to ask (a stand-in without one).
        self.overflowed: bool | None = None

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._dev is not None

    @property
    def device(self) -> Any:
        """The underlying ``adi.Pluto`` (for settings this adapter does not cover)."""
        if self._dev is None:
            raise RadioError("radio is not open")
        return self._dev

    def open(self) -> PlutoRadio:
        if self._dev is None:
            self._dev = self._connect()
        return self

    def __enter__(self) -> PlutoRadio:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        dev, self._dev = self._dev, None
        if dev is None:
            return
        # Best effort: the device may already be gone (that is often why we close), and a
        # failure here must not mask the error that made the caller close.
        for name in ("tx_destroy_buffer", "rx_destroy_buffer", "close"):
            method = getattr(dev, name, None)
            if method is not None:
                with contextlib.suppress(Exception):
                    method()

    def _connect(self) -> Any:
        adi = _import_adi()
        cfg = self.config
        try:
            dev = adi.Pluto(uri=cfg.uri)
        except Exception as exc:  # pyadi-iio raises bare Exception("No device found")
            raise RadioError(f"cannot open Pluto at {cfg.uri!r}: {exc}") from exc
        try:
            self._apply(dev)
        except Exception as exc:
            _close_quietly(dev)
            raise RadioError(f"cannot configure Pluto at {cfg.uri!r}: {exc}") from exc
        return dev

    def _apply(self, dev: Any) -> None:
        """Write the settings; the gain mode goes before the gain it gates."""
        cfg = self.config
        dev.sample_rate = cfg.sample_rate_hz
        dev.rx_rf_bandwidth = cfg.rf_bandwidth_hz
        dev.tx_rf_bandwidth = cfg.rf_bandwidth_hz
        dev.rx_lo = cfg.rx_lo_hz
        dev.tx_lo = cfg.tx_lo_hz
        dev.rx_enabled_channels = [0]
        dev.tx_enabled_channels = [0]
        dev.gain_control_mode_chan0 = cfg.gain_control_mode
        if cfg.gain_control_mode == "manual":
            dev.rx_hardwaregain_chan0 = cfg.rx_gain_db
        dev.tx_hardwaregain_chan0 = cfg.tx_gain_db
        dev.rx_buffer_size = cfg.rx_buffer_size
        dev.tx_cyclic_buffer = cfg.tx_cyclic

    def _attempt(self, op: Callable[[Any], T]) -> tuple[T | None, BaseException | None]:
        """``op(device)``, or the exception it raised, detached from libiio's frames.

        The traceback of a pylibiio error holds ``iio.Buffer.push``'s frame and so the
        buffer; it must be gone before the context is closed. Returning the failure (rather
        than handling it inside ``except``) lets Python drop the traceback first.
        """
        try:
            return op(self._dev), None
        except RadioError:
            raise
        except Exception as exc:  # OSError from libiio; bare Exception from pyadi-iio misuse
            failure: BaseException = _detached(exc)
        return None, failure

    def _with_reconnect(self, what: str, op: Callable[[Any], T]) -> T:
        """Run ``op(device)``; on ``OSError`` reconnect and retry, up to the configured cap."""
        if self._dev is None:
            raise RadioError(f"cannot {what}: radio is not open")
        attempts = self.config.reconnect_attempts
        for attempt in range(attempts + 1):
            result, failure = self._attempt(op)
            if failure is None:
                return result  # type: ignore[return-value]
            self.close()  # buffers, then the context: nothing of libiio survives the failure
            if not isinstance(failure, OSError):
                raise RadioError(f"{what} failed: {failure}") from failure
            if attempt == attempts:
                raise RadioError(f"{what} failed after {attempts} reconnect(s): {failure}") from failure
            self._reconnect(what, failure)
            self.reconnects += 1
        raise AssertionError("unreachable")  # pragma: no cover

    def _reconnect(self, what: str, cause: OSError) -> None:
        """Open a new connection, backing off while the radio is away, for ``reconnect_window_s``."""
        cfg = self.config
        start = self._clock()
        delay = cfg.reconnect_delay_s
        tries = 0
        while True:
            self._sleep(delay)
            tries += 1
            try:
                self._dev = self._connect()
                return
            except RadioError as exc:
                last = str(exc)  # the message only: the exception holds pyadi-iio's frames
            elapsed = self._clock() - start
            if elapsed >= cfg.reconnect_window_s:
                raise RadioUnreachable(
                    f"{what} failed ({cause}) and reconnecting failed: the Pluto at {cfg.uri!r} stayed "
                    f"unreachable for {elapsed:.1f} s ({tries} attempt(s); reconnect_window_s="
                    f"{cfg.reconnect_window_s:g}); last error: {last}"
                ) from cause
            delay = min(2 * delay if delay > 0 else MAX_RECONNECT_DELAY_S / 8, MAX_RECONNECT_DELAY_S,
                        max(cfg.reconnect_window_s - elapsed, 0.0))

    # -- data plane -----------------------------------------------------------------------
    def _tx_buffers(self, samples: npt.ArrayLike) -> list[npt.NDArray[np.complex128]]:
        cfg = self.config
        iq = tx_to_int16(np.asarray(samples))  # raises SampleOverflow instead of wrapping
        size = cfg.tx_buffer_size
        if cfg.tx_cyclic and iq.shape[0] > size:
            raise SampleError(
                f"a cyclic transmission must fit one {size}-sample TX buffer, got {iq.shape[0]}"
            )
        n_buf = max(1, -(-iq.shape[0] // size))
        padded = np.zeros((n_buf * size, 2), dtype=np.int16)
        padded[: iq.shape[0]] = iq
        stream = int16_to_complex(padded)
        return [stream[i * size : (i + 1) * size] for i in range(n_buf)]

    def transmit(self, samples: npt.ArrayLike) -> int:
        """Send baseband ``samples`` ([n] complex, |I|, |Q| <= 1); return buffers pushed.

        In cyclic mode the previous cyclic buffer is destroyed first (pyadi-iio refuses a
        second ``tx()`` on a live cyclic buffer).
        """
        buffers = self._tx_buffers(samples)

        def push(dev: Any) -> int:
            if self.config.tx_cyclic:
                dev.tx_destroy_buffer()
            for buf in buffers:
                dev.tx(buf)
            return len(buffers)

        return self._with_reconnect("transmit", push)

    def stop_transmit(self) -> None:
        """Stop a cyclic transmission (destroys the TX buffer)."""
        self._with_reconnect("stop transmit", lambda dev: dev.tx_destroy_buffer())

    def flush(self) -> None:
        """Discard ``flush_reads`` buffers: samples queued in the kernel while idle."""
        self._with_reconnect("flush", self._drain)

    def _drain(self, dev: Any) -> None:
        for _ in range(self.config.flush_reads):
            dev.rx()
        _read_and_clear_adc_status(dev)  # the stale ring overflowed while idle: that loss is wanted

    def receive(self, n_samples: int, *, flush: bool = True) -> npt.NDArray[np.complex128]:
        """Capture at least ``n_samples`` fresh samples: [k * rx_buffer_size] complex128.

        Afterwards ``overflowed`` says whether the ADC dropped samples since the flush (or
        the previous receive): a capture with a gap in it, which ``overflows`` counts.
        """
        if n_samples < 1:
            raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
        size = self.config.rx_buffer_size
        n_buf = -(-n_samples // size)

        def capture(dev: Any) -> npt.NDArray[np.complex128]:
            if flush:
                self._drain(dev)
            out = np.empty(n_buf * size, dtype=np.complex128)
            for i in range(n_buf):
                buf = np.asarray(dev.rx())
                if buf.ndim != 1 or buf.size != size or not np.iscomplexobj(buf):
                    raise RadioError(
                        f"rx() returned {buf.dtype} {buf.shape}, expected {size} complex samples"
                    )
                out[i * size : (i + 1) * size] = buf
            status = _read_and_clear_adc_status(dev)
            self.overflowed = None if status is None else bool(status & ADC_OVERFLOW)
            if self.overflowed:
                self.overflows += 1
                log.warning("capture_overflow", samples=out.size, overflows=self.overflows)
            return out

        return self._with_reconnect("receive", capture)


def _read_and_clear_adc_status(dev: Any) -> int | None:
    """The ADC core's status register, cleared once read; None if it cannot be read.

    A missing register is not a failure of the capture: a stand-in may not model it, and a
    lost link shows on the next ``rx()``, where the reconnect logic handles it.
    """
    adc = getattr(dev, "_rxadc", None)
    if adc is None or not hasattr(adc, "reg_read"):
        return None
    try:
        status = int(adc.reg_read(STATUS_REG))
        if status:
            adc.reg_write(STATUS_REG, status)
    except (OSError, ValueError, TypeError):
        return None
    return status


def _detached(exc: BaseException) -> BaseException:
    """``exc`` without its traceback and chained exceptions (which hold libiio objects)."""
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None
    return exc


def _close_quietly(dev: Any) -> None:
    # Already failing: keep the original error rather than one from the teardown.
    close = getattr(dev, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
