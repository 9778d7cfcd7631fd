"""Adaptive modulation (AMC): pick the next batch's modulation from the SNR RX reports.

Pure logic with a threshold table derived from the AWGN BER curves (``common.phy.theory``), plus
hysteresis. Link adaptation, not a DSP block: it lives beside the budget and the plan it steers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

from common.errors import ConfigError
from common.modulation import Modulation

# Threshold table (Es/N0 in dB, the lowest SNR at which a modulation may be used):
#
#     modulation  Es/N0 for BER 1e-6 (theory)  + 1 dB margin, rounded up to 0.5 dB
#     bpsk        10.53                        12.0  (fallback: used below every threshold)
#     qpsk        13.54                        15.0
#     16qam       20.42                        21.5
#     64qam       26.56                        28.0
#     256qam      32.55                        34.0
#
# Why BER 1e-6: frames carry no FEC and up to 1 KiB (+ CRC), ~8.2 kbit, so BER 1e-6 gives a
# frame error rate of ~0.8 %; at 1e-5 it would be ~8 %. Why 1 dB: the measured receiver
# loss (pilot-based channel estimate, RRC truncation, 12-bit quantisation, CFO and timing
# recovery) is 0.1-0.4 dB in the simulator (tests/common/phy, the modem bench), and the
# per-frame SNR estimate scatters by a few tenths of a dB. ``threshold_table()``
# recomputes the table and a test keeps the two (and docs/sdr.md) equal.
DEFAULT_THRESHOLDS: dict[Modulation, float] = {
    Modulation.BPSK: 12.0,
    Modulation.QPSK: 15.0,
    Modulation.QAM16: 21.5,
    Modulation.QAM64: 28.0,
    Modulation.QAM256: 34.0,
}
DEFAULT_TARGET_BER = 1e-6
DEFAULT_MARGIN_DB = 1.0
DEFAULT_HYSTERESIS_DB = 2.0


def threshold_table(
    target_ber: float = DEFAULT_TARGET_BER, margin_db: float = DEFAULT_MARGIN_DB
) -> dict[Modulation, float]:
    """Es/N0 thresholds: theory at ``target_ber`` plus ``margin_db``, rounded up to 0.5 dB."""
    from common.phy.theory import esn0_db_for_ber  # scipy: only when the table is recomputed

    return {
        m: math.ceil(2.0 * (esn0_db_for_ber(m, target_ber) + margin_db)) / 2.0
        for m in Modulation
    }


def _rank(m: Modulation) -> int:
    return m.bits_per_symbol


class AmcPolicy:
    """Threshold table with hysteresis.

    * Down-switch at once: when the reported SNR falls below the current modulation's
      threshold, go to the highest modulation whose threshold the SNR meets (possibly
      several steps down; the lowest allowed one if none).
    * Up-switch cautiously: only to a modulation whose threshold + ``hysteresis_db`` the
      SNR exceeds, and only after ``up_after`` consecutive such reports.
    * A NaN report (RX decoded nothing, so it could not measure) falls back to the
      lowest allowed modulation: the link must be re-acquired before anything else.

    Parameters
    ----------
    thresholds : Mapping[Modulation, float] | None
        Es/N0 (dB) per modulation; default :data:`DEFAULT_THRESHOLDS`. Must increase
        with the modulation order.
    hysteresis_db : float >= 0
    initial : Modulation
        Starting modulation (default: the lowest allowed).
    allowed : Iterable[Modulation] | None
        Restrict the choice (default: every modulation in ``thresholds``).
    up_after : int >= 1
    """

    def __init__(
        self,
        thresholds: Mapping[Modulation, float] | None = None,
        *,
        hysteresis_db: float = DEFAULT_HYSTERESIS_DB,
        initial: Modulation | None = None,
        allowed: Iterable[Modulation] | None = None,
        up_after: int = 1,
    ) -> None:
        table = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        if not table:
            raise ConfigError("AMC threshold table is empty")
        for m, thr in table.items():
            if not isinstance(m, Modulation):
                raise ConfigError(f"AMC thresholds must be keyed by Modulation, got {m!r}")
            if not math.isfinite(thr):
                raise ConfigError(f"AMC threshold of {m.value} must be finite, got {thr}")
        ladder = sorted(table, key=_rank) if allowed is None else sorted(set(allowed), key=_rank)
        missing = [m.value for m in ladder if m not in table]
        if missing:
            raise ConfigError(f"no AMC threshold for allowed modulation(s) {missing}")
        if not ladder:
            raise ConfigError("AMC needs at least one allowed modulation")
        values = [table[m] for m in ladder]
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ConfigError(
                "AMC thresholds must increase with modulation order, got "
                + ", ".join(f"{m.value}={table[m]}" for m in ladder)
            )
        if not (hysteresis_db >= 0 and math.isfinite(hysteresis_db)):
            raise ConfigError(f"hysteresis_db must be a finite number >= 0, got {hysteresis_db}")
        if up_after < 1:
            raise ConfigError(f"up_after must be >= 1, got {up_after}")
        start = ladder[0] if initial is None else initial
        if start not in ladder:
            raise ConfigError(f"initial modulation {start.value} is not among the allowed ones")
        self.thresholds = {m: table[m] for m in ladder}
        self.ladder: tuple[Modulation, ...] = tuple(ladder)
        self.hysteresis_db = hysteresis_db
        self.up_after = up_after
        self._initial = start
        self.current = start
        self._up_streak = 0

    def reset(self) -> None:
        self.current = self._initial
        self._up_streak = 0

    def best_for(self, snr_db: float, margin_db: float = 0.0) -> Modulation:
        """Highest modulation with ``threshold + margin_db <= snr_db`` (lowest if none)."""
        best = self.ladder[0]
        for m in self.ladder:
            if self.thresholds[m] + margin_db <= snr_db:
                best = m
        return best

    def update(self, snr_db: float) -> Modulation:
        """Feed one SNR report (dB, NaN if nothing was received); return the modulation to use."""
        if math.isnan(snr_db):
            self.current = self.ladder[0]
            self._up_streak = 0
            return self.current
        if snr_db < self.thresholds[self.current]:
            self.current = self.best_for(snr_db)
            self._up_streak = 0
            return self.current
        candidate = self.best_for(snr_db, self.hysteresis_db)
        if _rank(candidate) > _rank(self.current):
            self._up_streak += 1
            if self._up_streak >= self.up_after:
                self.current = candidate
                self._up_streak = 0
        else:
            self._up_streak = 0
        return self.current
