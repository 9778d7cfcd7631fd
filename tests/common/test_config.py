"""Config loading: YAML + overrides, and errors that say what was expected and what arrived."""

from __future__ import annotations

import argparse
import enum
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.config import CHOICES, add_config_flags, field_docs, flag_values, load_config
from common.errors import ConfigError
from common.link.budget import LinkDefaults, dataset_link
from common.link.plan import AlphaPolicy, LinkPolicy
from common.ml.config import AdaptMode
from common.transport.base import Transport
from rx.config import RxConfig
from tx.config import TxConfig

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
    from tx.ctl import CtlConfig

    cls = {"tx": TxConfig, "ctl": CtlConfig}.get(name.split("-")[0].split(".")[0], RxConfig)
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


# --- generic coercion ------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass(frozen=True)
class Inner:
    #: How many.
    count: int = 1
    enabled: bool = False


@dataclass(frozen=True)
class Outer:
    """A config of every supported field type.

    Attributes
    ----------
    sizes : tuple of int
        Sizes, documented numpy-style.
    """

    colour: Colour = Colour.RED
    sizes: tuple[int, ...] = (1,)
    ratio: float | None = None
    name: str = field(default="a", metadata={CHOICES: ("a", "b")})
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    #: NAME -> target.
    named: dict[str, str] = field(default_factory=dict)


def test_generic_coercion(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("colour: GREEN\nsizes: [2, 3]\nratio: 1\nname: b\ninner: {count: 4}\nmaybe: {enabled: true}\n")
    cfg = load_config(Outer, f, {"inner": {"enabled": True}})
    assert cfg == Outer(Colour.GREEN, (2, 3), 1.0, "b", Inner(4, True), Inner(1, True))
    assert isinstance(cfg.ratio, float)


GENERIC_BAD = [
    ("colour: blue\n", "c.yaml: colour: expected one of red, green, got 'blue'"),
    ("sizes: 3\n", "c.yaml: sizes: expected a list, got 3"),
    ("sizes: [1, x]\n", "c.yaml: sizes[1]: expected an integer, got 'x'"),
    ("name: c\n", "c.yaml: name: expected one of a, b, got 'c'"),
    ("inner: 3\n", "c.yaml: inner: expected a mapping, got int"),
    ("inner: {count: 1, bogus: 2}\n", "c.yaml: inner: unknown setting(s) bogus"),
    ("maybe: {enabled: 1}\n", "c.yaml: maybe: enabled: expected true or false, got 1"),
    ("on: 1\n", "c.yaml: unknown setting(s) True"),
    ("named: [a, b]\n", "c.yaml: named: expected a mapping of NAME: VALUE, got ['a', 'b']"),
    ("named: {a: [1]}\n", "c.yaml: named: a: expected a string, got [1]"),
]


@pytest.mark.parametrize(("text", "message"), GENERIC_BAD)
def test_generic_errors_name_file_key_expected_and_got(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(Outer, f)
    assert message in str(info.value)


def test_field_docs_read_comments_and_numpy_attributes() -> None:
    docs = field_docs(Outer)
    assert docs["sizes"] == "Sizes, documented numpy-style."
    assert field_docs(Inner) == {"count": "How many."}


def test_flags_cover_every_field_nested_too() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Outer, aliases={"inner.count": ("--count",)})
    args = parser.parse_args(["--colour", "green", "--sizes", "4", "5", "--count", "2", "--maybe-enabled"])
    assert flag_values(args) == {"colour": "green", "sizes": [4, 5], "inner": {"count": 2}, "maybe": {"enabled": True}}
    assert load_config(Outer, None, flag_values(args)).maybe == Inner(1, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "c"])


def test_dict_settings_from_yaml_and_from_name_value_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("named:\n  a: x.y:f\n  7: z:g\n")
    assert load_config(Outer, f).named == {"a": "x.y:f", "7": "z:g"}  # YAML's int key read as a name
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Outer)
    args = parser.parse_args(["--named", "b=m:h", "a=m:k"])
    # Flags merge over the file's entries, key by key, as a section's do.
    assert load_config(Outer, f, flag_values(args)).named == {"a": "m:k", "7": "z:g", "b": "m:h"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--named", "no-equals-sign"])


# --- TX and RX configs -----------------------------------------------------------------


def test_enums_from_yaml_compare_as_names(tmp_path: Path) -> None:
    f = tmp_path / "tx.yaml"
    f.write_text("transport: sim\nlink_policy: AMC\nalpha_policy: fixed\nalpha: 12\n")
    cfg = load_config(TxConfig, f)
    assert cfg.transport is Transport.SIM and cfg.transport == "sim"
    assert cfg.link_policy is LinkPolicy.AMC and cfg.alpha_policy is AlphaPolicy.FIXED
    assert TxConfig(transport="memory").transport is Transport.MEMORY  # type: ignore[arg-type]


TX_BAD = [
    ("transport: memory\n", "transport: expected one of zmq, sim, pluto, got 'memory'"),
    ("link_policy: amc\n", "expected transport sim or pluto, got zmq"),
    ("transport: pluto\n", "needs a pluto section"),
    ("dataset: emnist\n", "dataset: expected one of digits, mnist, fashion-mnist, got 'emnist'"),
    ("value_type: int4\n", "value_type: expected one of float32, float16, int8, got 'int4'"),
    ("pluto: {uri: ip:1.2.3.4, tx_lo_hz: 1}\n", "pluto: PlutoConfig.tx_lo_hz must be in"),
]


@pytest.mark.parametrize(("text", "message"), TX_BAD)
def test_tx_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "tx.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(TxConfig, f)
    assert str(info.value).startswith(str(f)) and message in str(info.value)


def test_link_defaults_come_from_the_dataset_spec() -> None:
    cfg = TxConfig(dataset="mnist", code_rate=0.25)
    assert cfg.link == LinkDefaults(t=100, symbols_per_window=1_000_000, code_rate=0.25)
    assert TxConfig().link == dataset_link("digits")


def test_config_modules_import_no_torch_zmq_or_radio_driver() -> None:
    code = (
        "import sys, common.config, tx.config, rx.config, common.ml.config, common.data.spec\n"
        "print(sorted(m for m in ('torch', 'zmq', 'adi', 'iio', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_field_docs_follow_base_classes_and_subclasses_win() -> None:
    import dataclasses

    from common.config import field_docs

    @dataclasses.dataclass(frozen=True)
    class Base:
        #: from the base
        shared: int = 1
        #: base wording
        renamed: int = 2

    @dataclasses.dataclass(frozen=True)
    class Child(Base):
        #: the child's own
        own: int = 3
        #: child wording
        renamed: int = 4

    assert field_docs(Child) == {"shared": "from the base", "renamed": "child wording", "own": "the child's own"}


def test_both_daemons_share_the_daemon_settings() -> None:
    import dataclasses

    from common.settings import DaemonSettings
    from rx.config import RxConfig
    from tx.config import TxConfig

    shared = {f.name for f in dataclasses.fields(DaemonSettings)}
    for cls in (TxConfig, RxConfig):
        assert issubclass(cls, DaemonSettings) and shared <= {f.name for f in dataclasses.fields(cls)}
    assert TxConfig(metrics_out="m.jsonl", gpsd="off").metrics_out == "m.jsonl"


def test_a_config_that_is_not_utf8_is_one_config_error(tmp_path: Path) -> None:
    """Issue 16, defect 13: a Latin-1 file was a UnicodeDecodeError traceback."""
    path = tmp_path / "tx.yaml"
    path.write_bytes("endpoint: tcp://caf\xe9:5555\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"tx.yaml: expected a UTF-8 YAML file, got a byte 0xe9 .* offset 19"):
        load_config(TxConfig, path)
