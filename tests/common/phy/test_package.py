"""The ``common.phy`` package: a facade whose names load where they live, on first use."""

from __future__ import annotations

import pytest


def test_the_phy_facade_loads_a_name_where_it_lives() -> None:
    import common.phy as phy
    from common.phy.demodulator import demodulate_payload

    assert phy.demodulate_payload is demodulate_payload and "Channel" in dir(phy)
    assert all(getattr(phy, name) is not None for name in phy.__all__)  # every public name has a home
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = phy.nothing  # type: ignore[attr-defined]
