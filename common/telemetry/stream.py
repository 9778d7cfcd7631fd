"""The monitor stream's message: ``[topic, msgpack body]`` on a PUB socket, and its strict decoder.

The watcher treats every message as untrusted: sizes are checked before unpacking and a
malformed one raises ``MonitorError`` (it costs that message only).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from common.errors import MonitorError

#: Version of the body map; a watcher drops messages of another version.
MONITOR_VERSION = 1
#: The topics (ZeroMQ subscription prefixes) a daemon publishes.
TOPICS = ("record", "event", "status", "constellation")
ROLES = ("tx", "rx")
#: Largest body accepted (a record is ~1 KiB, a constellation 2 KiB of complex64).
MAX_BODY_BYTES = 64 * 1024
#: Most constellation points one message may carry.
MAX_POINTS = 4096


def _default(value: Any) -> Any:
    """msgpack's hook for what it cannot pack: enums by value, numpy scalars and arrays, else text."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


@dataclass(frozen=True)
class MonitorMessage:
    """One message of a daemon's monitor stream.

    ``data`` is the metrics row (topic record), ``{"name": ..., fields}`` (event), the
    daemon's state (status) or ``{"batch", "modulation", "iq": complex64 bytes}`` (constellation).
    """

    topic: str
    role: str
    seq: int
    t_ns: int
    data: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> list[bytes]:
        body: bytes = msgpack.packb(
            {"v": MONITOR_VERSION, "role": self.role, "seq": self.seq, "t_ns": self.t_ns, "data": self.data},
            use_bin_type=True, default=_default)
        return [self.topic.encode(), body]

    @classmethod
    def decode(cls, frames: Sequence[bytes]) -> MonitorMessage:
        if len(frames) != 2:
            raise MonitorError(f"expected 2 frames (topic, body), got {len(frames)}")
        topic_b, body = frames
        topic = topic_b.decode("ascii", errors="replace")
        if topic not in TOPICS:
            raise MonitorError(f"unknown topic {topic!r}: expected one of {', '.join(TOPICS)}")
        if len(body) > MAX_BODY_BYTES:
            raise MonitorError(f"monitor body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        try:
            obj = msgpack.unpackb(body, raw=False, max_str_len=MAX_BODY_BYTES, max_bin_len=MAX_BODY_BYTES,
                                  max_array_len=MAX_POINTS, max_map_len=256)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise MonitorError(f"monitor body is not valid msgpack ({exc})") from exc
        if not isinstance(obj, dict) or obj.get("v") != MONITOR_VERSION:
            raise MonitorError(f"monitor body must be a map with v={MONITOR_VERSION}")
        role, seq, t_ns, data = obj.get("role"), obj.get("seq"), obj.get("t_ns"), obj.get("data")
        if role not in ROLES:
            raise MonitorError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(t_ns, int) or isinstance(t_ns, bool):
            raise MonitorError("seq and t_ns must be integers")
        if not isinstance(data, dict):
            raise MonitorError(f"data must be a map, got {type(data).__name__}")
        msg = cls(topic, role, seq, t_ns, data)
        if topic == "event" and not isinstance(data.get("name"), str):
            raise MonitorError("an event needs a name")
        if topic == "constellation":
            msg.symbols()  # validates
        return msg

    def symbols(self) -> npt.NDArray[np.complex64]:
        """The constellation points of a constellation message (validated)."""
        iq = self.data.get("iq")
        if not isinstance(iq, bytes) or len(iq) % 8 or len(iq) > 8 * MAX_POINTS:
            raise MonitorError(f"constellation iq must be complex64 bytes of at most {MAX_POINTS} points")
        points = np.frombuffer(iq, dtype=np.complex64)
        if not np.all(np.isfinite(points)):
            raise MonitorError("constellation points must be finite")
        return points


def constellation_data(batch: int, modulation: str | None, symbols: npt.ArrayLike) -> dict[str, Any]:
    """The data of a constellation message: at most ``MAX_POINTS`` finite points."""
    points = np.asarray(symbols, dtype=np.complex64).reshape(-1)
    points = points[np.isfinite(points)][:MAX_POINTS]
    return {"batch": batch, "modulation": modulation, "iq": points.tobytes()}


def number(value: Any) -> float | None:
    """A finite float from a record's field, or None (untrusted input never raises here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None
