"""The over-the-air bearer's capture: a burst that starts late still arrives whole.

Both radios are ``PlutoRadio`` over the real-time fake air of ``tests/fakes/air.py``, in
this process; TX answers the ``AirReady`` from a thread, after a chosen delay.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from common.phy import PhyConfig
from common.radio.pluto import PlutoConfig, PlutoRadio
from common.transport.air import CAPTURE_MARGIN_S, AirBearer, _still_to_come
from common.transport.base import Received
from common.wire import messages
from common.wire import payload as wire
from tests.fakes.air import Air, AirModule

RADIO = PlutoConfig(uri="ip:fake-air", rx_buffer_size=16384, tx_buffer_size=16384)


class _Discard:
    """A wire that drops what TX sends: here RX is handed the envelope directly."""

    def send(self, frames: object) -> None:
        pass


def _batch() -> tuple[messages.Envelope, bytes]:
    rng = np.random.default_rng(0)
    t, n, alpha = 2, 8, 40
    payload = wire.build(rng.standard_normal((t, alpha), dtype=np.float32),
                         rng.standard_normal((n, alpha), dtype=np.float32), rng.integers(0, 10, n))
    envelope = messages.Envelope(batch_id=3, attempt=0, modulation="qpsk", b_max=len(payload), alpha=alpha,
                                 bundle="h" * 64, t_a_ns=1, t=t, n=n, transport="pluto")
    return envelope, payload


def _receive_with_tx_late_by(delay_s: float, monkeypatch: pytest.MonkeyPatch) -> tuple[messages.Envelope, Received]:
    monkeypatch.setitem(sys.modules, "adi", AirModule(Air(RADIO.sample_rate_hz, snr_db=40.0)))
    phy = PhyConfig()
    envelope, payload = _batch()
    with PlutoRadio(RADIO) as tx_radio, PlutoRadio(RADIO) as rx_radio:
        tx, rx = AirBearer(phy, tx_radio), AirBearer(phy, rx_radio)
        envelope = tx.send(_Discard(), envelope, payload).envelope  # the burst waits for AirReady
        answered: list[threading.Thread] = []

        def notify(message: bytes) -> None:
            notice = messages.decode_reply(message)
            assert isinstance(notice, messages.AirReady)
            timer = threading.Timer(delay_s, tx.on_air_ready, args=(notice,))
            timer.start()
            answered.append(timer)

        received = rx.receive(envelope, memoryview(b""), notify)
        answered[0].join(10)
    return envelope, received


@pytest.mark.parametrize("delay_s", [0.0, CAPTURE_MARGIN_S + 0.2])
def test_a_burst_that_starts_late_arrives_whole(delay_s: float, monkeypatch: pytest.MonkeyPatch) -> None:
    envelope, received = _receive_with_tx_late_by(delay_s, monkeypatch)
    assert received.frames_lost == 0 and received.valid is not None and received.valid.all()
    assert len(received.payload) == envelope.payload_size


def test_reading_on_is_asked_only_while_the_burst_can_still_be_coming() -> None:
    class Frame:
        def __init__(self, start: float) -> None:
            self.start = start

    class Result:
        def __init__(self, complete: bool, frames: list[Frame], headers_failed: int = 0) -> None:
            self.complete, self.frames, self.headers_failed = complete, frames, headers_failed

    burst, margin = 1000, 500
    assert _still_to_come(None, burst, margin, 1600) == 0  # a reliable bearer: nothing to wait for
    assert _still_to_come(Result(True, [Frame(900)]), burst, margin, 1600) == 0  # type: ignore[arg-type]
    assert _still_to_come(Result(False, [Frame(10)]), burst, margin, 1600) == 0  # type: ignore[arg-type]
    assert _still_to_come(Result(False, [Frame(900)]), burst, margin, 1600) == 900 + 1000 + 50 - 1600  # type: ignore[arg-type]
    assert _still_to_come(Result(False, []), burst, margin, 1600) == 1500  # type: ignore[arg-type]
    assert _still_to_come(Result(False, [], headers_failed=2), burst, margin, 1600) == 0  # type: ignore[arg-type]
