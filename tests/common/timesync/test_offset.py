"""The offset tracker's choice of exchange: least ``delay / 2 + age x drift``, on a clock moved by hand."""

from __future__ import annotations

from common.clock import NS_PER_S
from common.timesync import (
    ClockProbe,
    ClockReply,
    SyncState,
    best_estimate,
    comm_latency_record,
    comm_metrics,
)
from common.timesync.latency import FREE_RUNNING_DRIFT_PPM, estimate_offset
from common.timesync.offset import OffsetTracker

T0 = 1_795_298_600_000_000_000
MS = 1_000_000
THETA = 7 * MS  # RX's clock reads 7 ms ahead of TX's


def free_running(at: int) -> SyncState:
    return SyncState.unsynchronised("free-running laptop", read_at_ns=at)


class Link:
    """TX's tracker against a simulated RX whose clock is TX's + THETA; TX's clock is ``now``."""

    def __init__(self) -> None:
        self.now = T0
        self.tracker = OffsetTracker(5.0, clock=lambda: self.now)
        self.sent: list[ClockProbe] = []

    def probe(self, mono_ns: int) -> None:
        self.tracker.poll(mono_ns, self.sent.append)

    def answer(self, probe: ClockProbe, delay_ns: int) -> None:
        """RX answers ``probe`` over a path of round trip ``delay_ns``, all of it on the way out
        (the worst asymmetry); TX's clock is then at the reply's arrival."""
        t2 = probe.t1_ns + delay_ns + THETA
        reply = ClockReply.answer(probe, t2, t2, free_running(t2))
        self.now = probe.t1_ns + delay_ns
        assert self.tracker.on_reply(reply, self.now)


def test_the_bound_comes_from_the_exchange_least_after_ageing_not_the_least_delay() -> None:
    """Defect 20: the least-delay exchange was kept and aged, growing far past a newer one's bound."""
    link = Link()
    link.probe(0)  # the first burst
    first = link.sent[0]
    link.answer(first, 1 * MS)  # a quiet moment: 1 ms round trip
    link.now = T0 + 40 * NS_PER_S
    link.probe(40 * NS_PER_S)  # one probe per interval from now on
    late = link.sent[-1]
    link.answer(late, 8 * MS)  # a busier path, 40 s later: 8 ms round trip
    a = T0 + 45 * NS_PER_S  # a batch's A, 5 s after the last exchange
    b = a + 3 * MS + THETA  # RX's B, on RX's clock
    tx_sync, rx_sync = free_running(a), free_running(b)

    chosen = link.tracker.estimate_at(a, tx_sync)
    assert chosen is not None and chosen.seq == late.seq != first.seq
    assert chosen.samples == 2
    # The old choice, the least delay, then aged: the same exchanges, the first one.
    exchanges = [estimate_offset(first.t1_ns, first.t1_ns + 1 * MS + THETA, first.t1_ns + 1 * MS + THETA,
                                 first.t1_ns + 1 * MS),
                 estimate_offset(late.t1_ns, late.t1_ns + 8 * MS + THETA, late.t1_ns + 8 * MS + THETA,
                                 late.t1_ns + 8 * MS)]
    old = best_estimate(exchanges)
    assert old.delay_ns == 1 * MS

    new_row = comm_latency_record(a, b, tx_sync, rx_sync, chosen)
    old_row = comm_latency_record(a, b, tx_sync, rx_sync, old)
    assert new_row.bound_ns is not None and old_row.bound_ns is not None
    drift = 2 * FREE_RUNNING_DRIFT_PPM / 1e6  # both clocks free-running
    # 0.5 ms + 45 s x 1000 ppm = 45.5 ms against 4 ms + 5 s x 1000 ppm = 9 ms (plus B - A's few ms).
    assert old_row.bound_ns / MS > 45 and new_row.bound_ns / MS < 10
    assert abs(new_row.bound_ns - (4 * MS + 1 + (b - late.t1_ns - 8 * MS) * drift)) < 2
    # Both are honest (the true offset lies inside), the new one is five times tighter.
    for row in (new_row, old_row):
        assert abs(row.value_ns - 3 * MS) <= row.bound_ns

    # The row says which exchange and what age the bound comes from.
    fields = comm_metrics(new_row)
    assert fields["comm_exchange_seq"] == late.seq
    assert abs(fields["comm_exchange_age_s"] - (b - late.t1_ns - 8 * MS) / NS_PER_S) < 1e-9
    assert f"(exchange {late.seq}, aged 5.0 s)" in new_row.describe()


def test_the_choice_follows_the_clock_it_is_asked_at() -> None:
    """Early on the least-delay exchange is also the least bound; one much newer wins later."""
    link = Link()
    link.probe(0)
    first = link.sent[0]
    link.answer(first, 1 * MS)
    assert (est := link.tracker.estimate_at(link.now + NS_PER_S)) is not None and est.seq == first.seq
    link.now = T0 + 2 * NS_PER_S
    link.probe(5 * NS_PER_S)
    second = link.sent[-1]
    link.answer(second, 8 * MS)  # 2 s newer but 3.5 ms more of bound: the first still wins
    assert (est := link.tracker.estimate_at(link.now + NS_PER_S)) is not None and est.seq == first.seq
    link.now = T0 + 20 * NS_PER_S
    link.probe(20 * NS_PER_S)
    third = link.sent[-1]
    link.answer(third, 8 * MS)  # 20 s newer: 20 ms of drift saved against 3.5 ms of delay
    assert (est := link.tracker.estimate_at(link.now + NS_PER_S)) is not None and est.seq == third.seq
    assert link.tracker.estimate is not None and link.tracker.estimate.seq == third.seq


def test_an_estimate_without_seq_from_an_older_peer_still_reads() -> None:
    from common.timesync import OffsetEstimate

    est = OffsetEstimate(offset_ns=3, delay_ns=10, bound_ns=6, measured_at_ns=T0, seq=9)
    body = est.to_dict()
    assert OffsetEstimate.from_dict(body) == est
    del body["seq"]
    assert OffsetEstimate.from_dict(body).seq is None
