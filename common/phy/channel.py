"""Channel simulator: AWGN, flat Rayleigh/Rician fading, CFO, timing offsets, Pluto contract.

``Channel`` turns TX baseband into what RX would read; ``SnrProfile`` drives scenarios.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError, SampleError
from common.phy.contract import (
    RX_FULL_SCALE,
    TX_FULL_SCALE,
    int16_to_complex,
    quantise_rx,
    tx_to_int16,
)

FadingKind = Literal["none", "rayleigh", "rician"]
FADING_KINDS: tuple[str, ...] = ("none", "rayleigh", "rician")

#: Half length of the windowed-sinc fractional-delay filter (taps = 2 * this + 1).
_DELAY_HALF = 16
#: Sinusoids in the sum-of-sinusoids (Clarke/Jakes) fading generator.
_SOS_PATHS = 32


def normalised_cfo(cfo_hz: float, sample_rate_hz: float) -> float:
    """Convert a frequency offset in Hz to cycles per sample."""
    if sample_rate_hz <= 0:
        raise ConfigError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    return cfo_hz / sample_rate_hz


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    """Impairments applied by :class:`Channel`, in the order listed.

    Attributes
    ----------
    pluto : bool
        Apply the TX contract first (int16 at +-2**14, overflow raises ``SampleOverflow``)
        and the RX contract last (12-bit quantisation, fixed-size buffers, complex128).
    timing_offset : float
        Fractional delay in samples, [0, 1) (band-limited windowed-sinc interpolation).
    fading : "none" | "rayleigh" | "rician"
        Flat fading with E|h|^2 = 1.
    rician_k : float
        Rician K factor (linear, LOS power / scattered power).
    doppler : float
        Maximum Doppler shift in cycles/sample; > 0 gives time-varying Clarke fading
        (coherence time ~ 0.423 / doppler samples), 0 gives block fading.
    block_samples : int | None
        Block fading: an independent gain every ``block_samples``; None = one per call.
    cfo : float
        Carrier frequency offset in cycles/sample (see :func:`normalised_cfo`).
    phase : float | None
        Initial carrier phase in radians; None draws one per call.
    start_offset, start_jitter : int
        Leading noise-only samples: ``start_offset`` plus uniform 0..``start_jitter``.
    tail_samples : int
        Trailing noise-only samples.
    snr_db : float
        Average Es/N0 in dB; ``inf`` means no noise. Es is the energy per symbol of the
        burst (mean power over its non-zero samples times ``samples_per_symbol``), so
        guard gaps do not dilute it.
    samples_per_symbol : int
        Needed to turn Es/N0 into a per-sample noise power.
    rx_level_dbfs : float
        Pluto RX: average received burst RMS relative to ADC full scale (manual gain: a
        fade lowers the level, as on the air).
    rx_buffer_size : int
        Pluto RX buffer length in samples.
    seed : int | None
        Seed of the channel's random generator (noise, fading, phase, jitter).
    """

    snr_db: float = 30.0
    samples_per_symbol: int = 4
    fading: FadingKind = "none"
    rician_k: float = 0.0
    doppler: float = 0.0
    block_samples: int | None = None
    cfo: float = 0.0
    phase: float | None = None
    timing_offset: float = 0.0
    start_offset: int = 0
    start_jitter: int = 0
    tail_samples: int = 0
    pluto: bool = False
    rx_level_dbfs: float = -15.0
    rx_buffer_size: int = 16384
    seed: int | None = 0

    def __post_init__(self) -> None:
        def need(ok: bool, what: str, got: object) -> None:
            if not ok:
                raise ConfigError(f"ChannelConfig.{what}, got {got!r}")

        need(not math.isnan(self.snr_db), "snr_db must be a number (inf = no noise)", self.snr_db)
        need(self.samples_per_symbol >= 1, "samples_per_symbol must be >= 1", self.samples_per_symbol)
        need(self.fading in FADING_KINDS, f"fading must be one of {FADING_KINDS}", self.fading)
        need(self.rician_k >= 0 and math.isfinite(self.rician_k),
             "rician_k must be a finite number >= 0", self.rician_k)
        need(0.0 <= self.doppler < 0.5, "doppler must be in [0, 0.5) cycles/sample", self.doppler)
        need(self.block_samples is None or self.block_samples >= 1,
             "block_samples must be None or >= 1", self.block_samples)
        need(not (self.doppler > 0 and self.block_samples is not None),
             "doppler (time-varying) and block_samples (block fading) are exclusive",
             (self.doppler, self.block_samples))
        need(abs(self.cfo) < 0.5, "cfo must be in (-0.5, 0.5) cycles/sample", self.cfo)
        need(0.0 <= self.timing_offset < 1.0, "timing_offset must be in [0, 1) samples",
             self.timing_offset)
        need(self.start_offset >= 0, "start_offset must be >= 0", self.start_offset)
        need(self.start_jitter >= 0, "start_jitter must be >= 0", self.start_jitter)
        need(self.tail_samples >= 0, "tail_samples must be >= 0", self.tail_samples)
        need(self.rx_level_dbfs < 0, "rx_level_dbfs must be < 0 dBFS", self.rx_level_dbfs)
        need(self.rx_buffer_size >= 1, "rx_buffer_size must be >= 1", self.rx_buffer_size)


class Channel:
    """A simulated link. ``__call__(samples, snr_db=None)`` -> received samples.

    Parameters of ``__call__``
    --------------------------
    samples : [n] complex
        TX baseband (full scale 1.0 per rail when ``pluto`` is on).
    snr_db : float, optional
        Overrides ``config.snr_db`` for this call (for :class:`SnrProfile` scenarios).

    Returns
    -------
    [m] complex64, or with ``pluto`` [k * rx_buffer_size] complex128 of integer ADC
    values (see :meth:`buffers`). ``m >= n`` (offsets and the delay filter add samples).

    Successive calls draw fresh noise/fading from one seeded generator, so a scenario
    replays exactly from the same seed.
    """

    def __init__(self, config: ChannelConfig) -> None:
        if not isinstance(config, ChannelConfig):
            raise ConfigError(f"expected a ChannelConfig, got {config!r}")
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self._delay_taps = _fractional_delay_taps(config.timing_offset)
        self._sample_clock = 0  # CFO phase and Doppler run on across calls
        # Time-varying fading is one continuous process across calls: draw its paths once.
        angles = 2 * math.pi * (np.arange(_SOS_PATHS) + self.rng.uniform(0, 1, _SOS_PATHS))
        self._sos_freqs = config.doppler * np.cos(angles / _SOS_PATHS)
        self._sos_phases = self.rng.uniform(0, 2 * math.pi, _SOS_PATHS)
        self._los_freq = config.doppler * math.cos(self.rng.uniform(0, 2 * math.pi))
        self._los_phase = self.rng.uniform(0, 2 * math.pi)

    def seek(self, sample: int) -> None:
        """Make the next call start at absolute ``sample`` of one continuous stream.

        CFO phase and time-varying fading run on this clock, so a caller that feeds a
        stream in pieces (with gaps, or overlapping by a filter's context) stays coherent.
        """
        self._sample_clock = int(sample)

    def buffers(self, received: npt.NDArray[np.complex128]) -> npt.NDArray[np.complex128]:
        """View Pluto-contract output as ``[n_buffers, rx_buffer_size]`` complex128."""
        size = self.config.rx_buffer_size
        if received.size % size:
            raise SampleError(f"{received.size} samples are not whole {size}-sample buffers")
        return received.reshape(-1, size)

    def _complex_normal(self, n: int) -> npt.NDArray[np.complex128]:
        out = self.rng.standard_normal((n, 2)).view(np.complex128).reshape(-1)
        return out * math.sqrt(0.5)

    def _fading(self, n: int) -> npt.NDArray[np.complex128] | complex:
        cfg = self.config
        if cfg.fading == "none":
            return 1.0 + 0j
        k = cfg.rician_k if cfg.fading == "rician" else 0.0
        los_amp = math.sqrt(k / (k + 1.0))
        nlos_amp = math.sqrt(1.0 / (k + 1.0))
        if cfg.doppler > 0:
            t = self._sample_clock + np.arange(n, dtype=np.float64)
            scatter = _sum_of_sinusoids(t, self._sos_freqs, self._sos_phases, cfg.doppler)
            los = np.exp(1j * (2 * math.pi * self._los_freq * t + self._los_phase))
            return np.asarray(los_amp * los + nlos_amp * scatter, dtype=np.complex128)
        blocks = 1 if cfg.block_samples is None else -(-n // cfg.block_samples)
        los = np.exp(1j * self.rng.uniform(0, 2 * math.pi, blocks))
        gains = los_amp * los + nlos_amp * self._complex_normal(blocks)
        if cfg.block_samples is None:
            return complex(gains[0])
        return np.asarray(np.repeat(gains, cfg.block_samples)[:n], dtype=np.complex128)

    def __call__(self, samples: npt.ArrayLike, *, snr_db: float | None = None) -> npt.NDArray[np.complexfloating]:
        cfg = self.config
        snr = cfg.snr_db if snr_db is None else float(snr_db)
        if math.isnan(snr):
            raise ConfigError("snr_db must be a number")
        x = np.asarray(samples)
        if x.ndim != 1 or not np.iscomplexobj(x):
            raise SampleError(f"samples must be a 1-D complex array, got {x.dtype} {x.shape}")
        if cfg.pluto:
            x = int16_to_complex(tx_to_int16(x)) / TX_FULL_SCALE
        x = x.astype(np.complex128)
        active = x[x != 0]
        power = float(np.mean(active.real**2 + active.imag**2)) if active.size else 0.0

        if self._delay_taps is not None:
            # scipy costs 1.5 s to import: here, so the commands' --help and the profile
            # parsers (SnrProfile, FADING_KINDS) do not pay it.
            from scipy.signal import oaconvolve

            full = oaconvolve(x, self._delay_taps)
            x = full[_DELAY_HALF : _DELAY_HALF + x.size + 1]
        n = x.size
        x = x * self._fading(n)
        phase0 = self.rng.uniform(0, 2 * math.pi) if cfg.phase is None else cfg.phase
        if cfg.cfo != 0.0 or phase0 != 0.0:
            t = self._sample_clock + np.arange(n, dtype=np.float64)
            x = x * np.exp(1j * (2 * math.pi * cfg.cfo * t + phase0))
        self._sample_clock += n

        lead = cfg.start_offset + (int(self.rng.integers(0, cfg.start_jitter + 1)) if cfg.start_jitter else 0)
        total = lead + n + cfg.tail_samples
        if cfg.pluto:
            total = -(-total // cfg.rx_buffer_size) * cfg.rx_buffer_size
        y = np.zeros(total, dtype=np.complex128)
        y[lead : lead + n] = x
        if math.isfinite(snr) and power > 0:
            n0 = power * cfg.samples_per_symbol / 10.0 ** (snr / 10.0)
            y += self._complex_normal(total) * math.sqrt(n0)
        if not cfg.pluto:
            return y.astype(np.complex64)
        # Manual-gain receiver: the average burst lands at rx_level_dbfs; fades and
        # peaks move around it and saturate rather than wrap.
        scale = RX_FULL_SCALE * 10.0 ** (cfg.rx_level_dbfs / 20.0) / math.sqrt(power) if power > 0 else 1.0
        return quantise_rx(y * scale)


def _fractional_delay_taps(delay: float) -> npt.NDArray[np.float64] | None:
    """Blackman-windowed sinc delaying by ``_DELAY_HALF + delay`` samples (None if 0)."""
    if delay == 0.0:
        return None
    n = np.arange(2 * _DELAY_HALF + 1, dtype=np.float64)
    taps = np.sinc(n - _DELAY_HALF - delay) * np.blackman(2 * _DELAY_HALF + 1)
    return np.asarray(taps / taps.sum(), dtype=np.float64)


def _sum_of_sinusoids(
    t: npt.NDArray[np.float64],
    freqs: npt.NDArray[np.float64],
    phases: npt.NDArray[np.float64],
    doppler: float,
) -> npt.NDArray[np.complex128]:
    """Unit-power Rayleigh process with a Jakes (Clarke) spectrum: a sum of sinusoids.

    Each path arrives from a random angle (Doppler ``doppler * cos(angle)``) with a random
    phase. The gain is evaluated on a grid at most 1 % of a Doppler cycle apart and
    linearly interpolated, which keeps long bursts cheap.
    """
    if t.size == 0:
        return np.zeros(0, dtype=np.complex128)
    step = max(1, int(0.01 / doppler))
    grid = np.arange(t[0], t[-1] + step + 1, step, dtype=np.float64)
    coarse = np.exp(1j * (2 * math.pi * np.outer(grid, freqs) + phases)).sum(axis=1)
    coarse /= math.sqrt(freqs.size)
    if step == 1:
        return np.asarray(coarse[: t.size], dtype=np.complex128)
    return np.asarray(
        np.interp(t, grid, coarse.real) + 1j * np.interp(t, grid, coarse.imag), dtype=np.complex128
    )


_DB = r"([-+]?\d+(?:\.\d+)?)\s*(?:db)?"
_BASE = re.compile(rf"^{_DB}$")
_STEP = re.compile(r"^(drop|fall|rise|raise)\s+(\d+(?:\.\d+)?)\s*(?:db)?\s+(?:at|from)\s+batch\s+(\d+)$")
_SET = re.compile(rf"^(?:set\s+)?{_DB}\s+(?:at|from)\s+batch\s+(\d+)$")
_TRACE_LINE = re.compile(r"^\s*(\d+)\s*,\s*([-+]?\d+(?:\.\d+)?)\s*$")


@dataclasses.dataclass(frozen=True)
class SnrProfile:
    """Es/N0 per batch: piecewise constant, each point holding from its batch onwards.

    ``points`` are ``(batch, snr_db)`` sorted by batch; before the first point the first
    value holds.
    """

    points: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ConfigError("an SNR profile needs at least one point")
        batches = [b for b, _ in self.points]
        if batches != sorted(batches) or len(set(batches)) != len(batches):
            raise ConfigError(f"profile batches must be strictly increasing, got {batches}")

    @classmethod
    def constant(cls, snr_db: float) -> SnrProfile:
        return cls(((0, float(snr_db)),))

    @classmethod
    def parse(cls, text: str) -> SnrProfile:
        """Parse a profile.

        Accepted forms:

        * ``"30"`` or ``"30 dB"``: constant;
        * ``"30 dB, drop 6 dB at batch 5, rise 3 dB at batch 9, 12 dB at batch 20"``:
          steps (``drop``/``fall``, ``rise``/``raise``, or an absolute level);
        * a trace: lines ``batch,snr_db`` (an optional ``batch,snr_db`` header line,
          ``#`` comments and blank lines are ignored).
        """
        lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        if not lines:
            raise ConfigError("empty SNR profile: expected e.g. '30 dB' or 'batch,snr_db' lines")
        body = lines[1:] if re.fullmatch(r"batch\s*,\s*snr(_db)?", lines[0], re.I) else lines
        matches = [_TRACE_LINE.match(ln) for ln in body]
        trace = [(int(m.group(1)), float(m.group(2))) for m in matches if m is not None]
        if body and len(trace) == len(body):
            return cls(tuple(trace))
        if len(lines) != 1:
            raise ConfigError(
                f"cannot parse SNR profile line {body[0]!r}: expected 'batch,snr_db' lines"
            )
        return cls._parse_steps(lines[0])

    @classmethod
    def _parse_steps(cls, line: str) -> SnrProfile:
        clauses = [c.strip().lower() for c in line.split(",")]
        base = _BASE.match(clauses[0])
        if base is None:
            raise ConfigError(f"SNR profile must start with a level like '30 dB', got {clauses[0]!r}")
        level = float(base.group(1))
        changes: list[tuple[int, str, float]] = []
        for clause in clauses[1:]:
            step = _STEP.match(clause)
            absolute = _SET.match(clause)
            if step:
                sign = -1.0 if step.group(1) in ("drop", "fall") else 1.0
                changes.append((int(step.group(3)), "delta", sign * float(step.group(2))))
            elif absolute:
                changes.append((int(absolute.group(2)), "set", float(absolute.group(1))))
            else:
                raise ConfigError(
                    f"cannot parse SNR profile clause {clause!r}: expected 'drop X dB at batch N', "
                    "'rise X dB at batch N' or 'X dB at batch N'"
                )
        points: dict[int, float] = {0: level}
        for batch, kind, value in sorted(changes, key=lambda c: c[0]):
            level = level + value if kind == "delta" else value
            points[batch] = level
        return cls(tuple(sorted(points.items())))

    @classmethod
    def from_file(cls, path: str | Path) -> SnrProfile:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read SNR trace {path}: {exc}") from exc
        return cls.parse(text)

    def snr_at(self, batch_index: int) -> float:
        """Es/N0 (dB) in force at ``batch_index`` (>= 0)."""
        if batch_index < 0:
            raise ConfigError(f"batch_index must be >= 0, got {batch_index}")
        value = self.points[0][1]
        for batch, snr in self.points:
            if batch > batch_index:
                break
            value = snr
        return value
