"""The monitor stream's message: round trips, and malformed input refused with ``MonitorError``."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from common.errors import MonitorError
from common.telemetry.stream import MAX_BODY_BYTES, MAX_POINTS, MonitorMessage, constellation_data


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"v": 1, "role": "tx", "seq": 1, "t_ns": 5, "data": {}}
    base.update(fields)
    out: bytes = msgpack.packb(base, use_bin_type=True)
    return out


@pytest.mark.parametrize(
    "message",
    [
        MonitorMessage("record", "tx", 3, 10, {"batch": 4, "accuracy": 0.9, "comm_flags": ["a"], "snr_db": None}),
        MonitorMessage("event", "rx", 1, 2, {"name": "rejected", "code": "bad_magic", "batch": 7}),
        MonitorMessage("status", "tx", 9, 9, {"plan": {"modulation": "64qam", "alpha": 30}}),
        MonitorMessage("constellation", "rx", 2, 3, constellation_data(5, "qpsk", [1 + 1j, -1 - 1j])),
    ],
)
def test_round_trip(message: MonitorMessage) -> None:
    assert MonitorMessage.decode(message.encode()) == message


def test_constellation_points_round_trip_and_are_capped() -> None:
    rng = np.random.default_rng(0)
    points = (rng.normal(size=MAX_POINTS + 10) + 1j * rng.normal(size=MAX_POINTS + 10)).astype(np.complex64)
    points[3] = np.nan
    msg = MonitorMessage.decode(MonitorMessage("constellation", "rx", 1, 1, constellation_data(1, "16qam", points)).encode())
    got = msg.symbols()
    assert got.dtype == np.complex64 and got.size == MAX_POINTS
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got[:3], points[:3])


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"record"], "2 frames"),
        ([b"nonsense", body()], "unknown topic"),
        ([b"record", b"\xc1\xc1"], "not valid msgpack"),
        ([b"record", b"x" * (MAX_BODY_BYTES + 1)], "exceeds"),
        ([b"record", msgpack.packb([1, 2])], "v=1"),
        ([b"record", body(v=2)], "v=1"),
        ([b"record", body(role="mallory")], "role"),
        ([b"record", body(seq="1")], "integers"),
        ([b"record", body(t_ns=True)], "integers"),
        ([b"record", body(data=[1])], "data must be a map"),
        ([b"event", body(data={"code": "x"})], "needs a name"),
        ([b"constellation", body(data={"iq": b"\x00" * 7})], "complex64"),
        ([b"constellation", body(data={"iq": "text"})], "complex64"),
        ([b"constellation", body(data={"iq": np.array([np.inf], np.complex64).tobytes()})], "finite"),
    ],
)
def test_malformed_messages_are_refused(frames: list[bytes], match: str) -> None:
    with pytest.raises(MonitorError, match=match):
        MonitorMessage.decode(frames)
