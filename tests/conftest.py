"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.ml.bundle import Bundle

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The shared MNIST copy lives beside the repository on development and CI machines only
#: (see ../shared/datasets/README.md); it must never be copied into the repository.
SHARED_MNIST_DIR = (REPO_ROOT.parent / "shared" / "datasets" / "mnist").resolve()

#: Where Debian's dataset-fashion-mnist package installs the Fashion-MNIST IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_dir_or_skip(directory: Path, how_to_get: str) -> Path:
    if not directory.is_dir():
        pytest.skip(f"{directory} is absent ({how_to_get})")
    missing = [
        stem
        for stem in _IDX_FILES
        if not (directory / stem).is_file() and not (directory / f"{stem}.gz").is_file()
    ]
    if missing:
        pytest.skip(f"{directory} lacks {', '.join(missing)} ({how_to_get})")
    return directory


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The shared MNIST IDX directory (../shared/datasets/mnist); skips when absent."""
    return _idx_dir_or_skip(
        SHARED_MNIST_DIR, "the shared MNIST copy exists on development and CI machines only"
    )


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """Debian's Fashion-MNIST IDX directory; skips when the package is not installed."""
    return _idx_dir_or_skip(
        DEBIAN_FASHION_MNIST_DIR, "install it with: apt-get install dataset-fashion-mnist"
    )


@pytest.fixture(scope="session")
def digits_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits model bundle built once per test session (a few seconds)."""
    from common.ml.pretrain import ensure_bundle

    out = tmp_path_factory.mktemp("bundle") / "digits"
    ensure_bundle("digits", out=out)
    return out


@pytest.fixture(scope="session")
def digits_bundle(digits_bundle_dir: Path) -> Bundle:
    from common.ml.bundle import load_bundle

    return load_bundle(digits_bundle_dir)
