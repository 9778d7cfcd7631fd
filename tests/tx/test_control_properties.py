"""Property test of the control decoder: any request frame is a command or a typed error."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError, EnvelopeError
from tx.control import COMMANDS, ControlRequest, decode_reply

values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(), st.text(max_size=30),
                   st.binary(max_size=30), st.lists(st.integers(-2**31, 2**31), max_size=3))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    body = draw(st.dictionaries(st.text(max_size=8), values, max_size=5))
    body.update({"v": draw(st.sampled_from([1, 1, 0])),
                 "cmd": draw(st.one_of(st.sampled_from(COMMANDS), values))})
    if draw(st.booleans()):
        body["arg"] = draw(values)
    out: bytes = msgpack.packb(body, use_bin_type=True)
    return out


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(requests())
def test_control_decoder_returns_a_request_or_a_typed_error(frame: bytes) -> None:
    try:
        req = ControlRequest.decode(frame)
    except (EnvelopeError, ConfigError):
        return
    assert req.cmd in COMMANDS
    assert req.arg is None or (isinstance(req.arg, str | int) and not isinstance(req.arg, bool))
    assert ControlRequest.decode(req.encode()) == req


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(requests())
def test_control_reply_decoder_returns_a_map_or_an_envelope_error(frame: bytes) -> None:
    try:
        reply = decode_reply(frame)
    except EnvelopeError:
        return
    assert isinstance(reply["ok"], bool)
