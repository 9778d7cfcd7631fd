"""The ``/metrics`` HTTP(S) endpoint: a bounded server, so idle or slow clients cannot exhaust a daemon.

prometheus-client's own server spends a thread per connection with no cap and no deadline:
1,000 idle TCP connections were 1,000 threads and every descriptor of the daemon. Here one
accept thread hands each connection to a pool of ``max_connections`` workers; a connection
beyond the cap, or beyond ``MAX_PER_ADDRESS`` from one address, is closed at once, and each one (TLS handshake included) must be answered
within ``deadline_s`` or its socket is shut down under the worker.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import prometheus_client as prom
from prometheus_client.exposition import choose_encoder

from common.errors import ConfigError
from common.log import get_logger
from common.transport.security import check_secret_file

log = get_logger("semalign.telemetry")

#: Longest request head (request line and headers) read; a scrape sends a few hundred bytes.
MAX_HEAD_BYTES = 8 * 1024
#: Seconds a connection may take from accept to the last byte of the answer (TLS handshake included).
DEADLINE_S = 5.0
#: How often the accept loop wakes to shut down connections past their deadline.
REAP_INTERVAL_S = 0.25
#: Connections waiting in the kernel's accept queue.
BACKLOG = 64
#: Workers one client address may hold at once: a stranger who opens idle connections (no
#: certificate needed to connect) holds at most this many of the pool, never the operator's scrape.
MAX_PER_ADDRESS = 2


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    """A server context for mutual TLS: our certificate, and only clients signed by ``client_ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    check_secret_file(key, "prometheus_key")
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"prometheus_cert/prometheus_key: cannot load {cert} with {key}: {exc}") from exc
    try:
        ctx.load_verify_locations(cafile=client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"prometheus_client_ca: cannot load {client_ca}: {exc}") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class MetricsServer:
    """Serves ``registry`` on ``addr:port`` (any path, GET or HEAD); ``port`` is the bound one."""

    def __init__(self, registry: prom.CollectorRegistry, addr: str, port: int, *, max_connections: int = 8,
                 tls: ssl.SSLContext | None = None, deadline_s: float = DEADLINE_S,
                 max_per_address: int = MAX_PER_ADDRESS) -> None:
        if max_connections < 1:
            raise ConfigError(f"prometheus_max_connections: expected an integer >= 1, got {max_connections}")
        self.registry = registry
        self.tls = tls
        self.deadline_s = deadline_s
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        #: Connections closed at accept because all workers, or this address's share, were busy.
        self.turned_away = 0
        #: Connections shut down at their deadline (idle, slow, or a stalled handshake).
        self.timed_out = 0
        self._slots = threading.BoundedSemaphore(max_connections)
        #: Open connections (the TLS-wrapped socket once wrapped) and their deadlines, by accept number.
        self._active: dict[int, tuple[socket.socket, float]] = {}
        self._accepted = 0
        #: Workers held by each client address.
        self._per_address: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        try:
            infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            self._listener = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(f"prometheus_addr: cannot listen on {addr}:{port}: {exc}") from exc
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(sockaddr)
            self._listener.listen(BACKLOG)
            self._listener.settimeout(REAP_INTERVAL_S)
        except OSError as exc:
            self._listener.close()
            raise ConfigError(f"prometheus_port: cannot listen on {addr}:{port}: {exc}") from exc
        self.port = int(self._listener.getsockname()[1])
        self._pool = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="metrics")
        self._thread = threading.Thread(target=self._accept_loop, name="metrics-accept", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            self._reap()
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                # EMFILE and the like: wait for a worker to free its descriptor rather than spin.
                time.sleep(REAP_INTERVAL_S)
                continue
            address = str(peer[0])
            with self._lock:
                crowded = self._per_address[address] >= self.max_per_address
            if crowded or not self._slots.acquire(blocking=False):
                self.turned_away += 1
                conn.close()
                continue
            self._accepted += 1
            with self._lock:
                self._per_address[address] += 1
                self._active[self._accepted] = (conn, time.monotonic() + self.deadline_s)
            self._pool.submit(self._serve, self._accepted, conn, address)

    def _reap(self) -> None:
        """Shut down connections past their deadline: the blocked worker's read returns at once."""
        now = time.monotonic()
        with self._lock:  # under the lock: a worker removes its connection before closing it
            for number in [n for n, (_, deadline) in self._active.items() if deadline <= now]:
                conn, _ = self._active.pop(number)
                self.timed_out += 1
                _shutdown(conn)

    def _serve(self, number: int, conn: socket.socket, address: str) -> None:
        stream: socket.socket = conn
        try:
            conn.settimeout(self.deadline_s)
            if self.tls is not None:
                # Wrapping moves the descriptor to the new socket: the reaper must hold that one.
                stream = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                with self._lock:
                    if number not in self._active:
                        return
                    self._active[number] = (stream, self._active[number][1])
                stream.do_handshake()
            head = _read_head(stream)
            if head is not None:
                stream.sendall(self._answer(head))
        except (OSError, ValueError):
            pass  # a client that went away, timed out, or failed the handshake costs its connection only
        except Exception as exc:  # a bug of ours must not kill the worker pool
            log.error("metrics_request_failed", detail=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._active.pop(number, None)
                self._per_address[address] -= 1
                if not self._per_address[address]:
                    del self._per_address[address]
            stream.close()
            self._slots.release()

    def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split(" ", 1)[0]
        if method not in ("GET", "HEAD"):
            return _response(405, "text/plain", b"only GET and HEAD\n")
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        return _response(200, content_type, b"" if method == "HEAD" else body, length=len(body))

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=2 * REAP_INTERVAL_S + 1)
        with self._lock:
            for conn, _ in self._active.values():
                _shutdown(conn)
            self._active.clear()
        self._pool.shutdown(wait=False)


def _shutdown(conn: socket.socket) -> None:
    # The plain socket's shutdown even for a TLS one: no TLS state is touched under its worker.
    with contextlib.suppress(OSError):  # closed already
        socket.socket.shutdown(conn, socket.SHUT_RDWR)


def _read_head(stream: Any) -> bytes | None:
    """The request up to its blank line, or None if the client closed or sent too much first."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            return None
        chunk = stream.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def _response(status: int, content_type: str, body: bytes, *, length: int | None = None) -> bytes:
    reason = {200: "OK", 405: "Method Not Allowed"}[status]
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body
