"""Pure pieces of common.timesync: bound formula, parsers, estimator, latency record, wire dicts.

No daemon here (see test_timesync_daemons.py); the kernel is read only, never adjusted.
"""

from __future__ import annotations

import ctypes
import io
import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import structlog

from common.errors import EnvelopeError, ProtocolError, SemalignError
from common.timesync import (
    ALL_FLAGS,
    FREE_RUNNING_DRIFT_PPM,
    MAX_SYNC_AGE_NS,
    SYNCED_DRIFT_PPM,
    BadSyncMessage,
    Basis,
    ClockProbe,
    ClockReply,
    CommLatency,
    GpsStatus,
    Leap,
    OffsetEstimate,
    Reader,
    SyncConfig,
    SyncMonitor,
    SyncSource,
    SyncState,
    TimeSyncError,
    best_estimate,
    chrony_bound_ns,
    classify_reference,
    comm_latency_record,
    estimate_offset,
    estimate_rx_minus_tx,
    gps_status_from_reports,
    kernel_clock_from_timex,
    parse_chrony_tracking,
    read_kernel_clock,
    state_from_readings,
)
from common.timesync.readers import parse_gpsd_time
from common.timesync.readers.kernel import (
    STA_PLL,
    STA_UNSYNC,
    TIME_ERROR,
    TIME_INS,
    TIME_OK,
    _Timex,
)

NOW = 1_795_298_600_000_000_000  # a fixed CLOCK_REALTIME instant for the tables
US = 1_000
MS = 1_000_000

# Real `chronyc -c tracking` lines (chrony 4.3), captured from a chronyd -x fed by SOCK.
CHRONY_GPS = ("47505300,GPS,1,1795298606.941097554,0.012300000,0.000000000,0.000000000,"
              "0.000,0.000,0.000,0.000100000,0.000001505,0.3,Normal")
CHRONY_FAST = ("47505300,GPS,1,1795298614.685842368,-0.004200000,0.000000000,0.000000000,"
               "0.000,0.000,0.000,0.000100000,0.000002056,0.3,Normal")
CHRONY_UNSYNC = ("00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,"
                 "0.000,1.000000000,1.000000000,0.0,Not synchronised")
CHRONY_NTP = ("C0000201,192.0.2.1,2,1795298606.000000000,-0.000012345,0.000001000,0.000002000,"
              "-3.217,0.001,0.050,0.012000000,0.000800000,64.4,Normal")
CHRONY_PPS = ("50505300,PPS,1,1795298606.000000000,0.000000420,0.000000100,0.000000300,"
              "-3.217,0.000,0.010,0.000000001,0.000002100,16.0,Insert second")
CHRONY_LOCAL = ("7F7F0101,,10,1795298606.000000000,0.000000000,0.000000000,0.000000000,"
                "0.000,0.000,0.000,0.000000000,0.000000000,0.0,Normal")


def synced(source: SyncSource = SyncSource.GPS_PPS, bound_ns: int | None = 2 * US,
           read_at_ns: int = NOW, **over: Any) -> SyncState:
    fields: dict[str, Any] = dict(
        source=source, synchronised=True, bound_ns=bound_ns, offset_ns=-300,
        reader=Reader.CHRONY, reference="PPS", stratum=1, leap=Leap.NORMAL,
        root_delay_ns=1, root_dispersion_ns=1_200, read_at_ns=read_at_ns, reason="",
        gps=GpsStatus(mode=3, fix_time_ns=NOW, toff_ns=-40 * MS, pps_offset_ns=250,
                      device="/dev/ttyACM0"),
    )
    fields.update(over)
    return SyncState(**fields)


def unsynced(read_at_ns: int = NOW) -> SyncState:
    return SyncState.unsynchronised("chrony: 506 Cannot talk to daemon", read_at_ns=read_at_ns)


# --- the bound and chrony's CSV ------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "delay", "dispersion", "expected"),
    [
        (0, 0, 0, 0),
        (12_300_000, 100_000, 1_505, 12_300_000 + 1_505 + 50_000),
        (-12_300_000, 100_000, 1_505, 12_300_000 + 1_505 + 50_000),  # |offset|
        (0, 3, 0, 2),  # half the delay, rounded up: a bound never rounds down
        (420, 1, 2_100, 420 + 2_100 + 1),
    ],
)
def test_chrony_bound_formula(offset: int, delay: int, dispersion: int, expected: int) -> None:
    assert chrony_bound_ns(offset, delay, dispersion) == expected


def test_chrony_bound_rejects_negative_delay() -> None:
    with pytest.raises(ValueError, match="never negative"):
        chrony_bound_ns(0, -1, 0)


@pytest.mark.parametrize(
    ("line", "source", "offset_ns", "leap"),
    [
        (CHRONY_GPS, SyncSource.GPS, -12_300_000, Leap.NORMAL),  # "slow" → clock behind
        (CHRONY_FAST, SyncSource.GPS, 4_200_000, Leap.NORMAL),  # "fast" → clock ahead
        (CHRONY_NTP, SyncSource.NTP, 12_345, Leap.NORMAL),
        (CHRONY_PPS, SyncSource.GPS_PPS, -420, Leap.INSERT),
        (CHRONY_UNSYNC, SyncSource.NONE, 0, Leap.UNSYNCHRONISED),
        (CHRONY_LOCAL, SyncSource.NONE, 0, Leap.NORMAL),
    ],
)
def test_parse_chrony_tracking(line: str, source: SyncSource, offset_ns: int, leap: Leap) -> None:
    t = parse_chrony_tracking(line)
    assert (t.source, t.offset_ns, t.leap) == (source, offset_ns, leap)
    assert t.bound_ns == chrony_bound_ns(t.offset_ns, t.root_delay_ns, t.root_dispersion_ns)


def test_parse_chrony_keeps_nanoseconds_exact() -> None:
    t = parse_chrony_tracking(CHRONY_GPS)
    assert t.ref_time_ns == 1_795_298_606_941_097_554
    assert (t.root_delay_ns, t.root_dispersion_ns) == (100_000, 1_505)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "506 Cannot talk to daemon",
        CHRONY_GPS + ",extra",
        CHRONY_GPS.replace("Normal", "Sideways"),
        CHRONY_GPS.replace("0.012300000", "nan"),
        CHRONY_GPS.replace("0.000100000", "-0.000100000"),
        CHRONY_GPS.replace("47505300", "zz"),
    ],
)
def test_parse_chrony_rejects_garbage(line: str) -> None:
    with pytest.raises(TimeSyncError):
        parse_chrony_tracking(line)


@pytest.mark.parametrize(
    ("ref_id", "name", "source"),
    [
        (0x50505300, "PPS", SyncSource.GPS_PPS),
        (0x50505331, "PPS1", SyncSource.GPS_PPS),
        (0x47505300, "GPS", SyncSource.GPS),
        (0x4E4D4541, "NMEA", SyncSource.GPS),
        (0x53484D30, "SHM0", SyncSource.GPS),
        (0x534F4330, "SOC0", SyncSource.GPS),
        (0xC0000201, "192.0.2.1", SyncSource.NTP),
        (0x12345678, "2001:db8::1", SyncSource.NTP),
        (0x50484330, "PHC0", SyncSource.NTP),  # a refclock of unknown kind is never GPS-grade
        (0x7F7F0101, "", SyncSource.NONE),
        (0, "", SyncSource.NONE),
    ],
)
def test_classify_reference(ref_id: int, name: str, source: SyncSource) -> None:
    assert classify_reference(ref_id, name) is source


# --- the kernel's view ---------------------------------------------------------------------


def test_timex_layout_matches_linux_lp64() -> None:
    if ctypes.sizeof(ctypes.c_long) != 8:
        pytest.skip("struct timex size is checked on LP64 only")
    assert ctypes.sizeof(_Timex) == 208


@pytest.mark.parametrize(
    ("state", "status", "synchronised", "leap"),
    [
        (TIME_OK, STA_PLL, True, Leap.NORMAL),
        (TIME_INS, STA_PLL, True, Leap.INSERT),
        (TIME_ERROR, STA_UNSYNC, False, Leap.UNSYNCHRONISED),
        (TIME_OK, STA_UNSYNC, False, Leap.UNSYNCHRONISED),
    ],
)
def test_kernel_clock_flags(state: int, status: int, synchronised: bool, leap: Leap) -> None:
    k = kernel_clock_from_timex(state, status, maxerror_us=1500, esterror_us=20)
    assert (k.synchronised, k.leap, k.maxerror_ns, k.esterror_ns) == (synchronised, leap,
                                                                     1_500_000, 20_000)


def test_read_kernel_clock_is_a_plain_read() -> None:
    first = read_kernel_clock()
    second = read_kernel_clock()
    # maxerror is in µs and capped by the kernel at 16 s (NTP_PHASE_LIMIT).
    assert 0 <= first.maxerror_ns <= 16 * 10**9
    assert first.synchronised == (not first.status & STA_UNSYNC and first.state != TIME_ERROR)
    assert second.status == first.status  # reading twice changed nothing


def test_kernel_alone_is_ntp_never_gps() -> None:
    kernel = kernel_clock_from_timex(TIME_OK, STA_PLL, maxerror_us=800, esterror_us=5)
    gps = GpsStatus(mode=3, fix_time_ns=NOW, toff_ns=None, pps_offset_ns=100, device="/dev/pps0")
    state = state_from_readings(None, kernel, gps, read_at_ns=NOW)
    assert (state.source, state.synchronised, state.bound_ns) == (SyncSource.NTP, True, 800_000)
    assert state.reader is Reader.KERNEL and not state.gps_grade


def test_chrony_wins_over_kernel_and_gpsd_alone_never_synchronises() -> None:
    kernel = kernel_clock_from_timex(TIME_ERROR, STA_UNSYNC, 16_000_000, 16_000_000)
    state = state_from_readings(parse_chrony_tracking(CHRONY_PPS), kernel, None, read_at_ns=NOW)
    assert (state.source, state.bound_ns) == (SyncSource.GPS_PPS, 420 + 2_100 + 1)
    gps = GpsStatus(mode=3, fix_time_ns=NOW, toff_ns=0, pps_offset_ns=0, device="/dev/pps0")
    alone = state_from_readings(None, kernel, gps, read_at_ns=NOW, notes=["chrony: absent"])
    assert (alone.source, alone.synchronised, alone.bound_ns) == (SyncSource.NONE, False, None)
    assert alone.gps == gps and "chrony: absent" in alone.reason


def test_local_stratum_is_not_synchronised() -> None:
    state = state_from_readings(parse_chrony_tracking(CHRONY_LOCAL), None, None, read_at_ns=NOW)
    assert not state.synchronised and "local" in state.reason


# --- gpsd reports --------------------------------------------------------------------------


def test_gps_status_from_reports() -> None:
    reports: list[dict[str, Any]] = [
        {"class": "VERSION", "release": "3.22"},
        {"class": "DEVICES", "devices": [{"class": "DEVICE", "path": "/dev/ttyACM0"}]},
        {"class": "POLL", "tpv": [{"class": "TPV", "mode": 1}, {"class": "TPV", "mode": 3,
                                  "time": "2026-11-21T22:03:51.250Z", "device": "/dev/ttyACM0"}]},
        {"class": "TOFF", "real_sec": 100, "real_nsec": 0, "clock_sec": 100, "clock_nsec": 80_000_000},
        {"class": "PPS", "real_sec": 101, "real_nsec": 0, "clock_sec": 100, "clock_nsec": 999_999_000},
    ]
    status = gps_status_from_reports(reports)
    assert status is not None
    assert (status.mode, status.toff_ns, status.pps_offset_ns) == (3, 80 * MS, -1_000)
    assert status.fix_time_ns == 1_795_298_631_250_000_000
    assert status.has_3d_fix and status.has_pps and status.device == "/dev/ttyACM0"
    # A later TPV without a time (gpsd's first of a cycle may lack one) keeps the last time;
    # a later fix loss is reported as such.
    later = gps_status_from_reports([*reports, {"class": "TPV", "mode": 1}])
    assert later is not None and later.mode == 1
    assert later.fix_time_ns == status.fix_time_ns
    assert gps_status_from_reports([{"class": "VERSION"}]) is None


@pytest.mark.parametrize("bad", ["2026-11-21 22:03:51Z", "2026-11-21T22:03:51.x1Z", True, "", None])
def test_parse_gpsd_time_rejects(bad: object) -> None:
    with pytest.raises(TimeSyncError):
        parse_gpsd_time(bad)


# --- the wire dict and its validation ------------------------------------------------------


def test_sync_state_round_trips_through_msgpack() -> None:
    for state in (synced(), synced(SyncSource.NTP, gps=None), unsynced()):
        wire = msgpack.packb(state.to_dict(), use_bin_type=True)
        assert SyncState.from_dict(msgpack.unpackb(wire, raw=False)) == state


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], object]]]:
    def with_(**kv: Any) -> Callable[[dict[str, Any]], object]:
        return lambda d: {**d, **kv}

    def without(key: str) -> Callable[[dict[str, Any]], object]:
        return lambda d: {k: v for k, v in d.items() if k != key}

    def gps(**kv: Any) -> Callable[[dict[str, Any]], object]:
        return lambda d: {**d, "gps": {**d["gps"], **kv}}

    return [
        ("not a map", lambda d: [d]),
        ("missing key", without("bound_ns")),
        ("extra key", with_(extra=1)),
        ("bool as int", with_(bound_ns=True)),
        ("str as int", with_(read_at_ns="1795298600")),
        ("float as int", with_(offset_ns=1.5)),
        ("int as bool", with_(synchronised=1)),
        ("unknown source", with_(source="galileo")),
        ("unknown leap", with_(leap="sideways")),
        ("negative bound", with_(bound_ns=-1)),
        ("stratum out of range", with_(stratum=99)),
        ("beyond int64", with_(offset_ns=2**63)),
        ("synchronised without bound", with_(bound_ns=None)),
        ("source none yet synchronised", with_(source="none")),
        ("unsynchronised with a bound", with_(synchronised=False)),
        ("newline in reason", with_(reason="ok\nforged log line")),
        ("reason too long", with_(reason="x" * 300)),
        ("gps not a map", with_(gps="3d")),
        ("gps mode 7", gps(mode=7)),
        ("gps missing key", lambda d: {**d, "gps": {"mode": 3}}),
    ]


@pytest.mark.parametrize(("what", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_sync_state_from_dict_rejects(what: str, mutate: Callable[[dict[str, Any]], object]) -> None:
    with pytest.raises(BadSyncMessage) as info:
        SyncState.from_dict(mutate(synced().to_dict()))
    # Typed: a daemon that catches EnvelopeError (or any ProtocolError) catches this too.
    assert isinstance(info.value, EnvelopeError | ProtocolError | SemalignError)
    assert info.value.code == "bad_sync"


def test_locally_built_state_always_fits_the_wire() -> None:
    state = SyncState.unsynchronised("line one\nline two " + "y" * 400, read_at_ns=NOW)
    assert SyncState.from_dict(state.to_dict()) == state
    with pytest.raises(ValueError, match="bound"):
        synced(bound_ns=None)


# --- the NTP four-timestamp estimator ------------------------------------------------------


def _exchange(theta: int, up: int, down: int, hold: int, t1: int = NOW) -> tuple[int, ...]:
    """Stamps of one exchange where server clock = client clock + theta."""
    t2 = t1 + up + theta
    t3 = t2 + hold
    t4 = t3 - theta + down
    return t1, t2, t3, t4


def test_estimator_is_exact_on_a_symmetric_path() -> None:
    est = estimate_offset(*_exchange(theta=7 * MS, up=300 * US, down=300 * US, hold=40 * US))
    assert (est.offset_ns, est.delay_ns) == (7 * MS, 600 * US)
    assert est.bound_ns == 300 * US + 1


def test_estimator_bound_holds_whatever_the_asymmetry() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        theta = rng.randint(-10**9, 10**9)
        up, down, hold = (rng.randint(0, 5 * MS) for _ in range(3))
        est = estimate_offset(*_exchange(theta, up, down, hold))
        assert est.delay_ns == up + down
        assert abs(est.offset_ns - theta) <= est.bound_ns


@pytest.mark.parametrize(
    "stamps",
    [
        (NOW, NOW + 10, NOW + 20, NOW - 1),  # reply before probe
        (NOW, NOW + 20, NOW + 10, NOW + 100),  # server replied before it received
        (NOW, NOW + 10, NOW + 500, NOW + 100),  # held longer than the round trip
    ],
)
def test_estimator_rejects_impossible_stamps(stamps: tuple[int, int, int, int]) -> None:
    with pytest.raises(BadSyncMessage):
        estimate_offset(*stamps)


def test_best_estimate_takes_least_delay() -> None:
    slow = estimate_offset(*_exchange(5 * MS, 4 * MS, 1 * MS, 0))
    fast = estimate_offset(*_exchange(5 * MS, 100 * US, 120 * US, 0))
    best = best_estimate([slow, fast, slow])
    assert (best.delay_ns, best.samples) == (fast.delay_ns, 3)
    assert abs(best.offset_ns - 5 * MS) <= best.bound_ns < slow.bound_ns


@pytest.mark.parametrize("client", ["rx", "tx"])
def test_exchange_messages_give_rx_minus_tx(client: str) -> None:
    rx_minus_tx = -3 * MS - 17  # RX's clock is behind TX's
    theta = -rx_minus_tx if client == "rx" else rx_minus_tx  # server minus client
    triples = []
    for seq, (up, down) in enumerate([(900 * US, 200 * US), (150 * US, 160 * US)]):
        t1, t2, t3, t4 = _exchange(theta, up, down, hold=30 * US, t1=NOW + seq * 10**9)
        probe = ClockProbe.from_dict(msgpack.unpackb(msgpack.packb(ClockProbe(seq, t1).to_dict())))
        reply = ClockReply.answer(probe, t2, t3, synced())
        reply = ClockReply.from_dict(msgpack.unpackb(msgpack.packb(reply.to_dict())))
        triples.append((probe, reply, t4))
    est = estimate_rx_minus_tx(triples, client="rx" if client == "rx" else "tx")
    assert est.delay_ns == 310 * US and est.samples == 2
    assert abs(est.offset_ns - rx_minus_tx) <= est.bound_ns


def test_exchange_rejects_a_reply_to_another_probe() -> None:
    probe = ClockProbe(seq=4, t1_ns=NOW)
    stale = ClockReply(seq=3, t1_ns=NOW - 10**9, t2_ns=NOW + 5, t3_ns=NOW + 6, sync=synced())
    with pytest.raises(BadSyncMessage, match="does not answer"):
        estimate_rx_minus_tx([(probe, stale, NOW + 10)], client="rx")


@pytest.mark.parametrize(
    "body",
    [
        {"seq": 1},
        {"seq": -1, "t1_ns": NOW},
        {"seq": 2**32, "t1_ns": NOW},
        {"seq": 1, "t1_ns": "now"},
        {"seq": 1, "t1_ns": NOW, "t2_ns": NOW},
    ],
)
def test_clock_probe_rejects(body: dict[str, Any]) -> None:
    with pytest.raises(BadSyncMessage):
        ClockProbe.from_dict(body)


def test_clock_reply_rejects_reversed_stamps_and_bad_sync() -> None:
    good = ClockReply(seq=1, t1_ns=NOW, t2_ns=NOW + 5, t3_ns=NOW + 9, sync=synced()).to_dict()
    with pytest.raises(BadSyncMessage, match="precedes"):
        ClockReply.from_dict({**good, "t3_ns": NOW + 1})
    with pytest.raises(BadSyncMessage):
        ClockReply.from_dict({**good, "sync": {**good["sync"], "source": "sundial"}})


# --- the published comm-latency record -----------------------------------------------------

A = NOW + 10**9
B = A + 12 * MS


def test_both_gps_synchronised_is_gps_grade_with_summed_bounds() -> None:
    rec = comm_latency_record(A, B, synced(bound_ns=2 * US), synced(SyncSource.GPS, 5 * US))
    assert (rec.value_ns, rec.bound_ns, rec.raw_ns) == (12 * MS, 7 * US, 12 * MS)
    assert rec.basis is Basis.SYNCHRONISED and rec.gps_grade and rec.flags == ()
    assert rec.describe() == "12.000000 ms ± 0.007000 ms [synchronised gps+pps/gps]"


def test_ntp_side_is_synchronised_but_not_gps_grade() -> None:
    rec = comm_latency_record(A, B, synced(), synced(SyncSource.NTP, 4 * MS))
    assert rec.basis is Basis.SYNCHRONISED and rec.bound_ns == 2 * US + 4 * MS
    assert not rec.gps_grade


@pytest.mark.parametrize("side", ["tx", "rx"])
def test_unsynchronised_side_gives_no_bound(side: str) -> None:
    tx, rx = (unsynced(), synced()) if side == "tx" else (synced(), unsynced())
    rec = comm_latency_record(A, B, tx, rx)
    assert (rec.value_ns, rec.bound_ns, rec.basis) == (12 * MS, None, Basis.UNSYNCHRONISED)
    assert rec.flags == (f"{side}_unsynchronised",) and not rec.gps_grade
    assert "unbounded" in rec.describe()


def test_estimated_offset_corrects_and_is_labelled_never_gps_grade() -> None:
    # RX's clock reads 3 ms ahead of TX's; the exchange saw it 2 s before B.
    est = OffsetEstimate(offset_ns=3 * MS, delay_ns=400 * US, bound_ns=200 * US + 1,
                         measured_at_ns=B - 2 * 10**9)
    rec = comm_latency_record(A, B + 3 * MS, synced(), unsynced(), est)
    age = (B + 3 * MS) - est.measured_at_ns  # from the exchange to B, on RX's clock
    drift = -(-age * (SYNCED_DRIFT_PPM + FREE_RUNNING_DRIFT_PPM) // 10**6)
    assert (rec.value_ns, rec.raw_ns) == (12 * MS, 15 * MS)
    assert rec.bound_ns == 200 * US + 1 + drift
    assert rec.basis is Basis.ESTIMATED and not rec.gps_grade
    assert rec.flags == ("rx_unsynchronised",)
    assert "[estimated gps+pps/none rx_unsynchronised]" in rec.describe()


def test_estimate_cross_checks_synchronised_clocks() -> None:
    agree = OffsetEstimate(offset_ns=5 * US, delay_ns=300 * US, bound_ns=150 * US, measured_at_ns=B)
    clash = OffsetEstimate(offset_ns=9 * MS, delay_ns=300 * US, bound_ns=150 * US, measured_at_ns=B)
    ok = comm_latency_record(A, B, synced(), synced(), agree)
    bad = comm_latency_record(A, B, synced(), synced(), clash)
    assert ok.basis is bad.basis is Basis.SYNCHRONISED
    assert ok.value_ns == bad.value_ns == 12 * MS  # the sync figure stands; the clash is flagged
    assert ok.flags == () and bad.flags == ("estimate_disagrees",)


def test_impossible_and_stale_figures_are_flagged() -> None:
    negative = comm_latency_record(B, A, synced(), synced())
    assert "negative" in negative.flags
    stale = comm_latency_record(A, B, synced(read_at_ns=B - MAX_SYNC_AGE_NS - 1), synced())
    assert stale.flags == ("tx_sync_stale",)


def test_comm_latency_round_trips() -> None:
    est = OffsetEstimate(offset_ns=-3, delay_ns=10, bound_ns=6, measured_at_ns=B, samples=4)
    rec = comm_latency_record(A, B, unsynced(), synced(), est)
    wire = json.loads(json.dumps(rec.to_dict()))
    assert CommLatency.from_dict(wire) == rec
    with pytest.raises(BadSyncMessage):
        CommLatency.from_dict({**wire, "flags": ["all_good"]})


# --- the daemon-facing monitor -------------------------------------------------------------


def test_monitor_caches_refreshes_when_due_and_never_raises() -> None:
    calls: list[SyncConfig] = []
    answers: list[SyncState | Exception] = [synced(), RuntimeError("chronyc exploded")]

    def reader(config: SyncConfig) -> SyncState:
        calls.append(config)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with structlog.testing.capture_logs() as logs:
        monitor = SyncMonitor(interval_s=60, reader=reader)
        assert monitor.due(0)
        first = monitor.current()  # reads once
        assert first.source is SyncSource.GPS_PPS and len(calls) == 1
        assert monitor.current() is first and len(calls) == 1  # cached
        t0 = monitor_read_at(monitor)
        assert not monitor.due(t0 + 59 * 10**9) and monitor.due(t0 + 60 * 10**9)
        assert monitor.poll(t0 + 1) is first and len(calls) == 1
        second = monitor.poll(t0 + 61 * 10**9)  # due: re-read; this reader raises
    assert len(calls) == 2
    assert not second.synchronised and "chronyc exploded" in second.reason
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("clock_sync", "info"), ("clock_sync_changed", "warning")]
    assert logs[0]["bound_ns"] == 2 * US and logs[1]["was"] == "gps+pps"


def monitor_read_at(monitor: SyncMonitor) -> int:
    """The monotonic instant of the monitor's last reading (white-box, for due())."""
    read_at = monitor._read_at_mono
    assert read_at is not None
    return read_at


def test_monitor_survives_a_broken_logger() -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            raise OSError("log sink gone")

    monitor = SyncMonitor(reader=lambda _: unsynced(), logger=Broken())
    assert monitor.refresh().source is SyncSource.NONE


def test_sync_config_rejects_unbounded_timeouts() -> None:
    with pytest.raises(ValueError, match="command_timeout_s"):
        SyncConfig(command_timeout_s=0)
    with pytest.raises(ValueError, match="gpsd_wait_s"):
        SyncConfig(gpsd_wait_s=float("inf"))


def test_clock_main_rejects_bad_gpsd_address() -> None:
    from common.timesync import clock_main

    with pytest.raises(SystemExit) as info:
        clock_main(["--gpsd", "localhost:notaport"], out=io.StringIO())
    assert info.value.code == 2


# --- deploy/ and docs/ agree with the code -------------------------------------------------

REPO = Path(__file__).resolve().parents[3]


def test_deploy_chrony_config_parses_and_its_refids_classify() -> None:
    conf = REPO / "deploy" / "chrony" / "semalign-gps.conf"
    chronyd = shutil.which("chronyd") or shutil.which("chronyd", path="/usr/sbin:/sbin")
    if chronyd is None:
        pytest.skip("chronyd is not installed (apt-get install chrony)")
    # -p parses the file and prints the effective directives; it starts nothing.
    done = subprocess.run([chronyd, "-p", "-f", str(conf)], capture_output=True, text=True,
                          timeout=10, check=False)
    assert done.returncode == 0, done.stderr
    refclocks = [ln.split() for ln in done.stdout.splitlines() if ln.startswith("refclock")]
    refids = {words[words.index("refid") + 1]: words for words in refclocks}
    assert set(refids) == {"GPS", "PPS"}
    assert refids["PPS"][1:3] == ["PPS", "/dev/pps0"] and "lock" in refids["PPS"]
    assert refids["GPS"][1:3] == ["SHM", "0"]
    assert classify_reference(0x50505300, "PPS") is SyncSource.GPS_PPS
    assert classify_reference(0x47505300, "GPS") is SyncSource.GPS


def test_deploy_gpsd_default_feeds_chrony() -> None:
    values = dict(
        line.split("=", 1)
        for line in (REPO / "deploy" / "gpsd" / "gpsd.default").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert "/dev/pps0" in values["DEVICES"]
    assert "-n" in values["GPSD_OPTIONS"].strip('"').split()  # SHM 0 fed without clients


def test_docs_name_every_wire_field_and_constant() -> None:
    doc = (REPO / "docs" / "time-sync.md").read_text()
    reply = ClockReply(seq=1, t1_ns=NOW, t2_ns=NOW, t3_ns=NOW, sync=synced())
    names = [*synced().to_dict(), *GpsStatus(3, None, None, None, "").to_dict(),
             *ClockProbe(1, NOW).to_dict(), *reply.to_dict(), *sorted(ALL_FLAGS),
             *(s.value for s in SyncSource), *(b.value for b in Basis)]
    missing = [n for n in names if f"`{n}`" not in doc]
    assert missing == []
    assert f"{SYNCED_DRIFT_PPM} ppm" in doc and f"{FREE_RUNNING_DRIFT_PPM} ppm" in doc
    assert f"{MAX_SYNC_AGE_NS // 10**9} s" in doc
    assert "|offset| + root dispersion + root delay / 2" in doc
