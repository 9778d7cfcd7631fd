"""``semalign ctl``'s arguments are checked before they travel (issue 16, defect 13): an alpha
too large for msgpack was an OverflowError traceback; TX refuses one that arrives anyway."""

from __future__ import annotations

import msgpack
import pytest

from common.errors import ConfigError
from common.wire.messages import PROTOCOL
from tx import ctl
from tx.control import MAX_INT_ARG, ControlRequest


@pytest.mark.parametrize("alpha", [str(10**23), "0", "-3", str(MAX_INT_ARG + 1)])
def test_ctl_refuses_an_alpha_out_of_range(alpha: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        ctl.main(["set-alpha", alpha, "--tx", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"set-alpha expects an alpha in 1..{MAX_INT_ARG}" in err and "Traceback" not in err


def test_a_request_too_large_to_encode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must be an integer within"):
        ControlRequest("set-alpha", 10**23)


@pytest.mark.parametrize("arg", [2**63, 2**64 - 1, -(2**63), MAX_INT_ARG + 1])
def test_tx_refuses_a_huge_integer_from_the_wire(arg: int) -> None:
    """msgpack carries up to 64 bits: another client can send what ``ctl`` refuses."""
    frame = msgpack.packb({"v": PROTOCOL, "cmd": "set-alpha", "arg": arg}, use_bin_type=True)
    with pytest.raises(ConfigError, match="must be an integer within"):
        ControlRequest.decode(frame)


def test_in_range_requests_round_trip() -> None:
    req = ControlRequest("set-alpha", MAX_INT_ARG)
    assert ControlRequest.decode(req.encode()) == req


def test_a_request_for_every_receiver_is_what_it_was_and_one_names_its_receiver() -> None:
    """The optional rx key (issue 17): absent, the request is byte for byte the old one."""
    import msgpack

    from common.errors import ConfigError
    from tx.control import ControlRequest

    assert ControlRequest("status").encode() == msgpack.packb({"v": 1, "cmd": "status", "arg": None})
    assert ControlRequest.decode(ControlRequest("set-modulation", "64qam", rx="b").encode()) == \
        ControlRequest("set-modulation", "64qam", "b")
    with pytest.raises(ConfigError, match="receiver of pause must be a string"):
        ControlRequest.decode(msgpack.packb({"v": 1, "cmd": "pause", "arg": None, "rx": 3}))
    with pytest.raises(ConfigError, match="receiver of pause"):
        ControlRequest("pause", rx="x" * 33)


def test_ctl_prints_one_block_per_receiver_when_several_answered() -> None:
    from tx.ctl import format_reply

    one = {"ok": True, "message": "set-modulation applied from batch 3", "rx": "rx",
           "receivers": {"rx": {"ok": True, "message": "set-modulation applied from batch 3"}}}
    assert format_reply(one) == "set-modulation applied from batch 3"
    several = {"ok": True, "message": "a: m; b: m", "rx": ["a", "b"],
               "receivers": {"a": {"ok": True, "message": "m"}, "b": {"ok": True, "message": "m"}}}
    assert format_reply(several).splitlines() == ["a: m; b: m", "receiver a:", "  ok: True", "  message: m",
                                                  "receiver b:", "  ok: True", "  message: m"]
