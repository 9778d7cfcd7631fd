"""The sync readers against real daemons: chronyd -x fed by a SOCK refclock, gpsd via gpsfake.

Nothing here adjusts the system clock: chronyd runs with -x and the kernel is only read.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Iterator

import pytest

from common.clock import realtime_ns
from common.errors import TimeSyncError
from common.timesync import (
    Basis,
    Reader,
    SyncConfig,
    SyncMonitor,
    SyncSource,
    SyncState,
    clock_main,
    comm_latency_record,
    read_chrony,
    read_clock_report,
    read_gpsd,
    read_sync_state,
)
from tests.common.timesync.helpers import (
    FAKE_ALT_M,
    FAKE_LAT,
    SELECT_DEADLINE_S,
    Chronyd,
    FakeGps,
    free_tcp_port,
    running_chronyd,
    running_gpsfake,
)

#: How close the reported offset must be to the one fed to the SOCK refclock. The offset
#: travels exact in a double and chronyc prints 1 ns; what is left is chrony's frequency
#: estimate times the time since its last update. Constant-offset samples give a frequency
#: error far below 1 ppm, over under 2 s that is < 2 µs; 10 µs leaves room for a busy CI.
OFFSET_TOLERANCE_NS = 10_000


def _wait_selected(chrony: Chronyd) -> SyncState:
    """Poll the project's reader until chrony has selected the refclock (bounded)."""
    config = SyncConfig(chrony_socket=chrony.command_socket, use_kernel=False, gpsd_host=None)
    deadline = time.monotonic() + SELECT_DEADLINE_S
    state = read_sync_state(config)
    while not (state.synchronised and state.reference == chrony.refid):
        if time.monotonic() > deadline:
            log = chrony.log.read_text(errors="replace")[-800:]
            pytest.fail(f"chrony did not select {chrony.refid} in {SELECT_DEADLINE_S} s: "
                        f"last state {state.to_dict()}; chronyd log: {log}")
        time.sleep(0.2)
        state = read_sync_state(config)
    return state


@pytest.mark.slow
@pytest.mark.parametrize(
    ("refid", "offset_s", "source"),
    [
        ("GPS", 0.0123, SyncSource.GPS),  # refclock says true time is 12.3 ms ahead of us
        ("PPS", -0.00075, SyncSource.GPS_PPS),  # ... or 0.75 ms behind us
    ],
)
def test_chrony_reader_reports_the_fed_offset(refid: str, offset_s: float,
                                              source: SyncSource) -> None:
    with running_chronyd(refid, offset_s) as chrony:
        state = _wait_selected(chrony)
        fed_ns = round(offset_s * 1e9)
        assert state.source is source and state.reader is Reader.CHRONY
        assert state.stratum == 1
        assert state.offset_ns is not None and state.bound_ns is not None
        # Our offset is clock minus true time: the opposite of what the refclock was fed.
        assert abs(state.offset_ns - -fed_ns) <= OFFSET_TOLERANCE_NS
        # The bound covers the whole offset plus the refclock's configured delay / 2.
        assert state.root_delay_ns is not None and state.root_dispersion_ns is not None
        assert abs(state.root_delay_ns - round(chrony.root_delay_s * 1e9)) <= 1_000
        assert state.bound_ns == (abs(state.offset_ns) + state.root_dispersion_ns
                                  + (state.root_delay_ns + 1) // 2)
        assert state.bound_ns >= abs(fed_ns)

        # The same daemon through `semalign clock --json`, as an operator would check it.
        out = io.StringIO()
        code = clock_main(["--json", "--chrony-socket", chrony.command_socket, "--no-gpsd",
                           "--no-kernel"], out=out)
        shown = json.loads(out.getvalue())
        assert code == 0
        assert shown["state"]["source"] == source.value
        assert shown["chrony"]["reference"] == refid
        assert abs(shown["state"]["offset_ns"] - -fed_ns) <= OFFSET_TOLERANCE_NS


@pytest.mark.slow
def test_chrony_before_selection_is_unsynchronised_and_comm_latency_says_so() -> None:
    # chronyd is up but its refclock is silent: it answers, yet vouches for nothing.
    with running_chronyd("GPS", 0.002, feed=False) as chrony:
        config = SyncConfig(chrony_socket=chrony.command_socket, use_kernel=False,
                            gpsd_host=None)
        tracking = read_chrony(config)
        state = read_sync_state(config)
        assert tracking.stratum == 0 and tracking.ref_id == 0
        assert state.source is SyncSource.NONE and state.bound_ns is None
        assert state.reader is Reader.CHRONY and "not selected" in state.reason
        chrony.start_feeding()
        synced = _wait_selected(chrony)
        a = realtime_ns()
        rec = comm_latency_record(a, a + 5_000_000, state, synced)
        assert rec.basis is Basis.UNSYNCHRONISED and rec.bound_ns is None
        assert not rec.gps_grade and rec.flags == ("tx_unsynchronised",)


@pytest.fixture(scope="module")
def fake_gps() -> Iterator[FakeGps]:
    with running_gpsfake() as gps:
        yield gps


def _wait_fix(gps: FakeGps) -> None:
    """Poll until gpsd has a 3D fix: gpsfake adds its pty a second or so after gpsd listens,
    and gpsd may not even greet while it opens the device."""
    deadline = time.monotonic() + SELECT_DEADLINE_S
    while True:
        try:
            seen: object = read_gpsd("127.0.0.1", gps.port, wait_s=0.5)
        except TimeSyncError as exc:
            seen = exc
        if getattr(seen, "mode", None) == 3:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"gpsd reported no 3D fix in {SELECT_DEADLINE_S} s: {seen}")
        time.sleep(0.2)


@pytest.mark.slow
def test_gpsd_reader_sees_the_fix_and_time(fake_gps: FakeGps) -> None:
    _wait_fix(fake_gps)
    status = read_gpsd("127.0.0.1", fake_gps.port, wait_s=1.5)
    assert status.mode == 3 and status.has_3d_fix
    assert status.device.startswith("/dev/")  # gpsfake's pty
    # The TPV time is one of the whole seconds our log carries, read back exactly.
    assert status.fix_time_ns is not None and status.fix_time_ns % 10**9 == 0
    assert status.fix_time_ns // 10**9 in fake_gps.epoch_times_s
    # gpsd reports TOFF for the serial time; gpsfake has no PPS line.
    assert status.toff_ns is not None and abs(status.toff_ns) < 120 * 10**9
    assert not status.has_pps


@pytest.mark.slow
def test_gpsd_alone_is_presence_not_synchronisation(fake_gps: FakeGps) -> None:
    _wait_fix(fake_gps)
    missing = os.path.join(tempfile.gettempdir(), f"semalign-no-chronyd-{os.getpid()}.sock")
    config = SyncConfig(chrony_socket=missing, use_kernel=False, gpsd_port=fake_gps.port)
    report = read_clock_report(config)
    state = report.state
    assert state.gps is not None and state.gps.mode == 3
    # A fix says the receiver works; nothing says this clock follows it.
    assert not state.synchronised and state.source is SyncSource.NONE
    assert state.bound_ns is None and not state.gps_grade
    assert report.chrony is None and any(n.startswith("chrony:") for n in report.notes)
    assert FAKE_LAT and FAKE_ALT_M  # the log's position, for whoever reads this test


def test_no_sync_source_reports_unsynchronised_fast() -> None:
    missing = os.path.join(tempfile.gettempdir(), f"semalign-no-chronyd-{os.getpid()}.sock")
    config = SyncConfig(chrony_socket=missing, use_kernel=False, gpsd_port=free_tcp_port())
    started = time.monotonic()
    monitor = SyncMonitor(config)
    state = monitor.refresh()
    elapsed = time.monotonic() - started
    assert elapsed < 3.0  # readers are bounded near a second each; refused ones return at once
    assert (state.source, state.synchronised, state.bound_ns) == (SyncSource.NONE, False, None)
    assert state.gps is None and state.offset_ns is None and not state.gps_grade
    assert "chrony" in state.reason and "gpsd" in state.reason

    out = io.StringIO()
    code = clock_main(["--chrony-socket", missing, "--no-kernel", "--gpsd",
                       f"127.0.0.1:{free_tcp_port()}"], out=out)
    assert code == 1
    text = out.getvalue()
    assert "none (UNSYNCHRONISED)" in text and "not GPS-grade" in text

    a = realtime_ns()
    rec = comm_latency_record(a, a + 4_000_000, state, state)
    assert (rec.basis, rec.bound_ns, rec.gps_grade) == (Basis.UNSYNCHRONISED, None, False)
    assert rec.flags == ("tx_unsynchronised", "rx_unsynchronised")


def test_gpsd_reader_errors_are_typed() -> None:
    with pytest.raises(TimeSyncError, match=r"gpsd at 127\.0\.0\.1"):
        read_gpsd("127.0.0.1", free_tcp_port(), timeout_s=0.5, wait_s=0.5)


def test_missing_chronyc_binary_is_a_reason_not_a_crash() -> None:
    config = SyncConfig(chronyc="/nonexistent/chronyc", use_kernel=False, gpsd_host=None)
    state = read_sync_state(config)
    assert not state.synchronised and "not found" in state.reason
