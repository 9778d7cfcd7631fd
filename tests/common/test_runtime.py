"""Child processes through ``common.runtime``: spawned with their output logged, always stopped."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from common.runtime import spawn, spawn_cli, stop_process

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
#: Ignores SIGTERM, so only SIGKILL ends it.
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)")


def _wait_for_text(path: Path, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_spawn_logs_output_and_stop_terminates(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    proc = spawn([sys.executable, "-c", SLEEPER], log)
    try:
        _wait_for_text(log, "up")
    finally:
        code = stop_process(proc, 5.0)
    assert code == -signal.SIGTERM


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    proc = spawn([sys.executable, "-c", STUBBORN], log)
    _wait_for_text(log, "up")
    started = time.monotonic()
    assert stop_process(proc, 0.3) == -signal.SIGKILL
    assert time.monotonic() - started < 5.0


def test_stop_group_reaches_grandchildren(tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    grandchild = f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}]); " \
                 "print('pid', p.pid, flush=True); p.wait()"
    proc = spawn([sys.executable, "-c", grandchild], log, new_session=True)
    _wait_for_text(log, "pid")
    _wait_for_text(log, "up")
    pid = int(log.read_text().split("pid", 1)[1].split()[0])
    stop_process(proc, 2.0, group=True)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # Reparented to init (or a subreaper) it may linger as a zombie until reaped.
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.05)
    pytest.fail(f"grandchild {pid} outlived stop_process(group=True)")


def test_stop_is_idempotent_and_returns_the_exit_code(tmp_path: Path) -> None:
    proc = spawn([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "child.log")
    proc.wait(10)
    assert stop_process(proc) == 3
    assert stop_process(proc) == 3


def test_spawn_cli_runs_semalign_and_appends(tmp_path: Path) -> None:
    log = tmp_path / "cli.log"
    log.write_text("earlier run\n")
    proc = spawn_cli(["--help"], log, append=True)
    assert proc.wait(60) == 0
    text = log.read_text()
    assert text.startswith("earlier run\n") and "usage" in text.lower()
