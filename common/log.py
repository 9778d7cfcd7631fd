"""structlog set-up, done once per process: JSON lines off a TTY, a console renderer on one.

On a TTY a ``batch`` event (the daemons' canonical line per batch, ~35 fields) is one aligned
row, the demo's (``common.metrics.format_row``); off a TTY it is JSON with every field.

Also a progress line for long steps (pretraining, benchmarks): a bar redrawn in place on a
TTY, a plain line every few seconds off one (journald, CI logs), so minutes of work are never silent.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, TextIO, TypeVar

import structlog

from common.metrics import format_header, format_row

T = TypeVar("T")

#: On a TTY, the column headings are repeated every this many batch rows.
HEADER_EVERY = 20

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", *, stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure structlog for this process. ``json=None`` picks JSON unless ``stream`` is a TTY."""
    out = stream if stream is not None else sys.stderr
    if level not in _LEVELS:
        from common.errors import ConfigError

        raise ConfigError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    use_json = (not out.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else BatchRows(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


class BatchRows:
    """A console renderer that shows ``batch`` events as aligned rows under repeated headings.

    Everything else goes to ``console``. The row keeps the time of day; the figures it leaves
    out are in the JSON log off a TTY and in the metrics file.
    """

    def __init__(self, console: Callable[..., Any]) -> None:
        self.console = console
        self._rows = 0
        self._sim: bool | None = None

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        if event_dict.get("event") != "batch":
            return self.console(logger, method, event_dict)
        sim = event_dict.get("snr_db") is not None
        prefix = f"{str(event_dict.get('timestamp', ''))[11:19]:>8} batch "
        line = prefix + format_row(event_dict, sim)
        if self._rows % HEADER_EVERY == 0 or sim != self._sim:
            line = " " * len(prefix) + format_header(sim) + "\n" + line
            self._rows = 0
        self._rows += 1
        self._sim = sim
        return line


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


#: Width of the bar drawn on a TTY, in characters.
BAR_WIDTH = 24
#: Off a TTY, at most one progress line per this many seconds (plus the last one).
PROGRESS_EVERY_S = 10.0


class Progress:
    """``label [#####.....] done/total detail`` for one long step.

    On a TTY the line is redrawn in place at every ``update``; off one (``every_s`` set) a
    plain line is written at most every ``every_s`` seconds, and always for the last step, so
    a log shows the work moving without a line per step.
    """

    def __init__(self, label: str, total: int | None, *, stream: TextIO | None = None,
                 every_s: float | None = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.out = stream if stream is not None else sys.stderr
        self.tty = self.out.isatty()
        self.every_s = every_s
        self._clock = clock
        self._started = clock()
        self._last_line: float | None = None
        self._drawn = False

    def line(self, done: int, detail: str = "") -> str:
        elapsed = f"{self._clock() - self._started:.0f} s"
        if self.total:
            filled = min(BAR_WIDTH, BAR_WIDTH * done // self.total)
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.total}"
        else:
            bar = str(done)
        return " ".join(part for part in (self.label, bar, detail, elapsed) if part)

    def update(self, done: int, detail: str = "") -> None:
        if self.tty:
            self.out.write(f"\r{self.line(done, detail)}\x1b[K")
            self.out.flush()
            self._drawn = True
            return
        if self.every_s is None:
            return
        now = self._clock()
        last = self.total is not None and done >= self.total
        if last or self._last_line is None or now - self._last_line >= self.every_s:
            self._last_line = now
            self.out.write(self.line(done, detail) + "\n")
            self.out.flush()

    def close(self) -> None:
        """End the TTY line (the next output starts on a fresh one)."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False


def progress(items: Iterable[T], label: str, total: int | None = None, stream: TextIO | None = None,
             every_s: float | None = None) -> Iterator[T]:
    """Yield ``items``, drawing ``label i/total`` on one line when ``stream`` is a TTY.

    Off a TTY it is silent unless ``every_s`` asks for a plain line that often.
    """
    n = total if total is not None else (len(items) if isinstance(items, Sized) else None)
    bar = Progress(label, n, stream=stream, every_s=every_s)
    try:
        for i, item in enumerate(items, 1):
            bar.update(i)
            yield item
    finally:
        bar.close()
