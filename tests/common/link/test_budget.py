"""The link's budget: per-dataset link figures and ``B_max``."""

from __future__ import annotations

import pytest

from common.data.spec import DATASET_NAMES
from common.errors import ConfigError, DatasetError
from common.link.budget import DATASET_LINKS, LinkDefaults, byte_budget, dataset_link
from common.modulation import Modulation


def test_every_registered_dataset_has_link_figures() -> None:
    assert tuple(DATASET_LINKS) == DATASET_NAMES
    assert dataset_link("digits") == LinkDefaults(t=50, symbols_per_window=80_000, code_rate=0.5)
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'; expected one of digits"):
        dataset_link("cifar")


@pytest.mark.parametrize(("modulation", "expected"), [
    (Modulation.BPSK, 5000), (Modulation.QPSK, 10000), (Modulation.QAM64, 30000), (Modulation.QAM256, 40000),
])
def test_byte_budget_of_the_digits_window(modulation: Modulation, expected: int) -> None:
    assert byte_budget(modulation, 80_000, 0.5) == expected


@pytest.mark.parametrize(("symbols", "rate", "match"), [(0, 0.5, "symbols_per_window"), (10, 0.0, "code_rate"),
                                                        (10, 1.5, "code_rate")])
def test_byte_budget_refuses_impossible_figures(symbols: int, rate: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        byte_budget(Modulation.QPSK, symbols, rate)
