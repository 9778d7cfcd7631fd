"""Process plumbing shared by the daemons, tools and tests: signal-driven stop, free ports, children.

``spawn``/``spawn_cli`` and ``stop_process`` are the one way semalign starts and stops a child process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

#: Seconds a child gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0


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


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    append: bool = False,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr going to ``log_path`` and stdin from /dev/null.

    ``env`` replaces the environment (None inherits it); ``append`` keeps an existing log;
    ``new_session`` puts the child in its own process group, so ``stop_process(group=True)``
    also reaches the processes it starts.
    """
    with log_path.open("ab" if append else "wb") as log_file:
        # The child holds its own copy of the descriptor; the parent's closes here.
        return subprocess.Popen(
            list(argv), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env), cwd=cwd, start_new_session=new_session,
        )


def spawn_cli(
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``python -m common.cli ARGS...`` (unbuffered) with this interpreter.

    ``env`` adds to (and overrides) this process's environment.
    """
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return spawn([sys.executable, "-m", "common.cli", *args], log_path,
                 env=child_env, cwd=cwd, append=append)


def stop_process(
    proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S, *, group: bool = False
) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code.

    ``group`` signals the child's whole process group (see ``spawn(new_session=True)``) and
    kills what is left of it at the end, so no grandchild outlives the call.
    """

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    if proc.poll() is None or group:
        send(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait()
        if group:
            # The leader may exit before its children: leave nothing of the group behind.
            send(signal.SIGKILL)
    return proc.returncode
