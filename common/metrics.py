"""Per-batch metrics: one JSON object per line, appended and flushed as each batch completes.

Both daemons and the demo write this format; NaN is written as null so the file is strict JSON.
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
