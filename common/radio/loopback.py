"""One radio's TX into its own RX, as the daemons do it: capture first, then a one-shot burst.

Used by the hardware test, the emulator tests and the emulator's goodput bench. Nothing
here relies on a cyclic TX buffer being repeated: the capture is running (stale kernel
buffers flushed) before the burst is pushed once, so a device that plays a cyclic buffer
once, or not at all, is measured the same way as one that repeats it.

A capture that misses frames *and* that the ADC reports as overflowed (the host stalled and
the DMA dropped samples) says nothing about the link; with ``attempts`` > 1 it is repeated,
and the result says how many captures were taken. A capture that misses frames without an
overflow is returned at once.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from common.errors import RadioError
from common.modulation import Modulation
from common.phy import PhyConfig, PhyResult, demodulate_payload, modulate_payload
from common.radio.pluto import PlutoRadio

#: Capture beyond the burst, before and after it (TX's buffer set-up, thread start-up).
MARGIN_S = 0.3
#: Longest wait for the capture thread to flush, and to finish (seconds).
TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class Loopback:
    """What came back of one burst, and how many captures that took."""

    result: PhyResult
    #: Length of the burst on the air (samples).
    burst_samples: int
    #: Captures taken: 1 unless earlier ones overflowed.
    captures: int
    #: Whether the capture the result comes from overflowed (None: the radio cannot tell).
    overflowed: bool | None


def loopback(radio: PlutoRadio, payload: bytes, modulation: Modulation, *, batch_id: int = 1,
             phy: PhyConfig | None = None, attempts: int = 1) -> Loopback:
    phy = phy or PhyConfig()
    burst = modulate_payload(payload, modulation, batch_id, phy)
    n = burst.size + int(2 * MARGIN_S * radio.config.sample_rate_hz)
    captures = 0
    while True:
        result = demodulate_payload(_capture_around(radio, burst, n), phy, expected_batch_id=batch_id)
        captures += 1
        if result.complete or not radio.overflowed or captures >= attempts:
            return Loopback(result, burst.size, captures, radio.overflowed)


def _capture_around(radio: PlutoRadio, burst: np.ndarray, n: int) -> np.ndarray:
    """Flush, then capture ``n`` samples while ``burst`` is transmitted once."""
    flushed = threading.Event()
    captured: list[np.ndarray] = []
    failed: list[BaseException] = []

    def capture() -> None:
        try:
            radio.flush()
            flushed.set()
            captured.append(radio.receive(n, flush=False))
        except BaseException as exc:  # re-raised in the caller
            failed.append(exc)
            flushed.set()

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    if not flushed.wait(TIMEOUT_S):
        raise RadioError(f"the capture did not start within {TIMEOUT_S:g} s")
    if not failed:
        radio.transmit(burst)
    thread.join(TIMEOUT_S)
    if thread.is_alive():
        raise RadioError(f"the capture did not finish within {TIMEOUT_S:g} s")
    if failed:
        raise failed[0]
    return captured[0]


def wrong_bytes(result: PhyResult, payload: bytes) -> int:
    """Bytes marked valid that differ from what was sent (must be 0: CRCs never lie)."""
    sent = np.frombuffer(payload, np.uint8)
    got = np.frombuffer(result.payload, np.uint8)
    return int(np.count_nonzero(result.valid & (got != sent)))
