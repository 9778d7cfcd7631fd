"""Pilot-based channel estimation and one-tap equalisation of a frame's sections.

A ``PilotPlan`` holds everything about one section that depends only on its layout, so a
demodulator builds it once per frame geometry and reuses it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from common.phy.config import PhyConfig
from common.phy.frame import Section, pilot_symbols

ComplexArray = npt.NDArray[np.complex64]


@dataclasses.dataclass(frozen=True, eq=False)
class Anchors:
    """Frame positions (symbols) and weights (pilot counts) of channel estimates."""

    positions: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, eq=False)
class PilotPlan:
    """Everything about one section's pilots and equaliser that depends only on layout.

    Header and data sections are sampled separately (the header is decoded first); the
    data plan also uses the preamble and header anchors.
    """

    pilot_idx: npt.NDArray[np.int64]  # [G * g] into z
    known_conj: npt.NDArray[np.complex128]  # [G, g] conj(pilot)
    payload_idx: npt.NDArray[np.int64]  # into z
    payload_pos: npt.NDArray[np.float64]  # frame positions of the payload symbols
    anchors: Anchors  # all anchors this section's equaliser uses, in position order
    smoother: npt.NDArray[np.float64]  # [A, A] local-linear-fit operator
    section_length: int
    dof: int

    @classmethod
    def build(
        cls,
        config: PhyConfig,
        section: Section,
        offset: int,
        pilot_start: int,
        before: Anchors,
        z_offset: int = 0,
    ) -> PilotPlan:
        """Plan of ``section`` starting at frame symbol ``offset``, held at ``z[z_offset:]``."""
        g = config.pilot_length
        known = pilot_symbols(pilot_start, section.pilot.size).astype(np.complex128)
        centres = (section.pilot + offset).reshape(-1, g).mean(axis=1)
        anchors = Anchors(
            positions=np.concatenate([before.positions, centres]),
            weights=np.concatenate([before.weights, np.full(centres.size, float(g))]),
        )
        return cls(
            pilot_idx=section.pilot + z_offset,
            known_conj=np.conj(known).reshape(-1, g),
            payload_idx=section.payload + z_offset,
            payload_pos=(section.payload + offset).astype(np.float64),
            anchors=anchors,
            smoother=smoothing_matrix(anchors.positions, anchors.weights, config.pilot_smoothing),
            section_length=section.length,
            dof=section.pilot.size - centres.size,
        )

    def pilot_estimates(self, z: npt.NDArray[np.complex128]) -> tuple[npt.NDArray[np.complex128], float]:
        """Per-group channel estimates [G] and their residual energy (unit-modulus pilots)."""
        received = z[self.pilot_idx].reshape(self.known_conj.shape)
        h = (received * self.known_conj).mean(axis=1)
        resid = received * self.known_conj - h[:, None]
        return h, float(np.sum(resid.real**2 + resid.imag**2))

    def equalise(self, z: npt.NDArray[np.complex128], anchors: npt.NDArray[np.complex128]) -> ComplexArray:
        """One-tap equalisation of the payload symbols with the smoothed, interpolated channel."""
        h_fit = self.smoother @ anchors
        pos, at = self.anchors.positions, self.payload_pos
        h = np.interp(at, pos, h_fit.real) + 1j * np.interp(at, pos, h_fit.imag)
        # A dead anchor (h ~ 0) must not blow up into inf: such symbols just fail the CRC.
        h[np.abs(h) < 1e-12] = 1e-12
        return np.asarray(z[self.payload_idx] / h, dtype=np.complex64)


def smoothing_matrix(
    x: npt.NDArray[np.float64], w: npt.NDArray[np.float64], half: int
) -> npt.NDArray[np.float64]:
    """Operator of a weighted local linear fit over ``half`` anchors each side: [A, A].

    A line (not a mean) keeps a residual frequency offset or a slow fade unbiased while
    averaging pilot noise down; weights are the pilot counts behind each anchor. Row i
    evaluates at ``x[i]`` the weighted least-squares line through its window.
    """
    n = x.size
    out = np.zeros((n, n))
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        xs, ws = x[lo:hi], w[lo:hi]
        sw = ws.sum()
        mx = float(np.dot(ws, xs)) / sw
        var = float(np.dot(ws, (xs - mx) ** 2)) / sw
        row = ws / sw
        if var > 1e-9:
            row = row * (1.0 + (xs - mx) * (x[i] - mx) / var)
        out[i, lo:hi] = row
    return out
