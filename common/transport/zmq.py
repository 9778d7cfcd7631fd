"""ZeroMQ sockets as semalign sets them up: LINGER 0, and a MAXMSGSIZE backstop where asked.

LINGER 0 keeps a daemon from hanging at exit on undeliverable messages (zguide).
"""

from __future__ import annotations

import zmq


def make_socket(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, *, max_msg: int | None = None) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if max_msg is not None:
        # Transport-level backstop: zmq drops the peer before allocating an oversize message.
        sock.setsockopt(zmq.MAXMSGSIZE, max_msg)
    return sock
