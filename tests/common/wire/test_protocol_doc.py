"""docs/protocol.md is the payload's specification: its constants and examples must match the code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from common.wire import payload as wire

DOC = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text()


def _constants() -> dict[str, str]:
    block = DOC.split("### Constants", 1)[1].split("```", 2)[1]
    return dict(line.split(" = ", 1) for line in block.strip().splitlines())


def test_constants_match_code() -> None:
    c = _constants()
    assert int(c["MAGIC"], 16) == wire.MAGIC
    assert int(c["VERSION"]) == wire.VERSION
    assert c["FILE_HEADER"] == wire.FILE_HEADER.format
    assert c["VECTOR_HEADER"] == wire.VECTOR_HEADER.format
    assert int(c["H"]) == wire.FILE_HEADER_SIZE
    assert int(c["h"]) == wire.VECTOR_HEADER_SIZE
    assert int(c["KIND_TEST"]) == wire.KIND_TEST
    assert int(c["KIND_TRAIN"]) == wire.KIND_TRAIN
    assert int(c["NO_LABEL"], 16) == wire.NO_LABEL
    for vt in wire.ValueType:
        m = re.fullmatch(r"(\d+) \(s = (\d+)\)", c[f"VALUE_TYPE {vt.name.lower()}"])
        assert m is not None
        assert (int(m[1]), int(m[2])) == (int(vt), vt.size)


def test_header_table_offsets_match_struct() -> None:
    table = DOC.split("### File header", 1)[1].split("###", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\w+) \|", table, re.M)
    assert [r[2] for r in rows] == ["magic", "ver_type", "alpha", "t", "n"]
    assert sum(int(r[1]) for r in rows) == wire.FILE_HEADER.size


@pytest.mark.parametrize("row", re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", DOC, re.M))
def test_n_max_examples(row: tuple[str, str, str, str]) -> None:
    b_max, t, alpha, expected = map(int, row)
    assert wire.n_max(b_max, t, alpha) == expected


def test_worked_example_bytes() -> None:
    hexline = DOC.split("### Worked example", 1)[1].split("```", 2)[1].strip()
    built = wire.build(
        np.array([[0.5, -1.0]], np.float32), np.array([[1.0, 2.0]], np.float32), np.array([7])
    )
    assert built == bytes.fromhex(hexline)
