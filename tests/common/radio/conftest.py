"""Fixtures of the PHY tests: the fake ``adi`` module of ``tests/fakes/adi.py``, injected per test."""

from __future__ import annotations

import sys

import pytest

from tests.fakes.adi import FakeAdiModule


@pytest.fixture
def fake_adi(monkeypatch: pytest.MonkeyPatch) -> FakeAdiModule:
    """A fresh fake ``adi`` in ``sys.modules`` for the duration of one test."""
    module = FakeAdiModule()
    monkeypatch.setitem(sys.modules, "adi", module)
    return module
