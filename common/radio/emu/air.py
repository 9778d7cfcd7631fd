"""The emulated air: every emulated DAC transmits into it, every emulated ADC listens, in real time.

A transmission is placed on a sample timeline (one per sample rate, zero at the air's start);
a receiver renders a window of that timeline through its own ``common.phy.Channel`` (CFO,
fractional timing, fading), adds the noise floor and quantises to the Pluto's 12-bit ADC.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError
from common.phy.channel import FADING_KINDS, Channel, ChannelConfig, SnrProfile
from common.phy.config import PhyConfig
from common.phy.contract import RX_FULL_SCALE, TX_FULL_SCALE, quantise_rx

#: The DAC's int16 full scale (12 bits MSB-aligned in 16): the air's amplitude unit.
DAC_FULL_SCALE = 2.0**15
#: Context each side of a rendered window, so the fractional-delay filter sees whole pulses.
CONTEXT = 32
#: TX attenuation and RX gain at which ``AirConfig.snr_db`` and ``rx_level_dbfs`` hold
#: (the ``PlutoConfig`` defaults): each dB away moves the burst's level by one dB.
REFERENCE_TX_ATTEN_DB = -10.0
REFERENCE_RX_GAIN_DB = 30.0
#: Transmissions older than this (seconds of air time) are forgotten.
RETENTION_S = 30.0

IqArray = npt.NDArray[np.int16]


@dataclasses.dataclass(frozen=True)
class AirConfig:
    """The link between every emulated transmitter and receiver.

    Attributes
    ----------
    snr_db : float
        Es/N0 of a burst at the project's nominal level (``PhyConfig.tx_rms``) sent at
        ``REFERENCE_TX_ATTEN_DB``; the noise floor is fixed, so TX attenuation moves it.
    snr_profile : SnrProfile | None
        Es/N0 per burst instead (burst k of a transmitter gets ``snr_at(k)``): a path loss
        that changes between bursts, as in ``semalign channel``'s per-batch profile.
    cfo, timing_offset, fading, rician_k, doppler, seed
        As in ``ChannelConfig``; fading must be time-varying (``doppler > 0``) because
        the air is one continuous stream.
    rx_level_dbfs : float
        Level of a nominal burst at the ADC with ``REFERENCE_RX_GAIN_DB`` (AGC modes
        hold it there; manual gain moves it dB for dB and can clip).
    """

    snr_db: float = 30.0
    snr_profile: SnrProfile | None = None
    cfo: float = 0.0
    timing_offset: float = 0.0
    fading: str = "none"
    rician_k: float = 0.0
    doppler: float = 0.0
    rx_level_dbfs: float = -15.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.snr_db):
            raise ConfigError(f"AirConfig.snr_db must be finite, got {self.snr_db!r}")
        if self.fading not in FADING_KINDS:
            raise ConfigError(f"AirConfig.fading must be one of {FADING_KINDS}, got {self.fading!r}")
        if self.fading != "none" and not self.doppler > 0:
            raise ConfigError("AirConfig.fading needs doppler > 0 (the air is one continuous stream)")
        # ChannelConfig checks the rest (cfo, timing, doppler ranges).
        self.channel_config(0)

    def channel_config(self, listener: int) -> ChannelConfig:
        rng = np.random.default_rng((self.seed, listener))
        return ChannelConfig(
            snr_db=math.inf, samples_per_symbol=PhyConfig().samples_per_symbol, fading=self.fading,  # type: ignore[arg-type]
            rician_k=self.rician_k, doppler=self.doppler, cfo=self.cfo,
            phase=float(rng.uniform(0, 2 * math.pi)), timing_offset=self.timing_offset,
            seed=self.seed * 1000 + listener,
        )


@dataclasses.dataclass
class Transmission:
    """Samples on the air from ``start`` (at ``rate``): once, or repeated while ``cyclic``."""

    sender: int
    rate: int
    lo_hz: int
    start: int
    data: npt.NDArray[np.complex64]  # in DAC full-scale units, path gain applied
    cyclic: bool = False
    end: int | None = None  # exclusive; None: a cyclic transmission still running

    def stop(self) -> int:
        return self.end if self.end is not None else (2**62 if self.cyclic else self.start + self.data.size)


class Listener:
    """One receiver's view of the air: its own channel state and noise generator."""

    def __init__(self, air: Air, ident: int) -> None:
        self.ident = ident
        self.channel = Channel(air.config.channel_config(ident))
        self.rng = np.random.default_rng((air.config.seed, ident, 1))


class Air:
    """The shared medium. Thread-safe; ``clock`` is injectable for tests."""

    def __init__(self, config: AirConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or AirConfig()
        self.clock = clock
        self.t0 = clock()
        self._lock = threading.Lock()
        self._on_air: list[Transmission] = []
        self._bursts: dict[int, int] = {}
        self._last_end: dict[int, int] = {}
        self._next_id = 0
        nominal = PhyConfig()
        #: Mean power of a nominal burst, DAC full-scale units.
        self.nominal_power = (nominal.tx_rms * TX_FULL_SCALE / DAC_FULL_SCALE) ** 2
        self.noise_power = self.nominal_power * nominal.samples_per_symbol / 10 ** (self.config.snr_db / 10)
        self.bursts_sent = 0

    def new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def now(self, rate: int) -> int:
        """The current sample index of the ``rate`` timeline."""
        return int((self.clock() - self.t0) * rate)

    # -- transmitters ----------------------------------------------------------------------
    def transmit(self, sender: int, rate: int, lo_hz: int, start: int, iq: IqArray, atten_db: float,
                 *, cyclic: bool = False) -> Transmission:
        """Put int16 I/Q [n, 2] on the air from sample ``start`` of the ``rate`` timeline."""
        with self._lock:
            new_burst = self._last_end.get(sender, -1) < start
            if new_burst:
                self._bursts[sender] = self._bursts.get(sender, -1) + 1
                self.bursts_sent += 1
            profile = self.config.snr_profile
            snr = profile.snr_at(self._bursts[sender]) if profile is not None else self.config.snr_db
            gain = 10 ** ((snr - self.config.snr_db + atten_db - REFERENCE_TX_ATTEN_DB) / 20)
            data = ((iq[:, 0] + 1j * iq[:, 1].astype(np.float32)) * np.float32(gain / DAC_FULL_SCALE)).astype(np.complex64)
            tx = Transmission(sender, rate, lo_hz, start, data, cyclic)
            self._on_air.append(tx)
            self._last_end[sender] = start + data.size if not cyclic else 2**62
            horizon = self.now(rate) - int(RETENTION_S * rate)
            self._on_air = [t for t in self._on_air if t.stop() > horizon or t.rate != rate]
            return tx

    def silence(self, sender: int, rate: int, at: int) -> None:
        """The sender's DMA stops at ``at``: what it queued beyond is never sent."""
        with self._lock:
            for tx in self._on_air:
                if tx.sender == sender and tx.rate == rate and tx.stop() > at:
                    tx.end = max(tx.start, at)
            if self._last_end.get(sender, -1) > at:
                self._last_end[sender] = at

    def queued_until(self, sender: int) -> int:
        with self._lock:
            return self._last_end.get(sender, -1)

    # -- receivers -------------------------------------------------------------------------
    def listener(self) -> Listener:
        return Listener(self, self.new_id())

    def render(self, who: Listener, rate: int, lo_hz: int, bandwidth_hz: int, start: int, n: int,
               gain_db: float) -> IqArray:
        """What the ADC reads for samples [start, start + n): int16 [n, 2] 12-bit values."""
        lo, hi = start - CONTEXT, start + n + CONTEXT
        x = np.zeros(hi - lo, dtype=np.complex64)
        heard = False
        with self._lock:
            on_air = list(self._on_air)
        for tx in on_air:
            if tx.rate != rate or abs(tx.lo_hz - lo_hz) > bandwidth_hz / 2:
                continue  # another rate or another channel: not heard
            a, b = max(lo, tx.start), min(hi, tx.stop())
            if a >= b:
                continue
            heard = True
            if tx.cyclic:
                idx = (np.arange(a, b) - tx.start) % tx.data.size
                x[a - lo : b - lo] += tx.data[idx]
            else:
                x[a - lo : b - lo] += tx.data[a - tx.start : b - tx.start]
        if heard:
            who.channel.seek(lo)
            y = np.asarray(who.channel(x))[CONTEXT : CONTEXT + n].astype(np.complex64)
        else:
            y = np.zeros(n, dtype=np.complex64)
        noise = who.rng.standard_normal((n, 2), dtype=np.float32).view(np.complex64).reshape(-1)
        y += noise * np.float32(math.sqrt(self.noise_power / 2))
        scale = RX_FULL_SCALE * 10 ** ((self.config.rx_level_dbfs + gain_db) / 20) / math.sqrt(self.nominal_power)
        adc = quantise_rx(y * np.float32(scale))
        out = np.empty((n, 2), dtype=np.int16)
        out[:, 0] = adc.real
        out[:, 1] = adc.imag
        return out
