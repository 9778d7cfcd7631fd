"""One table of control commands (issue 17): docs/protocol.md lists exactly its commands, the
daemon has a function for each, and ``semalign ctl`` applies its argument rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tx import commands, ctl
from tx.control import COMMANDS, TABLE, Applies, Arg, Cmd

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def _doc_rows() -> list[tuple[str, str, str]]:
    """(name, argument as written, what it does) of the control section's table, in order."""
    section = DOC.split("## Control socket", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)(?: ([^`]+))?` \| (.+) \|$", section, re.M)
    return [(name, arg.replace("\\|", "|"), does) for name, arg, does in rows]


def test_the_doc_lists_exactly_the_tables_commands_in_its_order() -> None:
    assert [name for name, _, _ in _doc_rows()] == list(COMMANDS) == list(TABLE) == [str(c) for c in Cmd]


@pytest.mark.parametrize(("name", "arg", "does"), _doc_rows())
def test_the_doc_gives_each_command_its_argument_and_what_reaches_rx(name: str, arg: str, does: str) -> None:
    command = TABLE[name]
    assert arg == {Arg.NONE: "", Arg.OPTIONAL: f"[{command.metavar}]"}.get(command.arg, command.metavar)
    assert ("forwarded to RX" in does) == command.to_rx
    assert ("the reply carries `status`" in does) == command.reports_status


def test_every_kind_of_command_has_a_function_that_applies_it() -> None:
    assert set(commands._APPLY) == set(Applies) == {c.applies for c in TABLE.values()}


@pytest.mark.parametrize("name", [n for n, c in TABLE.items() if c.arg in (Arg.REQUIRED, Arg.ALPHA)])
def test_ctl_refuses_a_command_without_the_argument_it_needs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        ctl.main([name, "--tx", "tcp://127.0.0.1:9"])
    assert info.value.code == 2
    assert f"{name} needs an argument" in capsys.readouterr().err


def test_ctl_help_lists_every_command_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ctl.main(["--help"])
    out = capsys.readouterr().out
    for command in TABLE.values():
        assert command.help in out
    assert "reset-adapter [ALPHA]" in out and "set-alpha N " in out
