"""The pieces of ``semalign demo`` without its processes: flags, the steering schedule, the table, the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.errors import TransportError
from common.metrics import format_row
from common.tools.demo import Steering, Table, parse_args, summarise
from common.tools.demo_stack import exit_note


@pytest.mark.parametrize(("argv", "message"), [
    (["--batches", "0"], "--batches must be >= 1"),
    (["--emulate"], "--emulate goes with --transport pluto"),
    (["--transport", "pluto"], "--emulate goes with --transport pluto"),
])
def test_flag_combinations_argparse_cannot_check_are_refused(argv: list[str], message: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


class FakeTx:
    def __init__(self, code: int | None = None) -> None:
        self.code = code

    def poll(self) -> int | None:
        return self.code


class FakeControl:
    """TX's control socket: records each request and answers it as TX would (or fails like a silent TX)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, int | None]] = []
        self.fail = fail

    def __call__(self, cmd: str, arg: str, *, tries: int | None = None) -> dict[str, Any]:
        self.calls.append((cmd, arg, tries))
        if self.fail:
            raise TransportError("no reply")
        if cmd == "set-modulation":
            return {"ok": True, "effective_from_batch": 4, "plan": {"b_max": 30000, "alpha": 30, "n_max": 191}}
        return {"ok": True, "effective_from_batch": 5}


SWITCH = "-- ctl set-modulation 64qam: from batch 4, B_max=30000 alpha=30 N_max=191"
SHIFT = "-- ctl set-shift rotate:30: from batch 5 (RX's gate and continual adapter take over)"


@pytest.mark.parametrize(("looks", "shift", "calls", "lines"), [
    # Rows as the demo sees them on each look: the switch halfway, the shift one row later.
    ([0, 3, 4, 4, 5, 6, 8], "rotate:30",
     [("set-modulation", "64qam", None), ("set-shift", "rotate:30", 1)], [SWITCH, SHIFT]),
    # All rows at once: still one request per look, the shift on the next one.
    ([8, 8, 8], "rotate:30", [("set-modulation", "64qam", None), ("set-shift", "rotate:30", 1)], [SWITCH, SHIFT]),
    ([8], "rotate:30", [("set-modulation", "64qam", None)], [SWITCH]),
    ([0, 4, 5, 8], "none", [("set-modulation", "64qam", None)], [SWITCH]),
])
def test_steering_switches_halfway_then_shifts_once(looks: list[int], shift: str, calls: list[Any],
                                                    lines: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    control = FakeControl()
    steering = Steering(8, "64qam", shift, control, FakeTx())
    for shown in looks:
        steering.step(shown)
    assert control.calls == calls
    assert capsys.readouterr().out.splitlines() == lines


def test_a_refused_request_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(cmd: str, arg: str, *, tries: int | None = None) -> dict[str, Any]:
        return {"ok": False, "error": f"unknown {arg}"}

    steering = Steering(2, "1024qam", "warp:9", refuse, FakeTx())
    steering.step(1)
    steering.step(2)
    assert capsys.readouterr().out.splitlines() == ["-- ctl set-modulation refused: unknown 1024qam",
                                                    "-- ctl set-shift refused: unknown warp:9"]


def test_a_silent_tx_that_finished_is_a_note_and_one_still_running_an_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    done = Steering(2, "64qam", "rotate:30", FakeControl(fail=True), FakeTx(code=0))
    done.step(1)
    done.step(2)  # TX has ended: no shift is asked for
    assert capsys.readouterr().out.splitlines() == ["-- ctl set-modulation refused: TX finished its batches first"]
    running = Steering(2, "64qam", "rotate:30", FakeControl(fail=True), FakeTx())
    with pytest.raises(TransportError):
        running.step(1)


def test_a_shift_tx_does_not_answer_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    control = FakeControl()
    steering = Steering(2, "64qam", "rotate:30", control, FakeTx())
    steering.step(1)
    control.fail = True
    steering.step(2)
    assert capsys.readouterr().out.splitlines()[-1] == "-- ctl set-shift refused: TX did not answer"


def record(batch: int, accuracy: float | None = 0.9, n_test: int = 50, **extra: Any) -> dict[str, Any]:
    return {"batch": batch, "status": "ok", "modulation": "64qam", "alpha": 30, "b_max": 30000, "n_test": n_test,
            "accuracy": accuracy, **extra}


def test_the_table_prints_each_row_once_as_tx_writes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "tx.jsonl"
    table = Table(metrics, sim=False)
    assert table.refresh() == 0  # TX has not written the file yet
    rows = [record(0), record(1), record(2)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    assert table.refresh() == 2
    assert table.refresh() == 2
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert table.close() == rows
    assert capsys.readouterr().out.splitlines() == [format_row(r, False) for r in rows]


def test_the_table_of_a_run_whose_daemon_failed_at_start_is_empty(tmp_path: Path) -> None:
    assert Table(tmp_path / "never-written.jsonl", sim=True).close() == []


@pytest.mark.parametrize(("records", "tx_code", "code", "out", "err"), [
    ([record(0, 1.0), record(1, 0.5)], 0, 0,
     "\n2/2 batches acknowledged; accuracy 0.7500 over 100 delivered test images; TX exit code 0\n", ""),
    # Accuracy is weighted by the test images that arrived; a batch without a score adds none.
    ([record(0, 1.0, n_test_delivered=10), record(1, 0.5, n_test_delivered=30), record(2, None)], 0, 1,
     "\n3/4 batches acknowledged; accuracy 0.6250 over 40 delivered test images; TX exit code 0\n", "demo incomplete"),
    ([record(0, None)], 0, 1,
     "\n1/4 batches acknowledged; accuracy - over 0 delivered test images; TX exit code 0\n", "demo incomplete"),
    ([], 3, 1, "", "tx exited with code 3: boom"),
])
def test_the_summary_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str], records: list[dict[str, Any]],
                                   tx_code: int, code: int, out: str, err: str) -> None:
    (tmp_path / "tx.log").write_text("starting\nboom\n\n")
    assert summarise(records, 2 if code == 0 else 4, tx_code, tmp_path) == code
    got = capsys.readouterr()
    assert got.out == out
    assert err in got.err and (code == 1) == ("demo incomplete: see" in got.err)


@pytest.mark.parametrize(("log", "last"), [("a\nthe error\n  \n", "the error"), ("", "(its log is empty)"),
                                           (None, "(its log is empty)")])
def test_exit_note_names_the_daemon_and_its_last_log_line(tmp_path: Path, log: str | None, last: str) -> None:
    path = tmp_path / "rx.log"
    if log is not None:
        path.write_text(log)
    assert exit_note(path, 2) == f"rx exited with code 2: {last}\n  (full log: {path})"
