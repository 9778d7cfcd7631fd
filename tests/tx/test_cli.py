"""``semalign tx`` flags (one per config key, old spellings kept) and the lazy command table."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from common import cli
from common.config import config_parser, parse_config
from common.link.plan import LinkPolicy
from common.radio.pluto import PlutoConfig
from common.transport.base import Transport
from tx.cli import ALIASES
from tx.config import TxConfig


def parse(argv: list[str]) -> TxConfig:
    return parse_config(TxConfig, config_parser(TxConfig, "semalign tx", "", aliases=ALIASES), argv)


def test_every_key_is_a_flag() -> None:
    options = config_parser(TxConfig, "semalign tx", "", aliases=ALIASES)._option_string_actions
    hints = typing.get_type_hints(TxConfig)
    assert hints["pluto"] == PlutoConfig | None
    sections = {"pluto": PlutoConfig} | {f.name: hints[f.name] for f in dataclasses.fields(TxConfig)
                                         if dataclasses.is_dataclass(hints[f.name])}
    keys = [f.name for f in dataclasses.fields(TxConfig) if f.name not in sections]
    keys += [f"{name}-{f.name}" for name, cls in sections.items() for f in dataclasses.fields(cls)]
    missing = [k for k in keys if "--" + k.replace("_", "-") not in options]
    assert missing == []


def test_old_spellings_and_new_flags(tmp_path: Path) -> None:
    f = tmp_path / "tx.yaml"
    f.write_text("batches: 3\ninterval_s: 2.0\npluto: {uri: ip:10.0.0.1, tx_gain_db: -20}\n")
    cfg = parse([
        "--config", str(f), "--interval", "0.5", "--ack-timeout", "3", "--hello-timeout", "9",
        "--pluto-uri", "ip:192.168.2.7", "--transport", "pluto", "--link-policy", "amc",
        "--code-rate", "0.25", "--amc-hysteresis-db", "3", "--clock-probe-interval-s", "1",
        "--log-level", "debug",
    ])
    assert (cfg.batches, cfg.interval_s, cfg.ack_timeout_s, cfg.hello_timeout_s) == (3, 0.5, 3.0, 9.0)
    assert cfg.pluto == PlutoConfig(uri="ip:192.168.2.7", tx_gain_db=-20.0)
    assert cfg.transport is Transport.PLUTO and cfg.link_policy is LinkPolicy.AMC
    assert (cfg.code_rate, cfg.amc_hysteresis_db, cfg.clock_probe_interval_s) == (0.25, 3.0, 1.0)
    assert cfg.log_level == "debug"
    assert parse(["--interval-s", "4"]).interval_s == 4.0


@pytest.mark.parametrize("argv", [["--transport", "memory"], ["--dataset", "emnist"], ["--batches", "x"]])
def test_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2


def test_semalign_error_is_reported_with_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tx", "--config", "/nonexistent/tx.yaml"]) == 2
    assert "semalign tx: error: cannot read config /nonexistent/tx.yaml" in capsys.readouterr().err


def test_every_command_resolves() -> None:
    targets = [c.target for c in cli.COMMANDS.values()] + list(cli.BENCH_SUITES.values())
    assert all(callable(cli.resolve(t)) for t in targets)


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["--help"], 0), ([], 2), (["bogus"], 2), (["tx", "--help"], 0), (["bench", "--help"], 0),
     (["pretrain", "--help"], 0), (["ctl", "--help"], 0), (["--version"], 0), (["rx", "--help"], 0),
     (["demo", "--help"], 0), (["clock", "--help"], 0), (["keygen", "--help"], 0), (["pluto-emu", "--help"], 0)],
)
def test_help_imports_no_torch_or_zmq(argv: list[str], code: int) -> None:
    script = (
        "import sys\nfrom common.cli import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as exc:\n    rc = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'zmq', 'sklearn') if m in sys.modules)\n"
        "print(rc, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == f"{code} []"


@pytest.mark.parametrize("argv", [[name, "--help"] for name in cli.COMMANDS if name != "bench"]
                         + [["bench", name, "--help"] for name in cli.BENCH_SUITES])
def test_every_commands_help_imports_no_torch_scipy_or_sklearn(argv: list[str]) -> None:
    """Issue 16, defect 18: ``demo --help`` took up to 19 s importing torch first."""
    script = (
        "import sys\nfrom common.cli import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as exc:\n    rc = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'scipy', 'sklearn') if m in sys.modules)\n"
        "print(rc, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"semalign {version('semalign')}\n"


def test_an_unknown_command_is_named_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["wacth", "--tx", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("semalign: unknown command 'wacth' (commands: pretrain, tx,")


def test_the_process_entry_point_freezes_the_heap_before_finalisation() -> None:
    """Issue 16, defect 18: RX took 2.5-18 s to exit after rx_stopped, all of it in the
    interpreter's last garbage collections over torch's, numpy's and scikit-learn's objects."""
    script = ("import gc, sys\nsys.argv = ['semalign', '--version']\nfrom common.cli import main\n"
              "main()\nprint(gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True"
