"""Endpoints are checked in one place (issue 16, defect 13): a missing ``tcp://`` is named as
such, not left to zmq's bare EINVAL or to the loopback rule's "not a loopback address"."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.transport.endpoint import check_endpoint
from common.transport.security import SecurityConfig, secure_client


@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:5555", "tcp://*:5555", "tcp://127.0.0.1:*", "tcp://[::1]:5555", "tcp://rx-laptop:5555",
    "tcp://eth0:5555", "ipc:///run/semalign/rx.sock", "inproc://rx",
])
def test_good_endpoints_pass(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(("endpoint", "message"), [
    ("127.0.0.1:5557", "did you mean tcp://127.0.0.1:5557?"),
    ("localhost:5555", "did you mean tcp://localhost:5555?"),
    ("udp://127.0.0.1:5555", "expected tcp://HOST:PORT"),
    ("tcp://", "nothing after tcp://"),
    ("tcp://127.0.0.1", "HOST:PORT"),
    ("tcp://127.0.0.1:0", "port in 1..65535"),
    ("tcp://127.0.0.1:70000", "port in 1..65535"),
    ("tcp://:5555", "HOST:PORT"),
    ("", "expected tcp://HOST:PORT"),
])
def test_bad_endpoints_say_what_was_expected(endpoint: str, message: str) -> None:
    with pytest.raises(ConfigError, match="expected tcp://HOST:PORT") as info:
        check_endpoint(endpoint, "monitor")
    assert message in str(info.value) and str(info.value).startswith("monitor: ")


def test_the_loopback_rule_sees_the_endpoint_error_first() -> None:
    """``watch --tx 127.0.0.1:5557`` used to be told it is "not a loopback address"."""
    with pytest.raises(ConfigError) as info:
        secure_client(None, SecurityConfig(), endpoint="127.0.0.1:5557")  # type: ignore[arg-type]
    assert "did you mean tcp://127.0.0.1:5557?" in str(info.value)
    assert "loopback" not in str(info.value)
