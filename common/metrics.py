"""Per-batch metrics: one JSON object per line, appended and flushed as each batch completes.

Both daemons and the demo write this format; NaN is written as null so the file is strict JSON.
A record is also shown as one aligned row (``format_row``): the demo's table and the daemons'
batch log line on a terminal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class MetricsWriter:
    """Appends JSON lines to ``path``; a no-op when ``path`` is None.

    ``tags`` (e.g. the daemon's run id) are added to every record.
    """

    def __init__(self, path: str | Path | None, *, tags: dict[str, Any] | None = None) -> None:
        self._tags = dict(tags or {})
        self._file: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 (kept open for the daemon's life)

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(_clean({**record, **self._tags}), sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read every complete line of a metrics file (a partial last line is ignored)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


#: The row's columns: (record key, format of its cell); headings in the same order.
COLUMNS = (
    ("batch", "{:>5}"), ("modulation", "{:>10}"), ("alpha", "{:>5}"), ("b_max", "{:>8}"),
    ("n_train", "{:>7}"), ("payload_bytes", "{:>9}"), ("accuracy", "{:>8}"),
    ("latency_comm_s", "{:>9}"), ("latency_finetune_s", "{:>9}"), ("latency_classify_s", "{:>9}"),
    ("latency_e2e_s", "{:>9}"), ("shift", "{:>10}"), ("gate", "{:>6}"), ("align_action", "{:>8}"),
)
HEADINGS = ("batch", "mod", "alpha", "B_max", "N", "bytes", "acc", "comm s", "tune s", "class s", "e2e s",
            "shift", "gate", "align")
SIM_COLUMNS = (("snr_db", "{:>6}"), ("frames_lost", "{:>6}"), ("vectors_lost", "{:>6}"))
SIM_HEADINGS = ("SNR dB", "fr.lost", "v.lost")


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "accuracy":
        return f"{value:.3f}"
    if key == "snr_db":
        return f"{value:.1f}"
    if key == "gate":
        return f"{value:.3f}"
    if key.startswith("latency"):
        return f"{value:.4f}"
    return str(value)


def format_row(record: dict[str, Any], sim: bool = False) -> str:
    columns = COLUMNS + SIM_COLUMNS if sim else COLUMNS
    return " ".join(fmt.format(_cell(key, record.get(key))) for key, fmt in columns)


def format_header(sim: bool = False) -> str:
    columns, headings = (COLUMNS + SIM_COLUMNS, HEADINGS + SIM_HEADINGS) if sim else (COLUMNS, HEADINGS)
    return " ".join(fmt.format(h) for (_, fmt), h in zip(columns, headings, strict=True))
