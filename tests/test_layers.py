"""The import-linter contracts in pyproject.toml (checked by ``make layers``) stay complete."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import common

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
#: The entry points: they start daemons and benchmarks, so they may import tx and rx.
ENTRY_POINTS = {"common.cli", "common.tools", "common.bench"}


def contract(name_start: str) -> dict[str, Any]:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    (found,) = (c for c in contracts if c["name"].startswith(name_start))
    return dict(found)


def test_every_library_module_of_common_is_bound_by_the_no_tx_rx_contract() -> None:
    """A new child of common is either listed (it may not import tx or rx) or an entry point."""
    children = {f"common.{m.name}" for m in pkgutil.iter_modules(common.__path__)}
    listed = set(contract("common's library never imports tx or rx")["source_modules"])
    assert listed == children - ENTRY_POINTS
    assert children >= ENTRY_POINTS


def test_tx_is_forbidden_torch() -> None:
    c = contract("tx never imports torch")
    assert (c["type"], c["source_modules"], c["forbidden_modules"]) == ("forbidden", ["tx"], ["torch"])


def test_the_daemons_and_telemetry_are_forbidden_the_dashboard() -> None:
    c = contract("the daemons never import the terminal dashboard")
    assert c["type"] == "forbidden"
    assert {"tx", "rx", "common.telemetry"} <= set(c["source_modules"])
    assert {"textual", "textual_plotext"} <= set(c["forbidden_modules"])


def _floors() -> list[set[str]]:
    c = contract("the floors of docs/architecture.md")
    assert c["type"] == "layers"
    return [{name.strip() for name in floor.split("|")} for floor in c["layers"]]


def test_every_package_stands_on_one_floor() -> None:
    """A new child of common (or a new top package) is placed on a floor, so no import escapes the order."""
    floors = _floors()
    placed = [name for floor in floors for name in floor]
    children = {f"common.{m.name}" for m in pkgutil.iter_modules(common.__path__)}
    assert len(placed) == len(set(placed))
    assert set(placed) == children | {"tx", "rx"}


def test_the_floors_are_the_ones_docs_architecture_draws() -> None:
    """The sentence of docs/architecture.md that lists the floors names them as the contract orders them."""
    doc = (PYPROJECT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    sentence = doc.split("The packages sit in floors, each using only those below it:", 1)[1].split(". No import", 1)[0]
    drawn = [{name.strip(" `") for name in floor.split(",")} for floor in " ".join(sentence.split()).split(" > ")]
    assert drawn == _floors()
