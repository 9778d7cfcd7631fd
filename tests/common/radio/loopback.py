"""One radio's TX into its own RX, as the daemons do it: capture first, then a one-shot burst.

Shared by the hardware test and the emulator tests. Nothing here relies on a cyclic TX
buffer being repeated: the capture is running (stale kernel buffers flushed) before the
burst is pushed once, so a device that plays a cyclic buffer once, or not at all, is
tested the same way as one that repeats it.
"""

from __future__ import annotations

import threading

import numpy as np

from common.modulation import Modulation
from common.phy import PhyConfig, PhyResult, demodulate_payload, modulate_payload
from common.radio.pluto import PlutoRadio

#: Time the capture has to flush its stale buffers before the burst goes out.
LEAD_S = 0.3


def loopback(radio: PlutoRadio, payload: bytes, modulation: Modulation, *, batch_id: int = 1,
             phy: PhyConfig | None = None) -> PhyResult:
    phy = phy or PhyConfig()
    burst = modulate_payload(payload, modulation, batch_id, phy)
    rate = radio.config.sample_rate_hz
    captured: list[np.ndarray] = []
    failed: list[BaseException] = []

    def capture() -> None:
        try:
            captured.append(radio.receive(burst.size + int(2 * LEAD_S * rate)))
        except BaseException as exc:  # re-raised in the caller
            failed.append(exc)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    thread.join(LEAD_S)
    radio.transmit(burst)
    thread.join(60)
    assert not thread.is_alive(), "the capture did not finish"
    if failed:
        raise failed[0]
    return demodulate_payload(captured[0], phy, expected_batch_id=batch_id)


def wrong_bytes(result: PhyResult, payload: bytes) -> int:
    """Bytes marked valid that differ from what was sent (must be 0: CRCs never lie)."""
    sent = np.frombuffer(payload, np.uint8)
    got = np.frombuffer(result.payload, np.uint8)
    return int(np.count_nonzero(result.valid & (got != sent)))
