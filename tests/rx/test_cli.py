"""``semalign rx`` flags: one per config key, nested sections too, ``--adapt MODE`` kept."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from common.config import config_parser, parse_config
from common.ml.config import AdaptConfig, AdaptMode
from common.radio.pluto import PlutoConfig
from common.transport.security import SecurityConfig
from rx.cli import ALIASES
from rx.config import RxConfig


def parse(argv: list[str]) -> RxConfig:
    return parse_config(RxConfig, config_parser(RxConfig, "semalign rx", "", aliases=ALIASES), argv)


def test_every_key_is_a_flag() -> None:
    options = config_parser(RxConfig, "semalign rx", "", aliases=ALIASES)._option_string_actions
    keys = [f.name for f in dataclasses.fields(RxConfig) if f.name not in ("adapt", "pluto", "security")]
    keys += [f"adapt-{f.name}" for f in dataclasses.fields(AdaptConfig)]
    keys += [f"pluto-{f.name}" for f in dataclasses.fields(PlutoConfig)]
    keys += [f"security-{f.name}" for f in dataclasses.fields(SecurityConfig)]
    assert [k for k in keys if "--" + k.replace("_", "-") not in options] == []


def test_adapt_alias_merges_with_the_file(tmp_path: Path) -> None:
    f = tmp_path / "rx.yaml"
    f.write_text("adapt:\n  mode: lora\n  epochs: 3\n")
    cfg = parse(["--config", str(f), "--adapt", "e2e", "--adapt-rank", "4", "--pluto-uri", "usb:1.5.5",
                 "--max-message-bytes", "4096"])
    assert cfg.adapt == AdaptConfig(mode=AdaptMode.E2E, rank=4, epochs=3)
    assert cfg.pluto == PlutoConfig(uri="usb:1.5.5") and cfg.max_message_bytes == 4096
    assert parse(["--adapt-mode", "none"]).adapt.mode is AdaptMode.NONE


def test_rx_help_imports_no_torch_or_zmq() -> None:
    script = (
        "import sys\nfrom common.cli import main\n"
        "try:\n    main(['rx', '--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
        "print(sorted(m for m in ('torch', 'zmq', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
