"""Process plumbing shared by the daemons and tools: signal-driven stop, free ports, child processes."""

from __future__ import annotations

import signal
import socket
import threading
from types import FrameType


class StopFlag:
    """Set by SIGINT/SIGTERM; daemons poll it between short waits."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now on ``host`` (for demos and tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
