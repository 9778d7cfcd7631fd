from __future__ import annotations

from pathlib import Path

import pytest

from common.bundle import Bundle, ensure_bundle


@pytest.fixture(scope="session")
def digits_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "digits"
    ensure_bundle("digits", out=out)
    return out


@pytest.fixture(scope="session")
def digits_bundle(digits_bundle_dir: Path) -> Bundle:
    from common.bundle import load_bundle

    return load_bundle(digits_bundle_dir)
