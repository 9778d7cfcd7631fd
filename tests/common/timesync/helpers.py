"""Real chronyd and gpsd (via gpsfake) for the time-sync tests, started and always stopped.

chronyd runs with ``-x`` (never touches the system clock), a private config and a SOCK refclock.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.runtime import free_tcp_port, spawn, stop_process

# chrony's refclock_sock.c, ``struct sock_sample`` (native layout, 40 bytes on LP64):
# struct timeval tv; double offset; int pulse; int leap; int _pad; int magic.
SOCK_SAMPLE = struct.Struct("@qqdiiii")
SOCK_MAGIC = 0x534F434B
#: chrony's SOCK offset is true time minus the sample's system time, in seconds.
SOCK_SEND_INTERVAL_S = 0.05

#: Upper bound on waiting for a daemon to come up or for chrony to select its refclock.
START_DEADLINE_S = 10.0
SELECT_DEADLINE_S = 15.0
#: Seconds chronyd or gpsfake get to exit after SIGTERM before they are killed.
HELPER_GRACE_S = 5.0


def _tail(path: Path, limit: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


class _Feeder(threading.Thread):
    """Sends ``sock_sample`` datagrams with a fixed offset until stopped."""

    def __init__(self, path: str, offset_s: float) -> None:
        super().__init__(daemon=True, name="sock-refclock-feeder")
        self._path = path
        self._offset = offset_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            while not self._stop_event.is_set():
                now = time.clock_gettime_ns(time.CLOCK_REALTIME)
                sample = SOCK_SAMPLE.pack(
                    now // 1_000_000_000, (now % 1_000_000_000) // 1000, self._offset,
                    0, 0, 0, SOCK_MAGIC,
                )
                # chronyd may not have bound the socket yet, or be going away: keep trying.
                with contextlib.suppress(OSError):
                    sock.sendto(sample, self._path)
                self._stop_event.wait(SOCK_SEND_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


@dataclass(frozen=True)
class Chronyd:
    """A running private chronyd: its command socket and the refclock it is given."""

    command_socket: str
    refid: str
    offset_s: float  # true time minus this host's clock, as fed to the SOCK refclock
    root_delay_s: float
    log: Path
    feeder: _Feeder

    def start_feeding(self) -> None:
        if not self.feeder.is_alive():
            self.feeder.start()


@contextlib.contextmanager
def running_chronyd(
    refid: str, offset_s: float, *, root_delay_s: float = 1e-4, feed: bool = True
) -> Iterator[Chronyd]:
    """Start chronyd -x with a SOCK refclock fed ``offset_s``; skip if it cannot start.

    With ``feed=False`` no sample is sent until the test calls ``start_feeding()``.
    """
    chronyd = shutil.which("chronyd") or (
        "/usr/sbin/chronyd" if os.access("/usr/sbin/chronyd", os.X_OK) else None
    )
    if chronyd is None:
        pytest.skip("chronyd is not installed (apt-get install chrony)")
    if shutil.which("chronyc") is None:
        pytest.skip("chronyc is not installed (apt-get install chrony)")
    # A short path: unix socket names are limited to 108 bytes. mkdtemp makes it 0700,
    # which chrony insists on for the directory of its command socket.
    root = Path(tempfile.mkdtemp(prefix="semalign-chrony-"))
    conf = root / "chrony.conf"
    cmd_socket = root / "chronyd.sock"
    ref_socket = root / "refclock.sock"
    log = root / "chronyd.log"
    conf.write_text(
        "\n".join([
            # poll 0 with a 4-sample median: one filtered sample a second, selected in ~2 s.
            f"refclock SOCK {ref_socket} refid {refid} poll 0 filter 4 precision 1e-7 "
            f"delay {root_delay_s}",
            f"bindcmdaddress {cmd_socket}",
            "cmdport 0",  # no UDP command port: another chronyd may own 323
            "port 0",  # no NTP server port either
            f"pidfile {root / 'chronyd.pid'}",
            "",
        ])
    )
    argv = [chronyd, "-x", "-d", "-f", str(conf)]
    # As root, stay root (no drop to _chrony, who could not reach our 0700 directory);
    # otherwise -U lets chronyd run unprivileged, which -x makes possible.
    argv += ["-u", "root"] if os.geteuid() == 0 else ["-U"]
    feeder = _Feeder(str(ref_socket), offset_s)
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = spawn(argv, log)
        deadline = time.monotonic() + START_DEADLINE_S
        while not (cmd_socket.exists() and ref_socket.exists()):
            if proc.poll() is not None:
                pytest.skip(f"chronyd could not start (exit {proc.returncode}): {_tail(log)}")
            if time.monotonic() > deadline:
                pytest.skip(f"chronyd did not open its sockets in {START_DEADLINE_S} s: "
                            f"{_tail(log)}")
            time.sleep(0.05)
        handle = Chronyd(str(cmd_socket), refid, offset_s, root_delay_s, log, feeder)
        if feed:
            handle.start_feeding()
        yield handle
    finally:
        if feeder.is_alive():
            feeder.stop()
        if proc is not None:
            stop_process(proc, HELPER_GRACE_S)
        shutil.rmtree(root, ignore_errors=True)


def _nmea(body: str) -> str:
    checksum = functools.reduce(lambda acc, ch: acc ^ ord(ch), body, 0)
    return f"${body}*{checksum:02X}\r\n"


#: Where the fake receiver sits (Munich, 545.4 m above mean sea level).
FAKE_LAT, FAKE_LON, FAKE_ALT_M = 48.1173, 11.516666667, 545.4


def nmea_log(start_s: int, epochs: int) -> str:
    """GGA + GSA (3D) + RMC, one epoch per second from ``start_s`` (UTC), valid checksums."""
    out: list[str] = []
    for i in range(epochs):
        tm = time.gmtime(start_s + i)
        hms = time.strftime("%H%M%S.00", tm)
        dmy = time.strftime("%d%m%y", tm)
        out.append(_nmea(f"GPGGA,{hms},4807.0380,N,01131.0000,E,1,08,0.9,{FAKE_ALT_M},M,46.9,M,,"))
        out.append(_nmea("GPGSA,A,3,04,05,09,12,24,25,29,31,,,,,1.8,0.9,1.5"))
        out.append(_nmea(f"GPRMC,{hms},A,4807.0380,N,01131.0000,E,000.0,000.0,{dmy},,,A"))
    return "".join(out)


@dataclass(frozen=True)
class FakeGps:
    port: int
    epoch_times_s: tuple[int, ...]  # the UTC seconds the log's fixes carry


@contextlib.contextmanager
def running_gpsfake(epochs: int = 60) -> Iterator[FakeGps]:
    """gpsfake (and the gpsd it spawns) replaying a 3D-fix log of the current time."""
    gpsfake = shutil.which("gpsfake")
    gpsd_found = shutil.which("gpsd") is not None or os.access("/usr/sbin/gpsd", os.X_OK)
    if gpsfake is None or not gpsd_found:
        pytest.skip("gpsd/gpsfake are not installed (apt-get install gpsd gpsd-clients)")
    root = Path(tempfile.mkdtemp(prefix="semalign-gps-"))
    start_s = int(time.time())
    log_path = root / "fix.nmea"
    log_path.write_text(nmea_log(start_s, epochs))
    out = root / "gpsfake.log"
    port = free_tcp_port()
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"  # gpsfake looks gpsd up on PATH
    proc: subprocess.Popen[bytes] | None = None
    try:
        # -n: gpsd reads the pty without waiting for a client; -c 0.1 s per sentence.
        # Its own session, so stopping the group also stops the gpsd that gpsfake starts.
        proc = spawn([gpsfake, "-q", "-n", "-c", "0.1", "-P", str(port), str(log_path)], out,
                     env=env, new_session=True)
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.skip(f"gpsfake could not start (exit {proc.returncode}): {_tail(out)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                pytest.skip(f"gpsd did not listen within {START_DEADLINE_S} s: {_tail(out)}")
            time.sleep(0.05)
        yield FakeGps(port, tuple(range(start_s, start_s + epochs)))
    finally:
        if proc is not None:
            stop_process(proc, HELPER_GRACE_S, group=True)
        shutil.rmtree(root, ignore_errors=True)
