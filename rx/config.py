"""RX's configuration: the keys of ``rx.yaml``, each also a flag of ``semalign rx``.

A plain frozen dataclass (no torch, no radio driver), validated once in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import CHOICES, at_least, one_of
from common.data.spec import DATASET_NAMES
from common.ml.config import AdaptConfig
from common.radio.pluto import PlutoConfig
from common.settings import LOG_LEVELS, DaemonSettings
from common.transport.security import SecurityConfig

#: Default of ``max_batch_vectors``: above every batch the shipped datasets make (their pools and
#: test sets hold 10,000 each), under a sixth of what the header can announce (docs/security.md).
MAX_BATCH_VECTORS = 20480


@dataclass(frozen=True)
class RxConfig(DaemonSettings):
    #: Dataset of the bundle (selects the default bundle directory).
    dataset: str = field(default="digits", metadata={CHOICES: DATASET_NAMES})
    #: RX's data endpoint, which RX binds.
    bind: str = "tcp://127.0.0.1:5555"
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    #: Torch threads; 1 is fastest for the small MLP (docs/results.md).
    threads: int = 1
    #: Largest message RX accepts; larger ones are refused before they are parsed.
    max_message_bytes: int = 64 * 1024 * 1024
    #: Most vectors (t + n) RX processes in one batch; a batch announcing more is refused (error
    #: "oversize") before anything is received or computed. The header allows 2 x 65535, which cost
    #: RX 13-15 s of CPU; the shipped datasets' largest batch is t + n = 10000 + 10000.
    max_batch_vectors: int = MAX_BATCH_VECTORS
    #: The local ADALM-Pluto, for batches TX sends over the air (transport pluto).
    pluto: PlutoConfig | None = None
    #: CURVE keys (docs/security.md): key = RX's secret certificate, allow = directory of the
    #: TX public certificates that may send batches.
    security: SecurityConfig = field(default_factory=SecurityConfig)

    def __post_init__(self) -> None:
        one_of("dataset", self.dataset, DATASET_NAMES)
        one_of("log_level", self.log_level, LOG_LEVELS)
        at_least("threads", self.threads, 1)
        at_least("max_message_bytes", self.max_message_bytes, 1024)
        at_least("max_batch_vectors", self.max_batch_vectors, 1)
        at_least("monitor_hwm", self.monitor_hwm, 1)
        self.check_prometheus()
