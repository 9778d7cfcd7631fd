"""The simulated radio: baseband samples in the ZeroMQ frame, impaired on the way by ``semalign channel``.

TX modulates each batch once (kept for resends); RX demodulates and keeps the bytes of
frames whose CRC passed, so only whole vectors reach the model.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from common.errors import OversizeMessage, SizeMismatch
from common.modulation import Modulation
from common.phy import PhyConfig, demodulate_payload, modulate_payload
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
from common.wire.messages import Envelope

ComplexArray = np.ndarray


class SimBearer(Bearer):
    transport: ClassVar[Transport] = Transport.SIM
    reports_snr: ClassVar[bool] = True

    def __init__(self, phy: PhyConfig, max_payload_bytes: int = BearerSettings.max_payload_bytes) -> None:
        self.phy = phy
        self.max_payload_bytes = max_payload_bytes
        self._bursts: dict[int, bytes] = {}

    @classmethod
    def open(cls, settings: BearerSettings) -> SimBearer:
        return cls(settings.phy, settings.max_payload_bytes)

    def modulate(self, envelope: Envelope, payload: bytes) -> ComplexArray:
        return modulate_payload(payload, Modulation.parse(envelope.modulation), envelope.batch_id, self.phy)

    def send(self, wire: Wire, envelope: Envelope, payload: bytes) -> Sent:
        frame = self._bursts.get(envelope.batch_id)
        if frame is None:
            frame = self._bursts[envelope.batch_id] = self.modulate(envelope, payload).tobytes()
        samples = len(frame) // np.dtype(np.complex64).itemsize
        if envelope.samples != samples:
            envelope = envelope.replace(samples=samples)
        return send_frames(wire, envelope, frame)

    def forget(self, batch_id: int) -> None:
        self._bursts.pop(batch_id, None)

    def receive(self, envelope: Envelope, frame: memoryview, notify: Notify) -> Received:
        check_announced(envelope, self.max_payload_bytes)
        if len(frame) % 8:
            raise SizeMismatch(f"sample frame of {len(frame)} bytes is not a whole number of complex64")
        return demodulated(np.frombuffer(frame, dtype=np.complex64), envelope, self.phy)


def check_announced(envelope: Envelope, max_payload_bytes: int) -> None:
    """Refuse an envelope whose announced payload exceeds the limit, before any buffer exists.

    ``demodulated`` allocates the announced size when nothing was decodable.
    """
    size = envelope.payload_size
    if size > max_payload_bytes:
        raise OversizeMessage(f"batch {envelope.batch_id} announces {size} payload bytes, "
                              f"limit {max_payload_bytes}")


def demodulated(samples: ComplexArray, envelope: Envelope, phy: PhyConfig) -> Received:
    """Baseband samples -> the payload bytes, with the mask of bytes whose frame's CRC passed."""
    size = envelope.payload_size
    result = demodulate_payload(samples, phy, expected_batch_id=envelope.batch_id)
    if result.frames_total == 0:
        # Nothing decodable: every byte is lost, and every frame the sender must have sent.
        return Received(bytes(size), np.zeros(size, dtype=bool), result, -(-size // phy.max_frame_payload))
    if len(result.payload) != size:
        raise SizeMismatch(f"radio frames carry {len(result.payload)} bytes, the envelope announces {size}")
    return Received(result.payload, result.valid, result, result.frames_lost)
