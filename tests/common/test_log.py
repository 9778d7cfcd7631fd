"""``common.log`` (issue 16): a batch is one aligned row on a TTY and JSON with every field off
one (defect 16); long steps show progress on a TTY and in plain periodic lines off one (defect 15)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from common import log
from common.metrics import format_header, format_row

RECORD = {"batch": 7, "modulation": "64qam", "alpha": 20, "b_max": 4096, "n_train": 64, "payload_bytes": 4000,
          "accuracy": 0.875, "latency_comm_s": 0.01, "latency_finetune_s": 0.2, "latency_classify_s": 0.001,
          "latency_e2e_s": 0.25, "shift": "none", "gate": 0.5, "align_action": "adapt", "t_a_ns": 1, "t_b_ns": 2,
          "rx_done_ns": 3, "comm": {"bound_s": 0.001}, "status": "ok", "run": "abc", "n_test": 100}


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_batch_is_one_aligned_row_on_a_tty() -> None:
    out = Tty()
    log.configure(stream=out)
    logger = log.get_logger("test")
    for batch in range(3):
        logger.info("batch", **{**RECORD, "batch": batch})
    lines = out.getvalue().splitlines()
    # The headings once, then one line per batch, the columns lined up under them.
    assert len(lines) == 4
    assert lines[0].endswith(format_header())
    for batch, line in enumerate(lines[1:]):
        assert line.endswith(format_row({**RECORD, "batch": batch}))
        assert len(line) == len(lines[0])
    assert "t_a_ns" not in out.getvalue()


def test_other_events_keep_the_console_renderer() -> None:
    out = Tty()
    log.configure(stream=out)
    log.get_logger("test").info("rx_ready", endpoint="tcp://127.0.0.1:5555")
    assert "rx_ready" in out.getvalue() and "endpoint" in out.getvalue()


def test_the_headings_come_back_every_so_many_rows() -> None:
    out = Tty()
    log.configure(stream=out)
    for batch in range(log.HEADER_EVERY + 1):
        log.get_logger("test").info("batch", **{**RECORD, "batch": batch})
    assert out.getvalue().count(format_header().strip()) == 2


def test_a_batch_is_json_with_every_field_off_a_tty() -> None:
    out = io.StringIO()
    log.configure(stream=out)
    log.get_logger("test").info("batch", **RECORD)
    line = json.loads(out.getvalue())
    assert {k: line[k] for k in RECORD} == RECORD


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_off_a_tty_is_a_line_every_few_seconds_and_the_last() -> None:
    out, clock = io.StringIO(), Clock()
    bar = log.Progress("epochs", 10, stream=out, every_s=10.0, clock=clock)
    for step in range(1, 11):
        clock.now = step * 3.0
        bar.update(step, f"loss {1 / step:.2f}")
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split("] ")[1].split()[0] for line in lines] == ["1/10", "5/10", "9/10", "10/10"]
    assert lines[-1] == "epochs [########################] 10/10 loss 0.10 30 s"


def test_progress_on_a_tty_redraws_one_line() -> None:
    out = Tty()
    bar = log.Progress("epochs", 4, stream=out, clock=Clock())
    for step in range(1, 5):
        bar.update(step)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    assert "[############............] 2/4" in text


def test_progress_iterator_is_silent_off_a_tty_unless_asked() -> None:
    out = io.StringIO()
    assert list(log.progress(range(3), "x", stream=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    assert list(log.progress(range(3), "x", stream=out, every_s=0.0)) == [0, 1, 2]
    assert len(out.getvalue().splitlines()) == 3
