"""The forwarded adapter reset: round trip both ways, refusals of malformed fields."""

from __future__ import annotations

import msgpack
import pytest

from common.errors import EnvelopeError
from common.wire import messages


@pytest.mark.parametrize("msg", [messages.AdaptReset(), messages.AdaptReset(alpha=40),
                                 messages.AdaptReset(alpha=None, reset=[10, 40]), messages.AdaptReset(40, [])])
def test_round_trip(msg: messages.AdaptReset) -> None:
    assert messages.decode_reply(msg.encode()) == msg
    assert messages.AdaptReset.decode(messages.unpack(msg.encode())) == msg


@pytest.mark.parametrize("fields", [{"alpha": 0}, {"alpha": 70000}, {"alpha": "40"}, {"alpha": True},
                                    {"reset": [1, "x"]}, {"reset": 5}, {"reset": [True]}])
def test_malformed_refused(fields: dict[str, object]) -> None:
    frame = msgpack.packb({"v": 1, "kind": messages.KIND_ADAPT_RESET, **fields})
    with pytest.raises(EnvelopeError):
        messages.decode_reply(frame)
