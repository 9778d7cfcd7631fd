"""Over the air between two ADALM-Plutos: only the envelope rides ZeroMQ.

The ``air_ready`` handshake: RX, told of a batch by its envelope, starts capturing and
answers ``AirReady``; only then does TX put the burst on the air, so the burst lies
inside RX's capture window. TX keeps each burst until the batch is acknowledged.

A TX that answers late (a loaded laptop, a slow link for the ``AirReady``) starts its burst
late; when the capture ends before the burst can have, RX reads on, once, for the samples
still to come, so a late burst costs time rather than its tail.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from common.errors import ConfigError, RadioError, SizeMismatch, Unreachable
from common.log import get_logger
from common.phy import PhyConfig, PhyResult
from common.radio.pluto import PlutoRadio
from common.transport.base import (
    Bearer,
    BearerSettings,
    Notify,
    Received,
    Sent,
    Transport,
    Wire,
    send_frames,
)
from common.transport.sim import SimBearer, check_announced, demodulated
from common.wire.messages import AirReady, Envelope

#: Extra capture beyond the announced burst: covers the air_ready round trip and TX's
#: buffer set-up, so the burst lies inside the capture.
CAPTURE_MARGIN_S = 0.25
#: Longest burst RX agrees to capture (samples); checked before the capture buffer exists.
MAX_BURST_SAMPLES = 1 << 25

log = get_logger("semalign.transport")


class AirBearer(Bearer):
    transport: ClassVar[Transport] = Transport.PLUTO
    reports_snr: ClassVar[bool] = True

    def __init__(self, phy: PhyConfig, radio: PlutoRadio) -> None:
        self.phy = phy
        self.radio = radio
        self._modem = SimBearer(phy)
        self.max_payload_bytes = BearerSettings.max_payload_bytes
        self._bursts: dict[int, np.ndarray] = {}

    @classmethod
    def available(cls, settings: BearerSettings) -> bool:
        return settings.pluto is not None

    @classmethod
    def open(cls, settings: BearerSettings) -> AirBearer:
        if settings.pluto is None:
            raise ConfigError("transport 'pluto' needs a pluto section (at least uri), got none")
        bearer = cls(settings.phy, PlutoRadio(settings.pluto).open())
        bearer.max_payload_bytes = settings.max_payload_bytes
        return bearer

    def send(self, wire: Wire, envelope: Envelope, payload: bytes) -> Sent:
        burst = self._bursts.get(envelope.batch_id)
        if burst is None:
            burst = self._bursts[envelope.batch_id] = self._modem.modulate(envelope, payload)
        # The frame is empty: the burst waits for RX's AirReady.
        return send_frames(wire, envelope.replace(samples=burst.size), b"")

    def on_air_ready(self, notice: AirReady) -> bool:
        burst = self._bursts.get(notice.batch_id)
        if burst is None:
            return False
        self.radio.transmit(burst)  # RadioError: the batch is not lost; the resend timer tries again
        return True

    def forget(self, batch_id: int) -> None:
        self._bursts.pop(batch_id, None)

    def receive(self, envelope: Envelope, frame: memoryview, notify: Notify) -> Received:
        check_announced(envelope, self.max_payload_bytes)
        if not 0 < envelope.samples <= MAX_BURST_SAMPLES:
            raise SizeMismatch(f"announced burst of {envelope.samples} samples, expected 1..{MAX_BURST_SAMPLES}")
        # Flush the stale kernel buffers *before* asking for the burst: until the first read
        # after idle the ADC's DMA is stalled on a full ring, and a burst sent meanwhile is lost.
        self.radio.flush()
        try:
            notify(AirReady(envelope.batch_id, envelope.attempt).encode())
        except Unreachable:
            # TX is gone: nobody will transmit, and its resend starts the exchange again.
            raise RadioError(f"cannot ask TX to transmit batch {envelope.batch_id}: peer unreachable") from None
        margin = int(CAPTURE_MARGIN_S * self.radio.config.sample_rate_hz)
        samples = self.radio.receive(envelope.samples + margin, flush=False)
        received = demodulated(samples, envelope, self.phy)
        more = _still_to_come(received.phy, envelope.samples, margin, samples.size)
        if more:
            log.info("capture_extended", batch=envelope.batch_id, samples=more, frames_lost=received.frames_lost)
            samples = np.concatenate([samples, self.radio.receive(more, flush=False)])
            received = demodulated(samples, envelope, self.phy)
        return received

    def close(self) -> None:
        self.radio.close()


def _still_to_come(result: PhyResult | None, burst: int, margin: int, captured: int) -> int:
    """Samples to read on when frames are missing and the burst may not have ended yet.

    The burst began no later than its first frame found, so it is over by that frame's
    start + ``burst`` (plus a tenth of the margin for the receive filter); with no frame
    nor preamble found it may not have begun, and one more capture's worth is read.
    """
    if result is None or result.complete:
        return 0
    if not result.frames:
        # Preambles whose headers failed: the burst was there, and is lost to noise.
        return 0 if result.headers_failed else burst + margin
    ends_by = int(min(f.start for f in result.frames)) + burst + margin // 10
    return max(ends_by - captured, 0)
