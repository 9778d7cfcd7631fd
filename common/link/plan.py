"""The link plan: from the link state (modulation, alpha policy) to ``B_max``, ``alpha`` and ``N_max``.

TX holds one plan and replaces it when a control command or AMC changes the link state, so a
change takes effect from the next batch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from common.config import as_enum
from common.errors import BudgetError, ConfigError
from common.link.budget import LinkDefaults, byte_budget, n_max
from common.modulation import Modulation
from common.wire import payload as wire

#: The reference modulation of the proportional alpha policy (alpha = dims at 256QAM).
REFERENCE = Modulation.QAM256


class AlphaPolicy(enum.StrEnum):
    """How alpha follows the modulation."""

    #: ``alpha = round(dims * bits(mod) / bits(256QAM))``: fewer coefficients on a slower link.
    PROPORTIONAL = "proportional"
    #: The operator's alpha, whatever the modulation.
    FIXED = "fixed"

    @classmethod
    def parse(cls, text: str | AlphaPolicy) -> AlphaPolicy:
        """A member from its name (any case); ``ConfigError`` naming the choices otherwise."""
        return as_enum(cls, "alpha_policy", text)


class LinkPolicy(enum.StrEnum):
    """Who chooses the modulation."""

    #: The config and ``semalign ctl set-modulation``.
    MANUAL = "manual"
    #: Adaptive modulation from RX's SNR reports (transports sim and pluto).
    AMC = "amc"


def proportional_alpha(dims: int, modulation: Modulation) -> int:
    """``round(dims * bits(mod) / bits(256QAM))``, at least 1: 200 at 256QAM, 150 at 64QAM."""
    return max(1, round(dims * modulation.bits_per_symbol / REFERENCE.bits_per_symbol))


@dataclass(frozen=True)
class LinkState:
    """What the operator controls: modulation and alpha policy (a name is accepted too)."""

    modulation: Modulation
    policy: AlphaPolicy = AlphaPolicy.PROPORTIONAL
    fixed_alpha: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", AlphaPolicy.parse(self.policy))
        if self.policy is AlphaPolicy.FIXED and (self.fixed_alpha is None or self.fixed_alpha < 1):
            raise ConfigError(f"fixed alpha policy needs alpha >= 1, got {self.fixed_alpha}")


@dataclass(frozen=True)
class LinkPlan:
    """The figures one batch is built with."""

    modulation: Modulation
    b_max: int
    alpha: int
    t: int
    n_max: int
    value_type: wire.ValueType

    def as_dict(self) -> dict[str, object]:
        return {
            "modulation": self.modulation.value,
            "b_max": self.b_max,
            "alpha": self.alpha,
            "t": self.t,
            "n_max": self.n_max,
            "value_type": self.value_type.name.lower(),
        }


def make_plan(state: LinkState, dims: int, link: LinkDefaults, value_type: wire.ValueType) -> LinkPlan:
    """Compute ``B_max``, ``alpha`` and ``N_max``; raise ``BudgetError``/``ConfigError`` if impossible."""
    b_max = byte_budget(state.modulation, link.symbols_per_window, link.code_rate)
    if state.policy is AlphaPolicy.FIXED:
        assert state.fixed_alpha is not None
        alpha = state.fixed_alpha
        if alpha > dims:
            raise ConfigError(f"alpha {alpha} exceeds the bundle's {dims} PCA dimensions")
    else:
        alpha = min(dims, proportional_alpha(dims, state.modulation))
    n = n_max(b_max, link.t, alpha, value_type)
    if link.t == 0 and n == 0:
        raise BudgetError(f"B_max={b_max} bytes holds no vector of alpha={alpha}")
    return LinkPlan(state.modulation, b_max, alpha, link.t, n, value_type)
