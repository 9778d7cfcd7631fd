"""The demodulator block: baseband samples -> detected, equalised, CRC-checked frames -> payload.

A CRC-failed frame never contributes a byte; ``PhyResult.valid`` marks exactly what arrived.
``demodulate_payload`` is what RX calls; ``Demodulator`` is the block behind it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError, FrameError, SampleError
from common.modulation import Modulation
from common.phy.config import PhyConfig
from common.phy.constellation import Constellation, HardDemapper
from common.phy.equaliser import Anchors, PilotPlan
from common.phy.frame import (
    DATA_CRC,
    HEADER_BYTES,
    FrameHeader,
    bits_to_bytes,
    data_crc,
    geometry,
    preamble_symbols,
)
from common.phy.sync import Detection, PreambleDetector

ComplexArray = npt.NDArray[np.complex64]
BoolArray = npt.NDArray[np.bool_]

#: Cached per-geometry plans kept by a demodulator before the cache is reset.
_PLAN_CACHE = 64
#: Equalised data symbols of the last frame kept (decimated) for a constellation display.
CONSTELLATION_POINTS = 256


@dataclasses.dataclass(frozen=True)
class FrameReport:
    """What the demodulator learnt about one detected frame whose header decoded.

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
    constellation : [<= CONSTELLATION_POINTS] complex64
        Equalised data symbols of the batch's last decoded frame, evenly decimated (empty if none).
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
    constellation: ComplexArray = dataclasses.field(default_factory=lambda: np.zeros(0, np.complex64))

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


@dataclasses.dataclass(frozen=True)
class DecodedFrame:
    """One frame as decoded: header, report and payload bytes.

    ``payload`` is kept even when the CRC failed, for BER measurements only;
    ``PhyResult`` never uses a CRC-failed payload.
    """

    header: FrameHeader
    report: FrameReport
    payload: bytes
    #: A decimated sample of the frame's equalised data symbols.
    symbols: ComplexArray = dataclasses.field(default_factory=lambda: np.zeros(0, np.complex64))


class Demodulator:
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
        pre_anchor = Anchors(
            positions=np.array([(self._pre_slice.start + self._pre_slice.stop - 1) / 2.0]),
            weights=np.array([float(self._pre_slice.stop - self._pre_slice.start)]),
        )
        self._header_plan = PilotPlan.build(
            config, geo0.header, geo0.preamble, 0, pre_anchor, z_offset=geo0.preamble
        )
        self._plans: dict[tuple[Modulation, int], PilotPlan] = {}

    # -- per-frame processing ---------------------------------------------------------
    def _symbols(self, x: ComplexArray, det: Detection, first: int, count: int) -> ComplexArray:
        """Matched-filter output of frame symbols ``first .. first + count - 1``, CFO removed."""
        t_first = det.t0 + first * self.config.samples_per_symbol
        # Rotation referenced to t0 so separately extracted pieces of a frame agree.
        return self.config.rrc.sample(x, t_first, count, cfo=det.cfo, ref=det.t0)

    def _data_plan(self, modulation: Modulation, length: int) -> PilotPlan:
        key = (modulation, length)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE:
                self._plans.clear()  # frame sizes are few; a flood of odd ones just rebuilds
            geo = geometry(self.config, modulation, length)
            n_head = geo.preamble + geo.header.length
            plan = PilotPlan.build(
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
        demap = HardDemapper(Constellation.of(header.modulation, header.labelling))
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
        step = max(1, -(-eq_data.size // CONSTELLATION_POINTS))
        return DecodedFrame(header, report, chunk, eq_data[::step].astype(np.complex64))

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
            constellation=agreeing[-1].symbols,
        )


def _as_samples(samples: npt.ArrayLike) -> ComplexArray:
    arr = np.asarray(samples)
    if arr.ndim == 2:
        arr = arr.reshape(-1)  # [n_buffers, buffer_size] as the radio delivers them
    if arr.ndim != 1:
        raise SampleError(f"samples must be 1-D or [buffers, size], got shape {arr.shape}")
    if not np.iscomplexobj(arr):
        raise SampleError(f"samples must be complex, got dtype {arr.dtype}")
    return arr.astype(np.complex64, copy=False)


@functools.lru_cache(maxsize=4)
def _demodulator(config: PhyConfig) -> Demodulator:
    # Cached: a demodulator keeps per-geometry equaliser plans worth reusing across batches.
    return Demodulator(config)


def demodulate_payload(
    samples: npt.ArrayLike, config: PhyConfig, *, expected_batch_id: int | None = None
) -> PhyResult:
    """Detect, decode and reassemble the frames in ``samples``.

    ``samples`` : [n] or [buffers, size] complex (any scale). With ``expected_batch_id``
    frames of other batches are ignored; without it the batch most frames carry wins.
    """
    return _demodulator(config)(samples, expected_batch_id=expected_batch_id)
