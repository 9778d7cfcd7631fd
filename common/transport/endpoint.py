"""ZeroMQ endpoint strings, checked in one place before any socket sees them.

zmq answers a malformed endpoint with a bare ``EINVAL`` (and ``127.0.0.1:5557`` is not even
an address to the security rules), so every bind and connect goes through ``check_endpoint``.
"""

from __future__ import annotations

from common.errors import ConfigError

#: The transports semalign uses; anything else is a typo or a missing ``tcp://``.
SCHEMES = ("tcp", "ipc", "inproc")

EXPECTED = "tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555), ipc://PATH or inproc://NAME"


def check_endpoint(endpoint: str, what: str = "endpoint") -> str:
    """``endpoint`` itself if zmq can use it, else ConfigError saying what was expected."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in SCHEMES:
        hint = f"; did you mean tcp://{endpoint}?" if not sep and ":" in endpoint else ""
        raise ConfigError(f"{what}: expected {EXPECTED}, got {endpoint!r}{hint}")
    if not rest:
        raise ConfigError(f"{what}: expected {EXPECTED}, got {endpoint!r} (nothing after {scheme}://)")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
            raise ConfigError(f"{what}: expected {EXPECTED}, got {endpoint!r} (a tcp endpoint needs "
                              "HOST:PORT with a port in 1..65535 or *)")
    return endpoint
