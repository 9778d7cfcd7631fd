"""TX's journal of batches sent and not yet scored, so a TX restarted after a kill scores them.

One small JSON file beside the metrics, rewritten atomically (temporary file, rename) once
before a batch is first sent and once when it is scored or declared lost. It is kept for a
TX process that is killed (the page cache outlives the process), not for a host that loses
power: no fsync on the batch loop's path. What it keeps of a batch is
what scoring needs once the process that built it is gone: the run and batch ids and A (RX's
report cache key), the test labels only TX holds, and the batch's metrics fields. Bounded in
entries and bytes; a file that does not read as a journal is set aside, never trusted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import JournalError
from common.wire.messages import MAX_RUN_CHARS
from common.wire.payload import MAX_COUNT

VERSION = 1
#: Batches kept at most; beyond it the oldest are given up (the daemon writes their rows as lost).
MAX_ENTRIES = 1024
#: Largest journal read or written: 65535 labels are 128 KiB as hex, a few dozen such batches fit.
MAX_BYTES = 16 * 1024 * 1024
#: What a journal file that did not read is renamed to (kept for a person to look at).
SET_ASIDE_SUFFIX = ".unreadable"
#: The receiver an entry belongs to when the journal does not say (one written by a one-receiver
#: TX): ``tx.config.DEFAULT_RX``, spelled here too so the journal imports no config.
DEFAULT_RX = "rx"


@dataclass(frozen=True)
class Entry:
    """One batch a run sent and had not scored: enough to score RX's report of it later."""

    run: str
    batch_id: int
    t_a_ns: int
    #: [t] the test labels, one byte each (``NO_LABEL`` where the batch had none).
    labels: npt.NDArray[np.uint8]
    #: The batch's metrics fields (``tx.scoring.base_record``) as built by that run.
    record: dict[str, Any]
    #: The receiver the batch was sent to: its recall goes to that RX (each has its own batch ids).
    rx: str = DEFAULT_RX

    @property
    def key(self) -> tuple[str, int]:
        """The batch among one receiver's (RX's report cache key)."""
        return self.run, self.batch_id

    @property
    def slot(self) -> tuple[str, str, int]:
        """The batch among every receiver's."""
        return self.rx, self.run, self.batch_id

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "batch_id": self.batch_id, "t_a_ns": self.t_a_ns,
                "labels": self.labels.tobytes().hex(), "record": self.record, "rx": self.rx}

    @classmethod
    def from_dict(cls, obj: object) -> Entry:
        if not isinstance(obj, dict):
            raise JournalError(f"an entry must be a map, got {type(obj).__name__}")
        run, batch_id, t_a_ns = obj.get("run"), obj.get("batch_id"), obj.get("t_a_ns")
        labels, record, rx = obj.get("labels"), obj.get("record"), obj.get("rx", DEFAULT_RX)
        if not isinstance(rx, str) or not 1 <= len(rx) <= MAX_RUN_CHARS:
            raise JournalError(f"entry rx: expected 1..{MAX_RUN_CHARS} characters, got {rx!r:.80}")
        if not isinstance(run, str) or not 1 <= len(run) <= MAX_RUN_CHARS:
            raise JournalError(f"entry run: expected 1..{MAX_RUN_CHARS} characters, got {run!r:.80}")
        for name, value in (("batch_id", batch_id), ("t_a_ns", t_a_ns)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                raise JournalError(f"entry {name}: expected an integer >= 0, got {value!r:.80}")
        if not isinstance(labels, str) or len(labels) > 2 * MAX_COUNT:
            raise JournalError("entry labels: expected hex of at most 65535 bytes")
        try:
            raw = bytes.fromhex(labels)
        except ValueError as exc:
            raise JournalError(f"entry labels: not hex ({exc})") from None
        if not isinstance(record, dict):
            raise JournalError(f"entry record: expected a map, got {type(record).__name__}")
        return cls(run, int(batch_id), int(t_a_ns),  # type: ignore[arg-type]
                   np.frombuffer(raw, dtype=np.uint8).copy(), record, rx)


def entry_labels(test_labels: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """A batch's test labels as the journal keeps them: one byte, as the wire carries labels;
    a batch without labels (-1) keeps 0xFF, which no delivered prediction equals."""
    return np.where(test_labels < 0, 0xFF, test_labels).astype(np.uint8)


class Journal:
    """The journal at ``path`` (None: keep nothing). ``load`` reads what an earlier run left."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path).expanduser()
        self._entries: dict[tuple[str, str, int], Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def load(self) -> list[Entry]:
        """The entries on disk (all kept in this journal). ``JournalError`` if the file does
        not read as a journal: it is then renamed ``*.unreadable`` and the journal starts empty."""
        if self.path is None or not self.path.exists():
            return []
        try:
            entries = self._read(self.path)
        except JournalError:
            # Set aside for a person to look at; if even that fails (a read-only directory),
            # the error still says what was wrong and TX starts without it.
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_name(self.path.name + SET_ASIDE_SUFFIX))
            raise
        for entry in entries[-MAX_ENTRIES:]:
            self._entries[entry.slot] = entry
        return list(self._entries.values())

    @staticmethod
    def _read(path: Path) -> list[Entry]:
        try:
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise JournalError(f"{path} is {size} bytes, a journal is at most {MAX_BYTES}")
            obj = json.loads(path.read_bytes())
        except OSError as exc:
            raise JournalError(f"cannot read {path}: {exc.strerror}") from exc
        except (ValueError, RecursionError) as exc:  # JSON or UTF-8
            raise JournalError(f"{path} is not JSON ({exc})") from None
        if not isinstance(obj, dict) or obj.get("v") != VERSION or not isinstance(obj.get("entries"), list):
            raise JournalError(f"{path}: expected {{v: {VERSION}, entries: [...]}}")
        return [Entry.from_dict(e) for e in obj["entries"]]

    def put(self, entry: Entry) -> list[Entry]:
        """Keep ``entry`` (on disk before this returns); the oldest entries given up to stay
        within ``MAX_ENTRIES`` and ``MAX_BYTES`` are returned."""
        self._entries[entry.slot] = entry
        evicted = []
        body = self._body()
        while len(self._entries) > 1 and (len(self._entries) > MAX_ENTRIES or len(body) > MAX_BYTES):
            evicted.append(self._entries.pop(next(iter(self._entries))))
            body = self._body()
        self._write(body)
        return evicted

    def drop(self, run: str, batch_id: int, rx: str = DEFAULT_RX) -> Entry | None:
        """Forget receiver ``rx``'s batch that was scored or declared lost; None if it was not kept."""
        entry = self._entries.pop((rx, run, batch_id), None)
        if entry is not None:
            self._write(self._body())
        return entry

    def _body(self) -> bytes:
        if self.path is None:
            return b""
        return json.dumps({"v": VERSION, "entries": [e.to_dict() for e in self._entries.values()]},
                          separators=(",", ":")).encode()

    def _write(self, body: bytes) -> None:
        if self.path is None:
            return
        try:
            if not self._entries:
                self.path.unlink(missing_ok=True)  # nothing owed: no file
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot write {self.path}: {exc.strerror}") from exc
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Rename over the old file only once the new one is whole: a kill at any instant leaves
        # either the old journal or the new one, never half of one.
        try:
            with tmp.open("wb") as f:
                f.write(body)
            tmp.replace(self.path)
        except OSError as exc:
            raise JournalError(f"cannot write {self.path}: {exc.strerror}") from exc
