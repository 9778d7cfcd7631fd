"""The PCA codec both daemons share (numpy only: TX imports this, and TX never loads torch).

Both TX and RX hold the same PCA basis; TX keeps the first ``alpha`` coefficients and RX
reconstructs with the same ``alpha`` rows, so a smaller alpha is a coarser image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

#: int8 values clip each component at this many of its standard deviations (on the
#: pre-training split). At 4, about 0.01 % of MNIST coefficients clip and the rounding noise
#: is 0.9 % of each component's spread (docs/protocol.md).
INT8_CLIP_SIGMAS = 4.0
#: Largest int8 code used; the range is symmetric, [-127, 127].
INT8_LEVELS = 127


@dataclass(frozen=True)
class PCACodec:
    """Encode images to their first ``alpha`` principal coefficients and back.

    ``mean`` [D] float32, ``components`` [K, D] float32 with orthonormal rows, ``scale`` [K]
    float32 the standard deviation of each coefficient on the pre-training split (bundles
    built before it was recorded have none, and cannot carry int8 values).
    """

    mean: F32
    components: F32
    scale: F32 | None = None

    def int8_step(self, alpha: int) -> F32:
        """Quantisation step [alpha] of each component: ``INT8_CLIP_SIGMAS * std / 127``."""
        self._check_alpha(alpha)
        if self.scale is None:
            from common.errors import BundleError

            raise BundleError("this bundle records no per-component scales, so it cannot carry int8 "
                              "values; rebuild it with 'semalign pretrain'")
        step: F32 = (self.scale[:alpha] * np.float32(INT8_CLIP_SIGMAS / INT8_LEVELS)).astype(np.float32)
        return step

    def quantise(self, coeffs: F32) -> npt.NDArray[np.int8]:
        """coefficients [n, alpha] float32 -> int8 codes [n, alpha], clipped at +-127."""
        q = np.rint(coeffs / self.int8_step(coeffs.shape[1]))
        out: npt.NDArray[np.int8] = np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
        return out

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.components.shape[1])

    def encode(self, images: F32, alpha: int) -> F32:
        """images [n, D] -> coefficients [n, alpha] float32."""
        self._check_alpha(alpha)
        out: F32 = np.asarray((images - self.mean) @ self.components[:alpha].T, dtype=np.float32)
        return out

    def decode(self, coeffs: npt.NDArray[np.floating], out: F32 | None = None) -> F32:
        """coefficients [n, alpha] -> reconstructed images [n, D] float32 (``out`` reused if given).

        int8 coefficients are codes of ``quantise`` and are scaled back by their steps first.
        """
        alpha = coeffs.shape[1]
        self._check_alpha(alpha)
        if coeffs.dtype == np.int8:
            coeffs = coeffs * self.int8_step(alpha)
        result: F32 = np.matmul(coeffs.astype(np.float32, copy=False), self.components[:alpha], out=out)
        result += self.mean
        return result

    def _check_alpha(self, alpha: int) -> None:
        if not 1 <= alpha <= self.dims:
            raise ValueError(f"alpha={alpha} is outside 1..{self.dims}")


def fit_pca(x: F32, dims: int, seed: int = 0) -> PCACodec:
    """Fit a ``dims``-component PCA basis to ``x`` [n, D]."""
    from sklearn.decomposition import PCA

    if not 1 <= dims <= min(x.shape):
        raise ValueError(f"dims={dims} must be in 1..{min(x.shape)} for data of shape {x.shape}")
    pca = PCA(n_components=dims, svd_solver="randomized" if dims < min(x.shape) // 2 else "full", random_state=seed)
    pca.fit(x)
    return PCACodec(
        mean=np.ascontiguousarray(pca.mean_, dtype=np.float32),
        components=np.ascontiguousarray(pca.components_, dtype=np.float32),
        scale=np.sqrt(np.asarray(pca.explained_variance_, dtype=np.float64)).astype(np.float32),
    )
