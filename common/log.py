"""structlog set-up, done once per process: JSON lines off a TTY, a console renderer on one.

Also a tiny TTY-only progress line for long steps (pretraining, benchmarks).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TextIO, TypeVar

import structlog

T = TypeVar("T")

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
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
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


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def progress(items: Iterable[T], label: str, total: int | None = None, stream: TextIO | None = None) -> Iterator[T]:
    """Yield ``items``, drawing ``label i/total`` on one line when ``stream`` is a TTY."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield from items
        return
    n = total if total is not None else (len(items) if isinstance(items, Sized) else None)
    for i, item in enumerate(items, 1):
        out.write(f"\r{label} {i}/{n}" if n else f"\r{label} {i}")
        out.flush()
        yield item
    out.write("\n")
    out.flush()
