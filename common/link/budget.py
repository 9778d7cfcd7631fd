"""The link's byte budget: the figures it is computed from, ``B_max`` and ``N_max``.

``B_max = floor(symbols_per_window * bits_per_symbol * code_rate / 8)`` bytes per transmission
window, and ``N_max`` training vectors fit beside ``t`` test vectors in it, by the payload's
layout (``common.wire.payload``, ``docs/protocol.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from common.errors import BudgetError, ConfigError, DatasetError
from common.modulation import Modulation
from common.wire.payload import FILE_HEADER_SIZE, MAX_COUNT, ValueType, vector_size


@dataclass(frozen=True)
class LinkDefaults:
    """The link figures a batch's budget is computed from (TX's ``link``)."""

    #: Test vectors per batch.
    t: int
    #: Symbols of one transmission window; with the modulation and code rate it sets B_max.
    symbols_per_window: int
    code_rate: float


#: Per-dataset figures that give the demo a meaningful budget for the dataset's PCA dimensions
#: (``common.data.spec``'s ``pretrain.dims``); a test keeps the keys equal to the registry's.
DATASET_LINKS: Final[Mapping[str, LinkDefaults]] = MappingProxyType({
    # dims=40: 256QAM -> alpha 40, B_max 40000, N_max 193; 64QAM -> alpha 30, N_max 191.
    "digits": LinkDefaults(t=50, symbols_per_window=80_000, code_rate=0.5),
    # dims=200: 256QAM -> alpha 200, B_max 500000, N_max 521; 64QAM -> 150, 520.
    "mnist": LinkDefaults(t=100, symbols_per_window=1_000_000, code_rate=0.5),
    "fashion-mnist": LinkDefaults(t=100, symbols_per_window=1_000_000, code_rate=0.5),
})


def dataset_link(name: str) -> LinkDefaults:
    """The link figures of dataset ``name``; ``DatasetError`` naming the choices if there are none."""
    link = DATASET_LINKS.get(name)
    if link is None:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_LINKS)}")
    return link


def byte_budget(modulation: Modulation, symbols_per_window: int, code_rate: float) -> int:
    """``B_max`` in bytes for one window of ``symbols_per_window`` symbols."""
    if symbols_per_window <= 0:
        raise ConfigError(f"symbols_per_window must be > 0, got {symbols_per_window}")
    if not 0.0 < code_rate <= 1.0:
        raise ConfigError(f"code_rate must be in (0, 1], got {code_rate}")
    return math.floor(symbols_per_window * modulation.bits_per_symbol * code_rate / 8)


def n_max(b_max: int, t: int, alpha: int, value_type: ValueType = ValueType.FLOAT32) -> int:
    """Training vectors that fit beside ``t`` test vectors in ``b_max`` bytes (the paper's N_max).

    ``floor((B_max - H - t*(h + s*alpha)) / (h + s*alpha))``. Raises ``BudgetError`` when not
    even the header and the test vectors fit. The result is also capped by what the payload's
    u16 ``n`` field can carry.
    """
    if alpha < 1:
        raise BudgetError(f"alpha must be >= 1, got {alpha}")
    if not 0 <= t <= MAX_COUNT:
        raise BudgetError(f"t must be in [0, {MAX_COUNT}], got {t}")
    per_vector = vector_size(alpha, value_type)
    room = b_max - FILE_HEADER_SIZE - t * per_vector
    if room < 0:
        raise BudgetError(
            f"B_max={b_max} bytes cannot hold the header and t={t} test vectors of alpha={alpha} "
            f"({FILE_HEADER_SIZE + t * per_vector} bytes needed)"
        )
    return min(room // per_vector, MAX_COUNT)
