"""The link plan: B_max, alpha and N_max from the link state, for the demo's digits figures."""

from __future__ import annotations

import pytest

from common.errors import BudgetError, ConfigError
from common.link.budget import LinkDefaults, dataset_link
from common.link.plan import AlphaPolicy, LinkState, make_plan, proportional_alpha
from common.modulation import Modulation
from common.wire.payload import ValueType

DIGITS_DIMS = 40


@pytest.mark.parametrize(("state", "figures"), [
    (LinkState(Modulation.QAM256), (40000, 40, 193)),
    (LinkState(Modulation.QAM64), (30000, 30, 191)),
    (LinkState(Modulation.QAM64, AlphaPolicy.FIXED, 40), (30000, 40, 132)),
    (LinkState(Modulation.QAM64, "fixed", 40), (30000, 40, 132)),  # a policy's name is accepted
])
def test_plan_of_the_digits_link(state: LinkState, figures: tuple[int, int, int]) -> None:
    plan = make_plan(state, DIGITS_DIMS, dataset_link("digits"), ValueType.FLOAT32)
    assert (plan.b_max, plan.alpha, plan.n_max) == figures
    assert plan.as_dict()["value_type"] == "float32" and plan.t == 50


def test_proportional_alpha_follows_bits_per_symbol_and_never_reaches_zero() -> None:
    assert [proportional_alpha(200, m) for m in Modulation] == [25, 50, 100, 150, 200]
    assert proportional_alpha(1, Modulation.BPSK) == 1


def test_impossible_plans_are_refused() -> None:
    with pytest.raises(ConfigError, match="fixed alpha policy needs alpha >= 1"):
        LinkState(Modulation.QPSK, AlphaPolicy.FIXED)
    with pytest.raises(ConfigError, match="exceeds the bundle's 40 PCA dimensions"):
        make_plan(LinkState(Modulation.QPSK, AlphaPolicy.FIXED, 41), DIGITS_DIMS, dataset_link("digits"),
                  ValueType.FLOAT32)
    with pytest.raises(BudgetError, match="holds no vector"):
        make_plan(LinkState(Modulation.BPSK), DIGITS_DIMS, LinkDefaults(0, 96, 1.0), ValueType.FLOAT32)
