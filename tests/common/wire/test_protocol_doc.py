"""docs/protocol.md is the payload's specification: its constants and examples must match the code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from common.link.budget import n_max
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


def _n_max_rows() -> list[tuple[str, int, int, int, int]]:
    rows = []
    for table in re.findall(r"^\| B_max \| t \| alpha \| N_max (\w+) \|\n\|[-|]+\|\n((?:\|.*\|\n)+)", DOC, re.M):
        name, body = table
        for line in re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", body, re.M):
            rows.append((name, *map(int, line)))
    return rows


def test_every_value_type_has_n_max_examples() -> None:
    assert {r[0] for r in _n_max_rows()} == {"float32", "int8"}


@pytest.mark.parametrize("row", _n_max_rows())
def test_n_max_examples(row: tuple[str, int, int, int, int]) -> None:
    name, b_max, t, alpha, expected = row
    assert n_max(b_max, t, alpha, wire.ValueType.parse(name)) == expected


def _worked(index: int) -> bytes:
    block = DOC.split("### Worked example", 1)[1].split("###", 1)[0]
    return bytes.fromhex(block.split("```")[2 * index + 1].strip())


@pytest.mark.parametrize(("index", "value_type", "test", "train"), [
    (0, wire.ValueType.FLOAT32, np.array([[0.5, -1.0]], np.float32), np.array([[1.0, 2.0]], np.float32)),
    (1, wire.ValueType.FLOAT16, np.array([[0.5, -1.0]], np.float16), np.array([[1.0, 2.0]], np.float16)),
    (2, wire.ValueType.INT8, np.array([[5, -10]], np.int8), np.array([[127, -127]], np.int8)),
])
def test_worked_example_bytes(index: int, value_type: wire.ValueType, test: np.ndarray, train: np.ndarray) -> None:
    built = wire.build(test, train, np.array([7]), value_type)
    assert built == _worked(index)
    assert set(wire.ValueType) == {wire.ValueType.FLOAT32, wire.ValueType.FLOAT16, wire.ValueType.INT8}


def test_every_message_kind_is_in_the_table() -> None:
    from common.wire import messages

    table = DOC.split("## Messages on the data socket", 1)[1].split("##", 1)[0]
    kinds = {v for k, v in vars(messages).items() if k.startswith("KIND_")}
    named = set(re.findall(r"^\| (?:TX|RX) -> (?:TX|RX) \| `\[(\w+)", table, re.M))
    assert kinds == named - {"envelope"} | {"batch"} and 'kind: "batch"' in table
    assert messages.RECALL_UNKNOWN in DOC and str(messages.MAX_RUN_CHARS) in DOC
