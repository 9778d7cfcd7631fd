"""The control plane: request/reply messages between ``semalign ctl`` and the TX daemon.

Requests are ``{"v": 1, "cmd": NAME, "arg": ..., "rx": RECEIVER}`` (``rx`` optional: absent, the
command is for every receiver); replies ``{"v": 1, "ok": bool, ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from common.errors import ConfigError, EnvelopeError
from common.wire.messages import MAX_META_BYTES, PROTOCOL

#: The largest integer argument a request may carry (an alpha is a few hundred at most); larger
#: ones are refused at both ends, before msgpack (which overflows past 64 bits) sees them.
MAX_INT_ARG = 2**31 - 1
#: The longest receiver name (``tx.config.RX_NAME``).
MAX_RX_CHARS = 32

COMMANDS = ("set-modulation", "set-alpha", "set-policy", "amc", "pause", "resume", "status",
            "set-shift", "clear-shift", "set-value-type", "reset-adapter")


@dataclass(frozen=True)
class ControlRequest:
    cmd: str
    arg: str | int | None = None
    #: The receiver the command is for (its ``receivers:`` name); None: all of them.
    rx: str | None = None

    def __post_init__(self) -> None:
        if self.rx is not None and (not isinstance(self.rx, str) or not 1 <= len(self.rx) <= MAX_RX_CHARS):
            raise ConfigError(f"receiver of {self.cmd}: expected a name of 1..{MAX_RX_CHARS} characters, "
                              f"got {self.rx!r:.80}")
        if isinstance(self.arg, int) and not isinstance(self.arg, bool) and not -MAX_INT_ARG <= self.arg <= MAX_INT_ARG:
            raise ConfigError(f"argument of {self.cmd} must be an integer within +-{MAX_INT_ARG}, got {self.arg}")

    def encode(self) -> bytes:
        # No ``rx`` key for all receivers: a request is then byte for byte what it was before.
        rx = {} if self.rx is None else {"rx": self.rx}
        out: bytes = msgpack.packb({"v": PROTOCOL, "cmd": self.cmd, "arg": self.arg, **rx}, use_bin_type=True)
        return out

    @classmethod
    def decode(cls, frame: bytes) -> ControlRequest:
        if len(frame) > MAX_META_BYTES:
            raise EnvelopeError(f"control request of {len(frame)} bytes exceeds {MAX_META_BYTES}")
        try:
            obj = msgpack.unpackb(frame, raw=False, max_str_len=1024, max_map_len=16, max_array_len=16)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise EnvelopeError(f"control request is not valid msgpack ({exc})") from exc
        if not isinstance(obj, dict) or obj.get("v") != PROTOCOL:
            raise EnvelopeError("control request must be a map with v=1")
        cmd, arg, rx = obj.get("cmd"), obj.get("arg"), obj.get("rx")
        if cmd not in COMMANDS:
            raise ConfigError(f"unknown command {cmd!r}: expected one of {', '.join(COMMANDS)}")
        if arg is not None and (isinstance(arg, bool) or not isinstance(arg, str | int)):
            raise ConfigError(f"argument of {cmd} must be a string or an integer, got {type(arg).__name__}")
        if rx is not None and not isinstance(rx, str):
            raise ConfigError(f"receiver of {cmd} must be a string, got {type(rx).__name__}")
        return cls(cmd, arg, rx)


def encode_reply(ok: bool, *, error: str | None = None, **fields: Any) -> bytes:
    out: bytes = msgpack.packb({"v": PROTOCOL, "ok": ok, "error": error, **fields}, use_bin_type=True)
    return out


def decode_reply(frame: bytes) -> dict[str, Any]:
    if len(frame) > MAX_META_BYTES:
        raise EnvelopeError(f"control reply of {len(frame)} bytes exceeds {MAX_META_BYTES}")
    try:
        obj = msgpack.unpackb(frame, raw=False)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise EnvelopeError(f"control reply is not valid msgpack ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("v") != PROTOCOL or not isinstance(obj.get("ok"), bool):
        raise EnvelopeError("control reply must be a map with v=1 and ok")
    return obj
