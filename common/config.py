"""Daemon configuration: YAML files (``yaml.safe_load``) overlaid with CLI flags, validated once.

Errors name the file and key, what was expected and what arrived.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from common.errors import ConfigError
from common.ml.adapt import AdaptConfig, AdaptMode
from common.modulation import Modulation
from common.radio.pluto import PlutoConfig
from common.wire.payload import ValueType

C = TypeVar("C")


TRANSPORTS = ("zmq", "sim", "pluto")


@dataclass(frozen=True)
class LinkDefaults:
    """Per-dataset defaults that give the demo a meaningful budget."""

    t: int
    symbols_per_window: int
    code_rate: float


LINK_DEFAULTS: dict[str, LinkDefaults] = {
    # digits at dims=40: 256QAM -> alpha 40, B_max 40000, N_max 193; 64QAM -> alpha 30, N_max 191.
    "digits": LinkDefaults(t=50, symbols_per_window=80_000, code_rate=0.5),
    # MNIST at dims=200: 256QAM -> alpha 200, B_max 500000, N_max 521; 64QAM -> 150, 520.
    "mnist": LinkDefaults(t=100, symbols_per_window=1_000_000, code_rate=0.5),
    "fashion-mnist": LinkDefaults(t=100, symbols_per_window=1_000_000, code_rate=0.5),
}


@dataclass(frozen=True)
class TxConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    bundle: str | None = None
    #: RX's data endpoint, which TX connects to.
    endpoint: str = "tcp://127.0.0.1:5555"
    #: TX's control endpoint (request/reply), which TX binds.
    control: str = "tcp://127.0.0.1:5556"
    modulation: str = "256qam"
    alpha_policy: str = "proportional"
    alpha: int | None = None
    t: int | None = None
    symbols_per_window: int | None = None
    code_rate: float | None = None
    value_type: str = "float32"
    #: Batches to send; 0 streams until stopped or the test stream is exhausted.
    batches: int = 0
    interval_s: float = 0.0
    max_inflight: int = 2
    ack_timeout_s: float = 15.0
    max_attempts: int = 6
    hello_timeout_s: float = 0.0
    seed: int = 0
    metrics_out: str | None = None
    log_level: str = "info"
    #: zmq: payload bytes on the socket; sim: baseband samples through a channel process;
    #: pluto: baseband samples over the air from an ADALM-Pluto (needs the ``pluto`` section).
    transport: str = "zmq"
    pluto: PlutoConfig | None = None
    #: manual: modulation set by config/ctl; amc: chosen from RX's SNR reports (sim, pluto).
    link_policy: str = "manual"
    amc_hysteresis_db: float = 2.0
    #: Clock sync readers: gpsd as HOST[:PORT] or "off"; chronyc's -h target.
    gpsd: str = "127.0.0.1:2947"
    chrony_socket: str | None = None
    sync_interval_s: float = 300.0
    #: Seconds between NTP-style clock probes to RX (offset estimate for unsynchronised clocks).
    clock_probe_interval_s: float = 5.0

    def __post_init__(self) -> None:
        Modulation.parse(self.modulation)
        ValueType.parse(self.value_type)
        _choice("alpha_policy", self.alpha_policy, ("proportional", "fixed"))
        _choice("transport", self.transport, TRANSPORTS)
        _choice("link_policy", self.link_policy, ("manual", "amc"))
        if self.link_policy == "amc" and self.transport == "zmq":
            raise ConfigError("link_policy 'amc' needs SNR reports: expected transport sim or pluto, got zmq")
        if self.transport == "pluto" and self.pluto is None:
            raise ConfigError("transport 'pluto' needs a pluto section (at least uri), got none")
        if not 0 <= self.amc_hysteresis_db <= 20:
            raise ConfigError(f"amc_hysteresis_db: expected a number in [0, 20], got {self.amc_hysteresis_db}")
        _choice("dataset", self.dataset, tuple(LINK_DEFAULTS))
        if self.alpha_policy == "fixed" and self.alpha is None:
            raise ConfigError("alpha_policy 'fixed' needs alpha: expected an integer >= 1, got nothing")
        _at_least("alpha", self.alpha, 1)
        _at_least("t", self.t, 0)
        _at_least("symbols_per_window", self.symbols_per_window, 1)
        _at_least("batches", self.batches, 0)
        _at_least("max_inflight", self.max_inflight, 1)
        _at_least("max_attempts", self.max_attempts, 1)
        if self.code_rate is not None and not 0 < self.code_rate <= 1:
            raise ConfigError(f"code_rate: expected a number in (0, 1], got {self.code_rate}")
        for name in ("interval_s", "hello_timeout_s", "clock_probe_interval_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected a number >= 0, got {getattr(self, name)}")
        if self.ack_timeout_s <= 0:
            raise ConfigError(f"ack_timeout_s: expected a number > 0, got {self.ack_timeout_s}")

    @property
    def link(self) -> LinkDefaults:
        d = LINK_DEFAULTS[self.dataset]
        return LinkDefaults(
            t=self.t if self.t is not None else d.t,
            symbols_per_window=self.symbols_per_window or d.symbols_per_window,
            code_rate=self.code_rate or d.code_rate,
        )


@dataclass(frozen=True)
class RxConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    bundle: str | None = None
    #: RX's data endpoint, which RX binds.
    bind: str = "tcp://127.0.0.1:5555"
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    threads: int = 1
    #: Largest message RX accepts; larger ones are refused before they are parsed.
    max_message_bytes: int = 64 * 1024 * 1024
    #: The local ADALM-Pluto, for batches TX sends over the air (transport pluto).
    pluto: PlutoConfig | None = None
    metrics_out: str | None = None
    log_level: str = "info"
    gpsd: str = "127.0.0.1:2947"
    chrony_socket: str | None = None
    sync_interval_s: float = 300.0

    def __post_init__(self) -> None:
        _choice("dataset", self.dataset, tuple(LINK_DEFAULTS))
        _at_least("threads", self.threads, 1)
        _at_least("max_message_bytes", self.max_message_bytes, 1024)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def _at_least(name: str, value: int | None, lo: int) -> None:
    if value is not None and value < lo:
        raise ConfigError(f"{name}: expected an integer >= {lo}, got {value}")


def _coerce(where: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's type hint, converting only where lossless."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(where, value, args[0])
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(hint, value, where)
    if hint is AdaptMode:
        return AdaptMode.parse(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported setting type {hint}")


def _build(cls: type[C], values: dict[str, Any], where: str) -> C:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(f"{where}: {k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def load_config(cls: type[C], path: str | Path | None, overrides: dict[str, Any] | None = None) -> C:
    """Read ``path`` (YAML mapping, may be None), overlay non-None ``overrides``, validate."""
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at top level, got {type(loaded).__name__}")
        values.update(loaded)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return _build(cls, values, where)
