"""The control plane: the table of commands, and the request/reply messages between ``semalign ctl``
and the TX daemon.

Requests are ``{"v": 1, "cmd": NAME, "arg": ..., "rx": RECEIVER}`` (``rx`` optional: absent, the
command is for every receiver); replies ``{"v": 1, "ok": bool, ...}``. ``TABLE`` is read by the
daemon's dispatch (``tx.commands``), ``semalign ctl``, ``semalign watch``'s keys and the test that
keeps docs/protocol.md's list of commands whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, NamedTuple

import msgpack

from common.errors import ConfigError, EnvelopeError
from common.wire.messages import MAX_META_BYTES, PROTOCOL

#: The largest integer argument a request may carry (an alpha is a few hundred at most); larger
#: ones are refused at both ends, before msgpack (which overflows past 64 bits) sees them.
MAX_INT_ARG = 2**31 - 1
#: The longest receiver name (``tx.config.RX_NAME``).
MAX_RX_CHARS = 32



class Cmd(StrEnum):
    """Each command by its name on the wire and on ``semalign ctl``'s command line (a ``str``)."""

    SET_MODULATION = "set-modulation"
    SET_ALPHA = "set-alpha"
    SET_POLICY = "set-policy"
    AMC = "amc"
    PAUSE = "pause"
    RESUME = "resume"
    STATUS = "status"
    SET_SHIFT = "set-shift"
    CLEAR_SHIFT = "clear-shift"
    SET_VALUE_TYPE = "set-value-type"
    RESET_ADAPTER = "reset-adapter"


class Arg(Enum):
    """What a command's argument is; ``semalign ctl`` refuses a command whose argument is missing."""

    #: None is needed (one given travels and is ignored, as it always was).
    NONE = "none"
    #: A string TX parses; ``ctl`` refuses the command without one.
    REQUIRED = "required"
    #: An alpha: ``ctl`` parses it as an integer in 1..MAX_INT_ARG (TX checks it against its bundle).
    ALPHA = "alpha"
    #: May be left out.
    OPTIONAL = "optional"


class Applies(Enum):
    """Which of ``tx.commands``'s functions applies a command to a link."""

    #: A new link state (modulation, alpha, policy): a new plan, checked before it replaces the old one.
    LINK_STATE = "link_state"
    #: What the batches carry and what RX carries over (shift, value type, adapters), not the budget.
    ALIGNMENT = "alignment"
    #: Whether and how TX runs (pause, resume, AMC, status).
    RUN = "run"


class Command(NamedTuple):
    arg: Arg
    #: The argument in usage lines (``set-alpha N``, ``reset-adapter [ALPHA]``); "" for none.
    metavar: str
    #: What ``semalign ctl``'s help says the argument is for this command; "" for none.
    arg_help: str
    applies: Applies
    help: str
    #: The reply carries TX's status.
    reports_status: bool = False
    #: TX forwards it to RX on the data socket (RX answers in kind).
    to_rx: bool = False


#: Every control command by name, in ``semalign ctl --help``'s order.
TABLE: dict[str, Command] = {
    Cmd.SET_MODULATION: Command(Arg.REQUIRED, "NAME", "modulation name", Applies.LINK_STATE,
                                "switch to a modulation (also switches AMC off)"),
    Cmd.SET_ALPHA: Command(Arg.ALPHA, "N", "alpha", Applies.LINK_STATE, "fix alpha at N (policy fixed)"),
    Cmd.SET_POLICY: Command(Arg.REQUIRED, "proportional|fixed", "policy", Applies.LINK_STATE, "the alpha policy"),
    Cmd.AMC: Command(Arg.REQUIRED, "on|off", "on/off for amc", Applies.RUN, "adaptive modulation on or off",
                     reports_status=True),
    Cmd.PAUSE: Command(Arg.NONE, "", "", Applies.RUN, "stop sending batches", reports_status=True),
    Cmd.RESUME: Command(Arg.NONE, "", "", Applies.RUN, "send batches again", reports_status=True),
    Cmd.STATUS: Command(Arg.NONE, "", "", Applies.RUN, "TX's figures, plan and receivers", reports_status=True),
    Cmd.SET_SHIFT: Command(Arg.REQUIRED, "SPEC", "shift spec (rotate:40+noise:0.1)", Applies.ALIGNMENT,
                           "sensor shift before PCA"),
    Cmd.CLEAR_SHIFT: Command(Arg.NONE, "", "", Applies.ALIGNMENT, "no sensor shift"),
    Cmd.SET_VALUE_TYPE: Command(Arg.REQUIRED, "float32|float16|int8", "value type (float32, float16, int8)",
                                Applies.ALIGNMENT, "the payload's value type"),
    Cmd.RESET_ADAPTER: Command(Arg.OPTIONAL, "ALPHA", "the alpha to reset-adapter (default all)", Applies.ALIGNMENT,
                               "RX forgets its carried-over adapters (of ALPHA, default all)", to_rx=True),
}
#: The commands' names, in the table's order.
COMMANDS = tuple(TABLE)


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


def make_reply(ok: bool, *, error: str | None = None, **fields: Any) -> dict[str, Any]:
    """A reply as the mapping it travels as: kept so until it is sent, and encoded once."""
    return {"v": PROTOCOL, "ok": ok, "error": error, **fields}


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    out: bytes = msgpack.packb(dict(reply), use_bin_type=True)
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
