"""The PCA codec TX and RX share: shapes, round trips, alpha bounds."""

from __future__ import annotations

import numpy as np
import pytest

from common.ml.pca import PCACodec, fit_pca


def images(n: int = 200, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)


def test_fit_gives_orthonormal_float32_rows() -> None:
    codec = fit_pca(images(), dims=6)
    assert (codec.dims, codec.input_dim) == (6, 16)
    assert codec.mean.dtype == np.float32 and codec.components.dtype == np.float32
    np.testing.assert_allclose(codec.components @ codec.components.T, np.eye(6), atol=1e-5)


def test_full_rank_round_trip_is_exact_and_fewer_dims_are_coarser() -> None:
    x = images()
    codec = fit_pca(x, dims=16)
    np.testing.assert_allclose(codec.decode(codec.encode(x, 16)), x, atol=1e-5)
    errors = [float(np.mean((codec.decode(codec.encode(x, a)) - x) ** 2)) for a in (2, 8, 16)]
    assert errors[0] > errors[1] > errors[2]


def test_encode_shapes_and_decode_reuses_out() -> None:
    x = images(n=5)
    codec = fit_pca(images(), dims=8)
    coeffs = codec.encode(x, 3)
    assert coeffs.shape == (5, 3) and coeffs.dtype == np.float32
    out = np.empty((5, 16), np.float32)
    assert codec.decode(coeffs.astype(np.float64), out=out) is out


@pytest.mark.parametrize("alpha", [0, 9])
def test_alpha_outside_the_basis_is_rejected(alpha: int) -> None:
    codec = PCACodec(np.zeros(4, np.float32), np.eye(8, 4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"outside 1\.\.8"):
        codec.encode(np.zeros((1, 4), np.float32), alpha)
    with pytest.raises(ValueError, match=r"outside 1\.\.8"):
        codec.decode(np.zeros((1, alpha), np.float32))


def test_fit_rejects_more_dims_than_the_data_has() -> None:
    with pytest.raises(ValueError, match="dims=17"):
        fit_pca(images(), dims=17)
