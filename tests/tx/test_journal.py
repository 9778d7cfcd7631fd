"""TX's journal of unscored batches: kept across a kill, bounded, written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import JournalError
from tx import journal as jmod
from tx.journal import Entry, Journal, entry_labels


def _entry(batch_id: int, run: str = "run-a", t: int = 5) -> Entry:
    labels = entry_labels(np.arange(t, dtype=np.int64) % 10)
    return Entry(run, batch_id, 1_700_000_000_000_000_000 + batch_id, labels,
                 {"batch": batch_id, "modulation": "256qam", "alpha": 40, "shift": "none"})


def _same(a: Entry, b: Entry) -> bool:
    return a.to_dict() == b.to_dict()


def test_a_later_start_reads_what_an_earlier_run_left(tmp_path: Path) -> None:
    path = tmp_path / "tx.jsonl.journal"
    first = Journal(path)
    assert first.load() == []
    for i in range(3):
        assert first.put(_entry(i)) == []
    first.drop("run-a", 1)
    assert first.drop("run-a", 9) is None
    # No process-exit step is needed: the file is whole after every change.
    later = Journal(path).load()
    assert [e.batch_id for e in later] == [0, 2]
    assert all(_same(a, b) for a, b in zip(later, [_entry(0), _entry(2)], strict=True))
    assert not list(tmp_path.glob("*.tmp"))


def test_an_empty_journal_leaves_no_file_and_no_path_keeps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal(path)
    journal.put(_entry(0))
    assert path.exists()
    journal.drop("run-a", 0)
    assert not path.exists()
    off = Journal(None)  # no metrics_out, no journal setting: kept in memory only
    off.put(_entry(0))
    assert len(off) == 1 and off.load() == [] and not list(tmp_path.iterdir())


def test_labels_keep_one_byte_and_a_batch_without_labels_matches_no_prediction() -> None:
    labels = entry_labels(np.array([3, -1, 9], dtype=np.int64))
    assert labels.dtype == np.uint8 and labels.tolist() == [3, 0xFF, 9]


def test_entries_are_bounded_and_the_oldest_given_up_are_returned(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jmod, "MAX_ENTRIES", 3)
    journal = Journal(tmp_path / "j")
    evicted = [e.batch_id for i in range(5) for e in journal.put(_entry(i))]
    assert evicted == [0, 1] and [e.batch_id for e in journal] == [2, 3, 4]
    monkeypatch.setattr(jmod, "MAX_BYTES", 600)  # two or so entries of t = 100 (200 hex digits each)
    big = Journal(tmp_path / "k")
    gone = [e.batch_id for i in range(4) for e in big.put(_entry(i, t=100))]
    assert gone and len((tmp_path / "k").read_bytes()) <= 600 and [e.batch_id for e in big][-1] == 3


@pytest.mark.parametrize(("name", "text"), [
    ("truncated", '{"v": 1, "entries": [{"run": "a", "batch_id"'),
    ("not utf-8", b"\xff\xfe\x00".decode("latin-1")),
    ("another version", '{"v": 2, "entries": []}'),
    ("not a map", "[1, 2]"),
    ("entry not a map", '{"v": 1, "entries": [3]}'),
    ("run too long", json.dumps({"v": 1, "entries": [{**_entry(0).to_dict(), "run": "r" * 65}]})),
    ("negative batch", json.dumps({"v": 1, "entries": [{**_entry(0).to_dict(), "batch_id": -1}]})),
    ("bool A", json.dumps({"v": 1, "entries": [{**_entry(0).to_dict(), "t_a_ns": True}]})),
    ("labels not hex", json.dumps({"v": 1, "entries": [{**_entry(0).to_dict(), "labels": "zz"}]})),
    ("labels too many", json.dumps({"v": 1, "entries": [{**_entry(0).to_dict(), "labels": "00" * 65536}]})),
    ("record not a map", json.dumps({"v": 1, "entries": [{**_entry(0).to_dict(), "record": []}]})),
])
def test_a_file_that_is_not_a_journal_is_set_aside_never_trusted(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / "j"
    path.write_bytes(text.encode("latin-1"))
    journal = Journal(path)
    with pytest.raises(JournalError):
        journal.load()
    assert not path.exists() and (tmp_path / "j.unreadable").read_bytes() == text.encode("latin-1")
    assert len(journal) == 0
    journal.put(_entry(0))  # and the journal goes on, empty
    assert [e.batch_id for e in Journal(path).load()] == [0]


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jmod, "MAX_BYTES", 100)
    path = tmp_path / "j"
    path.write_text(json.dumps({"v": 1, "entries": [_entry(0, t=200).to_dict()]}))
    with pytest.raises(JournalError, match="at most 100"):
        Journal(path).load()


def test_a_write_that_fails_is_a_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="cannot write"):
        Journal(blocker / "j").put(_entry(0))  # its directory is a file


def test_each_receivers_batch_is_kept_apart_and_an_older_journal_is_the_one_receivers(tmp_path: Path) -> None:
    """Two receivers' batch 7 of one run: both kept, dropping one leaves the other (issue 17)."""
    path = tmp_path / "tx.jsonl.journal"
    journal = Journal(path)
    a, b = _entry(7), _entry(7)
    journal.put(Entry(a.run, a.batch_id, a.t_a_ns, a.labels, a.record, "a"))
    journal.put(Entry(b.run, b.batch_id, b.t_a_ns, b.labels, b.record, "b"))
    assert sorted(e.slot for e in journal) == [("a", "run-a", 7), ("b", "run-a", 7)]
    assert journal.drop("run-a", 7, "a") is not None and journal.drop("run-a", 7) is None
    assert [(e.rx, e.key) for e in Journal(path).load()] == [("b", ("run-a", 7))]
    # A journal written before receivers had names: every entry is the one receiver's.
    old = {"v": jmod.VERSION, "entries": [{k: v for k, v in _entry(3).to_dict().items() if k != "rx"}]}
    path.write_text(json.dumps(old))
    assert [e.rx for e in Journal(path).load()] == [jmod.DEFAULT_RX]
    old["entries"][0]["rx"] = ""
    path.write_text(json.dumps(old))
    with pytest.raises(JournalError, match="entry rx"):
        Journal(path).load()
