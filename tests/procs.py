"""Helpers to run the real daemons as OS processes in tests, and to read what they wrote."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.metrics import read_metrics
from common.runtime import spawn_cli, stop_process

ROOT = Path(__file__).resolve().parents[1]


class Daemon:
    """A ``python -m common.cli ROLE ...`` child process with its output in a log file.

    A thin test handle over ``common.runtime.spawn_cli``/``stop_process``.
    """

    def __init__(self, role: str, args: list[str], log_path: Path) -> None:
        self.role = role
        self.log_path = log_path
        self.proc = spawn_cli([role, *args], log_path, env={"PYTHONPATH": str(ROOT)}, cwd=ROOT, append=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self.proc, timeout)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.role} did not exit within {timeout} s; log:\n{self.log_text()[-3000:]}") from None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metrics(path: Path) -> list[dict[str, Any]]:
    return read_metrics(path) if path.exists() else []
