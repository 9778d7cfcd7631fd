"""Config loading: YAML + overrides, and errors that say what was expected and what arrived."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import RxConfig, TxConfig, load_config
from common.errors import ConfigError
from common.ml.adapt import AdaptMode

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_defaults_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "tx.yaml"
    f.write_text("modulation: 64qam\nbatches: 4\nt: 20\n")
    cfg = load_config(TxConfig, f, {"batches": 9, "alpha": None})
    assert (cfg.modulation, cfg.batches, cfg.t) == ("64qam", 9, 20)
    assert cfg.link.t == 20 and cfg.link.symbols_per_window == 80_000


def test_nested_adapt_section(tmp_path: Path) -> None:
    f = tmp_path / "rx.yaml"
    f.write_text("adapt:\n  mode: e2e\n  epochs: 3\n")
    cfg = load_config(RxConfig, f, {"adapt": {"mode": "none"}})
    assert cfg.adapt.mode is AdaptMode.NONE and cfg.adapt.epochs == 3


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    cls = TxConfig if name.startswith("tx") else RxConfig
    load_config(cls, DEPLOY / name)


BAD = [
    ("batches: many\n", "batches: expected an integer, got 'many'"),
    ("modulation: 1024qam\n", "unknown modulation '1024qam'"),
    ("bogus: 1\n", "unknown setting(s) bogus"),
    ("alpha_policy: fixed\n", "needs alpha"),
    ("code_rate: 1.5\n", "code_rate: expected a number in (0, 1], got 1.5"),
    ("- a list\n", "expected a mapping at top level, got list"),
    ("max_inflight: 0\n", "max_inflight: expected an integer >= 1, got 0"),
    ("ack_timeout_s: true\n", "expected a number, got True"),
    ("key: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_config_says_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "tx.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(TxConfig, f)
    assert message in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(TxConfig, "/nonexistent/tx.yaml")
