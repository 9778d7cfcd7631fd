"""A delaying TCP relay for fault tests: one-way delay with jitter, and outages on demand.

Where the kernel has no ``netem``, this plays the slow link: every chunk read from one side
is written to the other ``delay + jitter`` later (order kept, as TCP keeps it). During an
outage nothing moves and new connections are held unconnected, as if every packet were
dropped; afterwards the held bytes flow on, as TCP's retransmissions would deliver them.

As a process (``python -m tests.integration.netfault.relay LISTEN UPSTREAM --delay-ms 150``)
SIGUSR1 starts an outage and SIGUSR2 ends it; it stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import random
import signal
import socket
import threading
import time
from types import FrameType

CHUNK = 65536
#: How often idle threads look at the stop flag.
TICK_S = 0.05


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Relay:
    """Listens on ``listen`` and relays each connection to ``upstream`` through a slow link."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], *, delay_s: float = 0.0,
                 jitter_s: float = 0.0, seed: int = 0) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._up = threading.Event()
        self._up.set()
        self._stop = threading.Event()
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.settimeout(TICK_S)
        self.address = self.server.getsockname()[:2]
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> Relay:
        self._accept.start()
        return self

    def outage(self, on: bool) -> None:
        (self._up.clear if on else self._up.set)()

    def close(self) -> None:
        self._stop.set()
        self._up.set()
        self._accept.join(5)
        self.server.close()
        for thread in self._threads:
            thread.join(5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._connection, args=(client,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _wait_up(self) -> bool:
        while not self._up.wait(TICK_S):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()

    def _connection(self, client: socket.socket) -> None:
        # A connection made during an outage stays unconnected upstream until the link is back.
        if not self._wait_up():
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        done = threading.Event()
        pipes = [threading.Thread(target=self._pipe, args=(a, b, done), daemon=True)
                 for a, b in ((client, upstream), (upstream, client))]
        for pipe in pipes:
            pipe.start()
        for pipe in pipes:
            pipe.join()
        for sock in (client, upstream):
            sock.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, done: threading.Event) -> None:
        chunks: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        writer = threading.Thread(target=self._write, args=(chunks, dst, done), daemon=True)
        writer.start()
        src.settimeout(TICK_S)
        last = 0.0
        while not done.is_set() and not self._stop.is_set():
            try:
                data = src.recv(CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            with self._rng_lock:
                jitter = self._rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
            last = max(last, time.monotonic() + max(0.0, self.delay_s + jitter))
            chunks.put((last, data))
        chunks.put(None)
        writer.join()
        done.set()
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _write(self, chunks: queue.Queue[tuple[float, bytes] | None], dst: socket.socket,
               done: threading.Event) -> None:
        while True:
            try:
                item = chunks.get(timeout=TICK_S)
            except queue.Empty:
                if done.is_set() or self._stop.is_set():
                    return
                continue
            if item is None:
                return
            due, data = item
            while (wait := due - time.monotonic()) > 0 and not self._stop.is_set():
                time.sleep(min(wait, TICK_S))
            if not self._wait_up():
                return
            try:
                dst.sendall(data)
            except OSError:
                done.set()
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("listen", help="HOST:PORT to listen on")
    parser.add_argument("upstream", help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    relay = Relay(_addr(args.listen), _addr(args.upstream), delay_s=args.delay_ms / 1000,
                  jitter_s=args.jitter_ms / 1000, seed=args.seed).start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGUSR1:
            relay.outage(True)
        elif signum == signal.SIGUSR2:
            relay.outage(False)
        else:
            stop.set()

    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"relay listening on {relay.address[0]}:{relay.address[1]}", flush=True)
    while not stop.wait(TICK_S):
        pass
    relay.close()


if __name__ == "__main__":
    main()
