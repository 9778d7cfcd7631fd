"""Where the watcher's messages come from: SUB sockets on the daemons' monitor streams, or a twin.

A SUB socket reconnects by itself to an absent or restarted daemon, but libzmq ends the session
for good once the daemon refused its handshake (ZAP said 400, or one side has CURVE keys and the
other has none). So each socket's handshakes are watched through a zmq socket monitor: a refusal
is kept as that endpoint's ``Refusal`` (the screen says why) and the socket is rebuilt after a
back-off, so that a key allowed later and a daemon restarted are met by the same watcher.
``poll`` never blocks.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from common.errors import ConfigError, MonitorError
from common.telemetry.stream import MAX_BODY_BYTES, MonitorMessage
from common.transport.security import SecurityConfig, secure_client
from common.transport.zmq import make_socket

#: Messages read per ``poll`` at most, so one busy stream cannot freeze the screen.
MAX_PER_POLL = 500
#: Socket-monitor events read per endpoint and ``poll`` at most.
MAX_EVENTS_PER_POLL = 64
#: Messages a subscriber queues before zmq drops (a watcher that lags loses messages, not memory).
RCVHWM = 2000
#: Reconnect interval towards an absent daemon.
RECONNECT_MS = 500
#: A refused socket is rebuilt after this back-off, doubled per refusal up to the cap: a daemon
#: logs and counts every refused handshake, so a watcher left refused must not hammer it.
REBUILD_MIN_S = 1.0
REBUILD_MAX_S = 10.0
#: The handshake outcomes a source listens for.
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

NOT_ALLOWED = "your key is not in its monitor allow-list (or wrong peer key)"
NEEDS_KEYS = ("it requires CURVE keys: give watch the operator's key and the daemon's public key "
              "(--key with --tx-peer/--rx-peer, or security.key, security.peer and rx_peer in --config ctl.yaml)")
HAS_NO_KEYS = "it runs without CURVE keys while this watcher has them (drop --key, or give the daemon a security.key)"
WRONG_PEER = ("the handshake failed: wrong peer key (the daemon's public key: --tx-peer/--rx-peer, "
              "security.peer/rx_peer), or not a monitor socket")


@dataclass(frozen=True)
class Refusal:
    """Why a daemon turned this watcher away, and how often it is asked again."""

    reason: str
    #: Seconds from the refusal until the socket is rebuilt and tries again; None when zmq retries by itself.
    retry_s: float | None
    #: Refusals of this endpoint so far (tells one refusal from the next when both read the same).
    count: int = 1


class Source(Protocol):
    bad: int

    def poll(self) -> list[MonitorMessage]: ...

    def refusals(self) -> Mapping[str, Refusal]: ...

    def close(self) -> None: ...


_monitor_ids = itertools.count()


class _Link:
    """One daemon's stream: a SUB socket, the monitor on its handshakes, and its rebuild schedule."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, security: SecurityConfig | None,
                 backoff: tuple[float, float]) -> None:
        self._ctx = ctx
        self.endpoint = endpoint
        self.security = security
        self.refusal: Refusal | None = None
        self.refused = 0
        self.rebuilds = 0
        self._backoff = backoff
        self._delay = backoff[0]
        self._retry_at: float | None = None
        self.sock, self.events, self.secured = self._open()

    def _open(self) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], bool]:
        # No larger body decodes (stream.py); the slack is CURVE's framing around it.
        sock = make_socket(self._ctx, zmq.SUB, max_msg=MAX_BODY_BYTES + 1024)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            secured = self.security is not None and secure_client(sock, self.security, endpoint=self.endpoint)
            # The monitor is attached before connect, so not one handshake goes unseen.
            address = f"inproc://semalign-watch-monitor-{next(_monitor_ids)}"
            sock.monitor(address, HANDSHAKE_EVENTS)
            events = make_socket(self._ctx, zmq.PAIR)
            events.connect(address)
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ConfigError(f"watch: cannot connect to {self.endpoint}: {exc}") from exc
        except ConfigError:
            sock.close(0)
            raise
        return sock, events, secured

    def check(self, now: float) -> None:
        """Read the handshake outcomes; rebuild the socket once a refusal's back-off is over."""
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                event = recv_monitor_message(self.events, flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_event(int(event["event"]), int(event["value"]), now)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._close()
            self.sock, self.events, self.secured = self._open()
            self.rebuilds += 1

    def _on_event(self, kind: int, value: int, now: float) -> None:
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.refusal, self._retry_at, self._delay = None, None, self._backoff[0]
            return
        if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.secured:
            # The daemon hung up mid-handshake: it could not read our hello (a wrong peer key), and
            # zmq tries again by itself. A refusal with a reason, met before, says more: kept.
            if self.refusal is None or self.refusal.retry_s is None:
                self.refused += 1
                self.refusal = Refusal(WRONG_PEER, None, self.refused)
            return
        if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.refusal is not None and self._retry_at is not None:
            return  # the same refused socket's hang-up, already scheduled for a rebuild
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            reason = NOT_ALLOWED
        elif value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH or kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # A watcher without keys has no peer key to get wrong: the CURVE daemon wants keys.
            # Its hang-up may reach us without detail, after which libzmq need not try again, so
            # it is treated as the mismatch it is: a new socket after the back-off.
            reason = HAS_NO_KEYS if self.secured else NEEDS_KEYS
        else:
            reason = f"the handshake failed (ZMTP protocol error {value:#x})"
        # libzmq does not reconnect after these: this socket is done, a new one tries later.
        self.refused += 1
        self.refusal = Refusal(reason, self._delay, self.refused)
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, self._backoff[1])

    def recv(self, out: list[MonitorMessage], limit: int) -> int:
        """Append up to ``limit - len(out)`` decoded messages to ``out``; return the malformed ones."""
        bad = 0
        while len(out) < limit:
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                out.append(MonitorMessage.decode(frames))
            except MonitorError:
                bad += 1
        return bad

    def _close(self) -> None:
        self.sock.disable_monitor()
        self.events.close(0)
        self.sock.close(0)

    def close(self) -> None:
        if not self.sock.closed:
            self._close()


class MonitorSource:
    """Subscribes to every topic of each endpoint given (TX's, and RX's when set).

    ``security`` holds the operator's key; ``peers`` maps an endpoint to its daemon's public key.
    """

    def __init__(self, endpoints: Iterable[str], *, ctx: Any = None, security: SecurityConfig | None = None,
                 peers: Mapping[str, str] | None = None, backoff: tuple[float, float] = (REBUILD_MIN_S, REBUILD_MAX_S),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ctx = ctx or zmq.Context.instance()
        self._clock = clock
        self.bad = 0
        self.links: list[_Link] = []
        try:
            for endpoint in endpoints:
                peer = (peers or {}).get(endpoint)
                secured = replace(security, peer=peer) if security is not None and peer else security
                self.links.append(_Link(self._ctx, endpoint, secured, backoff))
        except ConfigError:
            self.close()
            raise

    def poll(self) -> list[MonitorMessage]:
        now = self._clock()
        out: list[MonitorMessage] = []
        for link in self.links:
            link.check(now)
            self.bad += link.recv(out, MAX_PER_POLL)
        return out

    def refusals(self) -> dict[str, Refusal]:
        """The endpoints whose daemon refused this watcher at the last handshake, and why."""
        return {link.endpoint: link.refusal for link in self.links if link.refusal is not None}

    def close(self) -> None:
        for link in self.links:
            link.close()


class FakeSource:
    """In-memory twin: tests ``push`` messages (or raw frames) that the next ``poll`` returns,
    and set ``refused`` as a daemon's refusal would."""

    def __init__(self) -> None:
        self.bad = 0
        self.queue: collections.deque[list[bytes]] = collections.deque()
        self.refused: dict[str, Refusal] = {}

    def push(self, message: MonitorMessage | list[bytes]) -> None:
        self.queue.append(message.encode() if isinstance(message, MonitorMessage) else message)

    def poll(self) -> list[MonitorMessage]:
        out: list[MonitorMessage] = []
        while self.queue and len(out) < MAX_PER_POLL:
            try:
                out.append(MonitorMessage.decode(self.queue.popleft()))
            except MonitorError:
                self.bad += 1
        return out

    def refusals(self) -> dict[str, Refusal]:
        return dict(self.refused)

    def close(self) -> None:
        self.queue.clear()
