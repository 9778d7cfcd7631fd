"""Payload <-> baseband samples: fragmentation into frames, and the receiver that reassembles.

A CRC-failed frame never contributes a byte; ``PhyResult.valid`` marks exactly what arrived.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError
from common.modulation import Modulation
from common.phy.config import PhyConfig
from common.phy.constellation import Constellation, HardDemapper, Mapper
from common.phy.errors import FrameError
from common.phy.frame import (
    DATA_CRC,
    HEADER_BYTES,
    FrameHeader,
    Section,
    assemble_section,
    bits_to_bytes,
    bytes_to_bits,
    data_crc,
    geometry,
    pilot_symbols,
    preamble_symbols,
)
from common.phy.sync import Detection, PreambleDetector

ComplexArray = npt.NDArray[np.complex64]
BoolArray = npt.NDArray[np.bool_]

#: Largest batch id (u32 on the wire).
MAX_BATCH_ID = 0xFFFFFFFF


def _pad_bits(bits: npt.NDArray[np.uint8], k: int) -> npt.NDArray[np.uint8]:
    extra = (-bits.size) % k
    if extra:
        bits = np.concatenate([bits, np.zeros(extra, dtype=np.uint8)])
    return bits


class Transmitter:
    """Payload bytes -> one burst of frames.

    ``__call__(payload, modulation, batch_id)`` -> [n] complex64 baseband samples at
    ``config.tx_rms`` RMS, peak |I|, |Q| <= 1, with ``guard`` silence before, between
    and after the frames.
    """

    def __init__(self, config: PhyConfig) -> None:
        if not isinstance(config, PhyConfig):
            raise ConfigError(f"expected a PhyConfig, got {config!r}")
        self.config = config
        self._preamble = preamble_symbols(config)
        self._header_mapper = Mapper(Constellation.of(config.header_modulation))

    def frame_symbols(self, header: FrameHeader, chunk: bytes) -> ComplexArray:
        """All symbols of one frame: [geometry.total] complex64."""
        cfg = self.config
        geo = geometry(cfg, header.modulation, len(chunk))
        raw_header = header.encode()
        hdr_bits = _pad_bits(bytes_to_bits(raw_header), cfg.header_modulation.bits_per_symbol)
        hdr = assemble_section(
            self._header_mapper(hdr_bits), cfg.pilot_spacing, cfg.pilot_length, 0
        )
        body = chunk + DATA_CRC.pack(data_crc(raw_header, chunk))
        data_bits = _pad_bits(bytes_to_bits(body), header.modulation.bits_per_symbol)
        data_syms = Mapper(Constellation.of(header.modulation))(data_bits)
        data = assemble_section(
            data_syms, cfg.pilot_spacing, cfg.pilot_length, geo.header.pilot.size
        )
        return np.concatenate([self._preamble, hdr, data])

    def __call__(
        self, payload: bytes | bytearray | memoryview, modulation: Modulation, batch_id: int
    ) -> ComplexArray:
        cfg = self.config
        if not isinstance(modulation, Modulation):
            raise ConfigError(f"expected a Modulation, got {modulation!r}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise ConfigError(f"payload must be bytes, got {type(payload).__name__}")
        if not 0 <= batch_id <= MAX_BATCH_ID:
            raise ConfigError(f"batch_id must be in [0, 2**32 - 1], got {batch_id}")
        total = len(payload)
        if total > cfg.max_payload_bytes:
            raise ConfigError(
                f"payload of {total} bytes exceeds max_payload_bytes={cfg.max_payload_bytes}"
            )
        step = cfg.max_frame_payload
        count = max(1, -(-total // step))
        view = memoryview(payload)
        guard = np.zeros(cfg.guard_symbols, dtype=np.complex64)
        parts: list[ComplexArray] = [guard]
        for index in range(count):
            offset = index * step
            chunk = bytes(view[offset : offset + step])
            header = FrameHeader(modulation, batch_id, index, count, total, offset, len(chunk))
            parts.append(self.frame_symbols(header, chunk))
            parts.append(guard)
        # One shaping pass over the whole burst; silent guard symbols keep frames apart.
        burst = cfg.rrc.shape(np.concatenate(parts))
        burst *= np.float32(cfg.tx_rms * math.sqrt(cfg.samples_per_symbol))
        # The rare burst whose peak would clip is scaled down whole: the receiver is
        # gain-agnostic, and the Pluto contract treats clipping as an error.
        peak = float(max(np.abs(burst.real).max(), np.abs(burst.imag).max()))
        if peak > 1.0:
            burst *= np.float32(0.999 / peak)
        return burst


@dataclasses.dataclass(frozen=True)
class FrameReport:
    """What the receiver learnt about one detected frame whose header decoded.

    ``crc_ok`` False means the payload bytes were dropped. ``snr_db`` is the Es/N0
    estimate from the preamble and pilots; ``cfo`` is in cycles per sample.
    """

    batch_id: int
    index: int
    count: int
    offset: int
    length: int
    modulation: Modulation
    crc_ok: bool
    snr_db: float
    cfo: float
    start: float


@dataclasses.dataclass(frozen=True, eq=False)
class PhyResult:
    """One batch as received.

    Attributes
    ----------
    payload : bytes
        ``total_length`` bytes; bytes of lost or CRC-failed frames are zero.
    valid : [total_length] bool
        True exactly for bytes that arrived in a frame whose CRC-32 passed.
    batch_id : int | None
        None when no header was decoded (then the payload length is unknown: empty).
    frames_total : int
        Frame count announced by the headers (0 if none decoded).
    frames_lost : int
        Frames without a CRC-good copy (includes ``frames_crc_failed``).
    frames_crc_failed : int
        Frames whose header decoded but whose data CRC-32 failed.
    headers_failed : int
        Detected preambles whose header could not be decoded.
    frames_foreign : int
        CRC-good frames of another batch (ignored).
    snr_db : float
        Mean Es/N0 estimate (dB) over CRC-good frames; NaN if none.
    cfo : float
        Mean CFO estimate (cycles/sample) over CRC-good frames; NaN if none.
    modulation : Modulation | None
        Modulation of the batch's frames.
    frames : tuple[FrameReport, ...]
        Per-frame reports of this batch, in time order.
    """

    payload: bytes
    valid: BoolArray
    batch_id: int | None
    frames_total: int
    frames_lost: int
    frames_crc_failed: int
    headers_failed: int
    frames_foreign: int
    snr_db: float
    cfo: float
    modulation: Modulation | None
    frames: tuple[FrameReport, ...]

    @property
    def complete(self) -> bool:
        return self.frames_total > 0 and self.frames_lost == 0

    def lost_indices(self) -> list[int]:
        """Indices of the batch's frames that have no CRC-good copy, ascending."""
        good = {f.index for f in self.frames if f.crc_ok}
        return [i for i in range(self.frames_total) if i not in good]

    def valid_ranges(self) -> list[tuple[int, int]]:
        """Maximal runs of valid bytes as ``(start, stop)`` pairs."""
        edges = np.flatnonzero(np.diff(np.concatenate([[0], self.valid.astype(np.int8), [0]])))
        return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


#: Cached per-geometry plans kept by a receiver before the cache is reset.
_PLAN_CACHE = 64


@dataclasses.dataclass(frozen=True, eq=False)
class _Anchors:
    """Frame positions (symbols) and weights (pilot counts) of channel estimates."""

    positions: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """Everything about one section's pilots and equaliser that depends only on layout.

    Header and data sections are sampled separately (the header is decoded first); the
    data plan also uses the preamble and header anchors.
    """

    pilot_idx: npt.NDArray[np.int64]  # [G * g] into z
    known_conj: npt.NDArray[np.complex128]  # [G, g] conj(pilot)
    payload_idx: npt.NDArray[np.int64]  # into z
    payload_pos: npt.NDArray[np.float64]  # frame positions of the payload symbols
    anchors: _Anchors  # all anchors this section's equaliser uses, in position order
    smoother: npt.NDArray[np.float64]  # [A, A] local-linear-fit operator
    section_length: int
    dof: int

    @classmethod
    def build(
        cls,
        config: PhyConfig,
        section: Section,
        offset: int,
        pilot_start: int,
        before: _Anchors,
        z_offset: int = 0,
    ) -> _Plan:
        """Plan of ``section`` starting at frame symbol ``offset``, held at ``z[z_offset:]``."""
        g = config.pilot_length
        known = pilot_symbols(pilot_start, section.pilot.size).astype(np.complex128)
        centres = (section.pilot + offset).reshape(-1, g).mean(axis=1)
        anchors = _Anchors(
            positions=np.concatenate([before.positions, centres]),
            weights=np.concatenate([before.weights, np.full(centres.size, float(g))]),
        )
        return cls(
            pilot_idx=section.pilot + z_offset,
            known_conj=np.conj(known).reshape(-1, g),
            payload_idx=section.payload + z_offset,
            payload_pos=(section.payload + offset).astype(np.float64),
            anchors=anchors,
            smoother=_smoothing_matrix(anchors.positions, anchors.weights, config.pilot_smoothing),
            section_length=section.length,
            dof=section.pilot.size - centres.size,
        )

    def pilot_estimates(self, z: npt.NDArray[np.complex128]) -> tuple[npt.NDArray[np.complex128], float]:
        """Per-group channel estimates [G] and their residual energy (unit-modulus pilots)."""
        received = z[self.pilot_idx].reshape(self.known_conj.shape)
        h = (received * self.known_conj).mean(axis=1)
        resid = received * self.known_conj - h[:, None]
        return h, float(np.sum(resid.real**2 + resid.imag**2))

    def equalise(self, z: npt.NDArray[np.complex128], anchors: npt.NDArray[np.complex128]) -> ComplexArray:
        """One-tap equalisation of the payload symbols with the smoothed, interpolated channel."""
        h_fit = self.smoother @ anchors
        pos, at = self.anchors.positions, self.payload_pos
        h = np.interp(at, pos, h_fit.real) + 1j * np.interp(at, pos, h_fit.imag)
        # A dead anchor (h ~ 0) must not blow up into inf: such symbols just fail the CRC.
        h[np.abs(h) < 1e-12] = 1e-12
        return np.asarray(z[self.payload_idx] / h, dtype=np.complex64)


@dataclasses.dataclass(frozen=True)
class DecodedFrame:
    """One frame as decoded: header, report and payload bytes.

    ``payload`` is kept even when the CRC failed, for BER measurements only;
    ``PhyResult`` never uses a CRC-failed payload.
    """

    header: FrameHeader
    report: FrameReport
    payload: bytes


class Receiver:
    """Baseband samples -> decoded frames -> reassembled payload.

    ``__call__(samples, expected_batch_id=None)`` -> :class:`PhyResult`; ``decode_frames``
    gives the per-frame view (including CRC-failed payload bits, for BER measurements).
    """

    def __init__(self, config: PhyConfig) -> None:
        if not isinstance(config, PhyConfig):
            raise ConfigError(f"expected a PhyConfig, got {config!r}")
        self.config = config
        self.detector = PreambleDetector(config)
        self._header_demapper = HardDemapper(Constellation.of(config.header_modulation))
        q = config.rrc_span // 2
        #: Preamble symbols used for the channel/noise estimate: the R periodic copies.
        self._pre_slice = slice(q, q + config.zc_repeats * config.zc_length)
        self._pre_tx = preamble_symbols(config).astype(np.complex128)[self._pre_slice]
        self._pre_energy = float(np.vdot(self._pre_tx, self._pre_tx).real)
        geo0 = geometry(config, config.header_modulation, 0)
        self._n_head = geo0.preamble + geo0.header.length
        pre_anchor = _Anchors(
            positions=np.array([(self._pre_slice.start + self._pre_slice.stop - 1) / 2.0]),
            weights=np.array([float(self._pre_slice.stop - self._pre_slice.start)]),
        )
        self._header_plan = _Plan.build(
            config, geo0.header, geo0.preamble, 0, pre_anchor, z_offset=geo0.preamble
        )
        self._plans: dict[tuple[Modulation, int], _Plan] = {}

    # -- per-frame processing ---------------------------------------------------------
    def _symbols(self, x: ComplexArray, det: Detection, first: int, count: int) -> ComplexArray:
        """Matched-filter output of frame symbols ``first .. first + count - 1``, CFO removed."""
        t_first = det.t0 + first * self.config.samples_per_symbol
        # Rotation referenced to t0 so separately extracted pieces of a frame agree.
        return self.config.rrc.sample(x, t_first, count, cfo=det.cfo, ref=det.t0)

    def _data_plan(self, modulation: Modulation, length: int) -> _Plan:
        key = (modulation, length)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE:
                self._plans.clear()  # frame sizes are few; a flood of odd ones just rebuilds
            geo = geometry(self.config, modulation, length)
            n_head = geo.preamble + geo.header.length
            plan = _Plan.build(
                self.config, geo.data, n_head, geo.header.pilot.size, self._header_plan.anchors
            )
            self._plans[key] = plan
        return plan

    def _decode_one(self, x: ComplexArray, det: Detection) -> DecodedFrame | FrameError:
        cfg = self.config
        hplan = self._header_plan
        z = self._symbols(x, det, 0, self._n_head).astype(np.complex128)
        pre_rx = z[self._pre_slice]
        h0 = complex(np.vdot(self._pre_tx, pre_rx)) / self._pre_energy
        pre_resid = float(np.sum(np.abs(pre_rx - h0 * self._pre_tx) ** 2))
        h_hdr, hres = hplan.pilot_estimates(z)
        anchors = np.concatenate([[h0], h_hdr])
        eq = hplan.equalise(z, anchors)
        raw_header = bits_to_bytes(self._header_demapper(eq)[: 8 * HEADER_BYTES])
        try:
            header = FrameHeader.decode(raw_header, cfg)
        except FrameError as exc:
            return exc

        dplan = self._data_plan(header.modulation, header.length)
        zd = self._symbols(x, det, self._n_head, dplan.section_length).astype(np.complex128)
        h_data, dres = dplan.pilot_estimates(zd)
        anchors = np.concatenate([anchors, h_data])
        eq_data = dplan.equalise(zd, anchors)
        n_bytes = header.length + DATA_CRC.size
        demap = HardDemapper(Constellation.of(header.modulation))
        body = bits_to_bytes(demap(eq_data)[: 8 * n_bytes])
        chunk, (crc,) = body[: header.length], DATA_CRC.unpack(body[header.length :])
        crc_ok = crc == data_crc(raw_header, chunk)

        dof = (self._pre_slice.stop - self._pre_slice.start - 1) + hplan.dof + dplan.dof
        noise = (pre_resid + hres + dres) / dof
        signal = float(np.mean(anchors.real**2 + anchors.imag**2))
        snr_db = 10.0 * math.log10(signal / noise) if noise > 0 and signal > 0 else math.inf
        report = FrameReport(
            batch_id=header.batch_id,
            index=header.index,
            count=header.count,
            offset=header.offset,
            length=header.length,
            modulation=header.modulation,
            crc_ok=crc_ok,
            snr_db=snr_db,
            cfo=det.cfo,
            start=det.t0,
        )
        return DecodedFrame(header, report, chunk)

    def decode_frames(self, samples: npt.ArrayLike) -> tuple[list[DecodedFrame], int]:
        """Detect and decode every frame: (decoded frames in time order, header failures)."""
        x = _as_samples(samples)
        decoded: list[DecodedFrame] = []
        failed = 0
        for det in self.detector(x):
            result = self._decode_one(x, det)
            if isinstance(result, FrameError):
                failed += 1
            else:
                decoded.append(result)
        return decoded, failed

    # -- reassembly -------------------------------------------------------------------
    def __call__(self, samples: npt.ArrayLike, *, expected_batch_id: int | None = None) -> PhyResult:
        decoded, headers_failed = self.decode_frames(samples)
        batch_id = expected_batch_id
        if batch_id is None and decoded:
            # The batch most frames claim (a stale frame of a previous batch loses).
            batch_id = Counter(d.header.batch_id for d in decoded).most_common(1)[0][0]
        mine = [d for d in decoded if d.header.batch_id == batch_id]
        foreign = sum(1 for d in decoded if d.header.batch_id != batch_id and d.report.crc_ok)
        if not mine:
            return PhyResult(
                payload=b"",
                valid=np.zeros(0, dtype=bool),
                batch_id=batch_id,
                frames_total=0,
                frames_lost=0,
                frames_crc_failed=0,
                headers_failed=headers_failed,
                frames_foreign=foreign,
                snr_db=math.nan,
                cfo=math.nan,
                modulation=None,
                frames=(),
            )
        # Headers passed CRC-16 but a freak false pass could disagree: the majority of
        # (total, count) wins and dissenters count as failed headers.
        shape = Counter((d.header.total_length, d.header.count) for d in mine).most_common(1)[0][0]
        agreeing = [d for d in mine if (d.header.total_length, d.header.count) == shape]
        headers_failed += len(mine) - len(agreeing)
        total, count = shape
        buf = bytearray(total)
        valid = np.zeros(total, dtype=bool)
        good: set[int] = set()
        bad: set[int] = set()
        good_frames: list[FrameReport] = []
        for d in agreeing:
            h = d.header
            if d.report.crc_ok:
                if h.index not in good:
                    buf[h.offset : h.offset + h.length] = d.payload
                    valid[h.offset : h.offset + h.length] = True
                    good.add(h.index)
                    good_frames.append(d.report)
            else:
                bad.add(h.index)
        crc_failed = len(bad - good)
        snrs = [r.snr_db for r in good_frames]
        modulation = Counter(d.header.modulation for d in agreeing).most_common(1)[0][0]
        return PhyResult(
            payload=bytes(buf),
            valid=valid,
            batch_id=batch_id,
            frames_total=count,
            frames_lost=count - len(good),
            frames_crc_failed=crc_failed,
            headers_failed=headers_failed,
            frames_foreign=foreign,
            snr_db=float(np.mean(snrs)) if snrs else math.nan,
            cfo=float(np.mean([r.cfo for r in good_frames])) if good_frames else math.nan,
            modulation=modulation,
            frames=tuple(d.report for d in agreeing),
        )


def _smoothing_matrix(
    x: npt.NDArray[np.float64], w: npt.NDArray[np.float64], half: int
) -> npt.NDArray[np.float64]:
    """Operator of a weighted local linear fit over ``half`` anchors each side: [A, A].

    A line (not a mean) keeps a residual frequency offset or a slow fade unbiased while
    averaging pilot noise down; weights are the pilot counts behind each anchor. Row i
    evaluates at ``x[i]`` the weighted least-squares line through its window.
    """
    n = x.size
    out = np.zeros((n, n))
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        xs, ws = x[lo:hi], w[lo:hi]
        sw = ws.sum()
        mx = float(np.dot(ws, xs)) / sw
        var = float(np.dot(ws, (xs - mx) ** 2)) / sw
        row = ws / sw
        if var > 1e-9:
            row = row * (1.0 + (xs - mx) * (x[i] - mx) / var)
        out[i, lo:hi] = row
    return out


def _as_samples(samples: npt.ArrayLike) -> ComplexArray:
    arr = np.asarray(samples)
    if arr.ndim == 2:
        arr = arr.reshape(-1)  # [n_buffers, buffer_size] as the radio delivers them
    if arr.ndim != 1:
        raise ConfigError(f"samples must be 1-D or [buffers, size], got shape {arr.shape}")
    if not np.iscomplexobj(arr):
        raise ConfigError(f"samples must be complex, got dtype {arr.dtype}")
    return arr.astype(np.complex64, copy=False)


@functools.lru_cache(maxsize=4)
def _transmitter(config: PhyConfig) -> Transmitter:
    return Transmitter(config)


@functools.lru_cache(maxsize=4)
def _receiver(config: PhyConfig) -> Receiver:
    # Cached: a receiver keeps per-geometry equaliser plans worth reusing across batches.
    return Receiver(config)


def modulate_payload(
    payload: bytes, modulation: Modulation, batch_id: int, config: PhyConfig
) -> ComplexArray:
    """Fragment ``payload`` into frames and modulate them.

    Returns [n] complex64 baseband (full scale 1.0 per rail, RMS ``config.tx_rms``):
    guard, frame 0, guard, frame 1, ..., guard.
    """
    return _transmitter(config)(payload, modulation, batch_id)


def demodulate_payload(
    samples: npt.ArrayLike, config: PhyConfig, *, expected_batch_id: int | None = None
) -> PhyResult:
    """Detect, decode and reassemble the frames in ``samples``.

    ``samples`` : [n] or [buffers, size] complex (any scale). With ``expected_batch_id``
    frames of other batches are ignored; without it the batch most frames carry wins.
    """
    return _receiver(config)(samples, expected_batch_id=expected_batch_id)
