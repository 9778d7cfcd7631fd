"""TX's configuration: the keys of ``tx.yaml``, each also a flag of ``semalign tx``.

A plain frozen dataclass (no torch, no radio driver), validated once in ``__post_init__``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from common.config import CHOICES, as_enum, at_least, one_of
from common.data.spec import DATASET_NAMES
from common.errors import ConfigError
from common.link.budget import LinkDefaults, dataset_link
from common.link.plan import AlphaPolicy, LinkPolicy
from common.modulation import Modulation
from common.phy.constellation import LABELLINGS
from common.radio.pluto import PlutoConfig
from common.settings import LOG_LEVELS, DaemonSettings
from common.transport.base import BearerSettings, Transport, bearer_class
from common.transport.security import SecurityConfig
from common.wire.payload import ValueType
from tx.shift import check_plugin_entries, parse_spec

VALUE_TYPES = tuple(v.name.lower() for v in ValueType)
#: The transports a config file or flag may name.
TRANSPORTS = (Transport.ZMQ.value, Transport.SIM.value, Transport.PLUTO.value)
#: The name of the one receiver of a config without ``receivers:`` (its ``endpoint``).
DEFAULT_RX = "rx"
#: A receiver's name: in metrics rows, Prometheus labels, the journal and ``ctl --rx``.
RX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
#: The settings a receiver may override (the rest are TX's, shared by every link).
RECEIVER_OVERRIDES = ("modulation", "alpha_policy", "alpha", "value_type", "link_policy", "t",
                      "max_inflight", "seed")


@dataclass(frozen=True)
class ReceiverConfig:
    """One receiver of ``receivers:``: where it is, its public key, and what its link does
    differently from TX's own keys (unset: TX's value)."""

    #: Unique among the receivers: metrics rows, labels and ``semalign ctl --rx`` name it.
    name: str
    #: RX's data endpoint, which TX connects to.
    endpoint: str
    #: RX's public certificate (default: security.peer).
    peer: str | None = None
    modulation: str | None = None
    alpha_policy: AlphaPolicy | None = None
    alpha: int | None = None
    value_type: str | None = None
    link_policy: LinkPolicy | None = None
    t: int | None = None
    max_inflight: int | None = None
    #: Seed of this receiver's test stream (default: TX's seed, so every receiver sees the same images).
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not RX_NAME.fullmatch(self.name):
            raise ConfigError(f"receiver name: expected 1-32 letters, digits, '_', '.' or '-' "
                              f"(starting with a letter or digit), got {self.name!r}")
        if not isinstance(self.endpoint, str) or not self.endpoint:
            raise ConfigError(f"receiver {self.name}: endpoint: expected an endpoint, got {self.endpoint!r}")
        # Fields may arrive as names when the dataclass is built in code rather than loaded.
        if self.alpha_policy is not None:
            object.__setattr__(self, "alpha_policy", AlphaPolicy.parse(self.alpha_policy))
        if self.link_policy is not None:
            object.__setattr__(self, "link_policy", as_enum(LinkPolicy, "link_policy", self.link_policy))


@dataclass(frozen=True)
class TxConfig(DaemonSettings):
    #: Dataset the test stream and the fine-tuning pool come from.
    dataset: str = field(default="digits", metadata={CHOICES: DATASET_NAMES})
    #: RX's data endpoint, which TX connects to.
    endpoint: str = "tcp://127.0.0.1:5555"
    #: TX's control endpoint (request/reply), which TX binds.
    control: str = "tcp://127.0.0.1:5556"
    #: Initial modulation: bpsk, qpsk, 16qam, 64qam or 256qam; change live with `semalign ctl`.
    modulation: str = "256qam"
    #: proportional: alpha = round(dims * bits(mod) / 8); fixed: the alpha key's value.
    alpha_policy: AlphaPolicy = AlphaPolicy.PROPORTIONAL
    #: PCA coefficients per vector under alpha_policy fixed.
    alpha: int | None = None
    #: Test vectors per batch (default: the dataset's).
    t: int | None = None
    #: B_max = floor(symbols_per_window * bits/symbol * code_rate / 8) (default: the dataset's).
    symbols_per_window: int | None = None
    #: Code rate in (0, 1] (default: the dataset's).
    code_rate: float | None = None
    #: Type of each value on the wire: float32, float16, or int8 (steps from the bundle's PCA).
    value_type: str = field(default="float32", metadata={CHOICES: VALUE_TYPES})
    #: Sensor shift applied to every image before PCA, e.g. rotate:20+noise:0.1 (tx/shift.py);
    #: a plugin is named by its shift_plugins NAME, never by module:function.
    shift: str = ""
    #: Shift plugins of your own, NAME: module:function, imported once at TX start; a shift
    #: spec (this file's or `semalign ctl set-shift`) may then use NAME. Flag: NAME=module:function.
    shift_plugins: dict[str, str] = field(default_factory=dict)
    #: Batches to send; 0 streams until stopped or the test stream is exhausted.
    batches: int = 0
    #: Seconds between batches.
    interval_s: float = 0.0
    #: Unacknowledged batches at most.
    max_inflight: int = 2
    #: Resend a batch not acknowledged in this many seconds (backs off x2, x4).
    ack_timeout_s: float = 15.0
    #: Sends per batch before it is declared lost.
    max_attempts: int = 6
    #: Give up when no receiver answers within this many seconds; 0 waits forever. With several
    #: receivers TX gives up only if none has answered; the silent ones are greeted on.
    hello_timeout_s: float = 0.0
    #: Seed of the batches' sample choice.
    seed: int = 0
    #: Journal of the batches sent and not yet scored, so a TX restarted after a kill scores
    #: its last run's from RX's report cache (default: METRICS_OUT.journal; none without either).
    journal: str | None = None
    # Not ``memory`` from a file or flag: the in-memory twin is for tests that build the config.
    #: zmq: payload bytes on the socket; sim: baseband samples through a channel process;
    #: pluto: baseband samples over the air from an ADALM-Pluto (needs the ``pluto`` section).
    transport: Transport = field(default=Transport.ZMQ, metadata={CHOICES: TRANSPORTS})
    pluto: PlutoConfig | None = None
    #: manual: modulation set by config/ctl; amc: chosen from RX's SNR reports (sim, pluto).
    link_policy: LinkPolicy = LinkPolicy.MANUAL
    #: dB of SNR margin before AMC steps the modulation back up.
    amc_hysteresis_db: float = 2.0
    #: Bit labelling of the radio frames TX sends (sim, pluto): gray (the project's) or 3gpp
    #: (TS 38.211 sec. 5.1). Each frame header says which, so RX needs no setting.
    labelling: str = field(default="gray", metadata={CHOICES: LABELLINGS})
    #: Seconds between NTP-style clock probes to RX (offset estimate for unsynchronised clocks).
    clock_probe_interval_s: float = 5.0
    #: CURVE keys (docs/security.md): key = TX's secret certificate, peer = RX's public one,
    #: allow = directory of the operators' public certificates that may use the control socket.
    security: SecurityConfig = field(default_factory=SecurityConfig)
    #: Several receivers, each {name, endpoint, peer, and overrides of modulation, alpha_policy,
    #: alpha, value_type, link_policy, t, max_inflight, seed}; empty: one receiver, "rx", at endpoint.
    receivers: tuple[ReceiverConfig, ...] = ()

    def __post_init__(self) -> None:
        # Fields may arrive as names when the dataclass is built in code rather than loaded.
        _set = object.__setattr__
        Modulation.parse(self.modulation)
        ValueType.parse(self.value_type)
        _set(self, "alpha_policy", AlphaPolicy.parse(self.alpha_policy))
        _set(self, "transport", as_enum(Transport, "transport", self.transport))
        _set(self, "link_policy", as_enum(LinkPolicy, "link_policy", self.link_policy))
        one_of("dataset", self.dataset, DATASET_NAMES)
        one_of("value_type", self.value_type, VALUE_TYPES)
        check_plugin_entries(self.shift_plugins)
        # Plugins are imported when the daemon starts (tx.shift.load_plugins); only names here.
        parse_spec(self.shift, self.shift_plugins)
        one_of("log_level", self.log_level, LOG_LEVELS)
        one_of("labelling", self.labelling, LABELLINGS)
        # The bearer knows what it needs and what it reports; the config only asks it.
        bearer = bearer_class(self.transport)
        if self.link_policy is LinkPolicy.AMC and not bearer.reports_snr:
            snr = " or ".join(t for t in TRANSPORTS if bearer_class(Transport(t)).reports_snr)
            raise ConfigError(
                f"link_policy 'amc' needs SNR reports: expected transport {snr}, got {self.transport}"
            )
        if not bearer.available(BearerSettings(pluto=self.pluto)):
            raise ConfigError(f"transport {self.transport.value!r} needs a pluto section (at least uri), got none")
        if not 0 <= self.amc_hysteresis_db <= 20:
            raise ConfigError(f"amc_hysteresis_db: expected a number in [0, 20], got {self.amc_hysteresis_db}")
        if self.alpha_policy is AlphaPolicy.FIXED and self.alpha is None:
            raise ConfigError("alpha_policy 'fixed' needs alpha: expected an integer >= 1, got nothing")
        at_least("alpha", self.alpha, 1)
        at_least("t", self.t, 0)
        at_least("symbols_per_window", self.symbols_per_window, 1)
        at_least("batches", self.batches, 0)
        at_least("max_inflight", self.max_inflight, 1)
        at_least("max_attempts", self.max_attempts, 1)
        at_least("monitor_hwm", self.monitor_hwm, 1)
        self.check_prometheus()
        if self.code_rate is not None and not 0 < self.code_rate <= 1:
            raise ConfigError(f"code_rate: expected a number in (0, 1], got {self.code_rate}")
        for name in ("interval_s", "hello_timeout_s", "clock_probe_interval_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected a number >= 0, got {getattr(self, name)}")
        if self.ack_timeout_s <= 0:
            raise ConfigError(f"ack_timeout_s: expected a number > 0, got {self.ack_timeout_s}")
        self._check_receivers()

    def _check_receivers(self) -> None:
        names = [r.name for r in self.receivers]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ConfigError(f"receivers: expected unique names, got {', '.join(twice)} more than once")
        for receiver in self.receivers:
            try:
                self.for_receiver(receiver)  # each link's config validates as TX's own does
            except ConfigError as exc:
                raise ConfigError(f"receivers: {receiver.name}: {exc}") from None

    def for_receiver(self, receiver: ReceiverConfig) -> TxConfig:
        """The config one link runs with: TX's keys, the receiver's endpoint, peer and overrides."""
        overrides = {k: getattr(receiver, k) for k in RECEIVER_OVERRIDES if getattr(receiver, k) is not None}
        if receiver.alpha_policy is not None and receiver.alpha_policy != AlphaPolicy.FIXED:
            overrides.setdefault("alpha", None)
        security = replace(self.security, peer=receiver.peer or self.security.peer)
        return replace(self, endpoint=receiver.endpoint, security=security, receivers=(), **overrides)

    def links(self) -> list[tuple[str, TxConfig]]:
        """Each receiver's name and the config of its link (one, ``DEFAULT_RX``, without ``receivers:``)."""
        if not self.receivers:
            return [(DEFAULT_RX, self)]
        return [(r.name, self.for_receiver(r)) for r in self.receivers]

    @property
    def link(self) -> LinkDefaults:
        """The dataset's link defaults with this config's ``t``, ``symbols_per_window`` and ``code_rate``."""
        d = dataset_link(self.dataset)
        return LinkDefaults(
            t=self.t if self.t is not None else d.t,
            symbols_per_window=self.symbols_per_window or d.symbols_per_window,
            code_rate=self.code_rate or d.code_rate,
        )

    @property
    def journal_path(self) -> str | None:
        """Where the journal lives: ``journal``, else beside ``metrics_out``, else nowhere."""
        if self.journal is not None:
            return self.journal
        return None if self.metrics_out is None else f"{self.metrics_out}.journal"

    @property
    def value_type_enum(self) -> ValueType:
        return ValueType.parse(self.value_type)

