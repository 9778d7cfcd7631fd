"""The iiod protocol as the emulator speaks it, from a raw socket: answers, and untrusted input."""

from __future__ import annotations

import socket

import pytest

from common.radio.emu import PlutoEmulator
from common.radio.emu.server import MAX_LINE


class Client:
    def __init__(self, emu: PlutoEmulator) -> None:
        self.sock = socket.create_connection(("127.0.0.1", emu.port), timeout=5)
        self.rfile = self.sock.makefile("rb")

    def cmd(self, line: str, data: bytes = b"") -> int:
        self.sock.sendall(line.encode() + b"\r\n" + data)
        return int(self.rfile.readline())

    def closed(self) -> bool:
        try:
            return self.rfile.read(1) == b""
        except OSError:
            return True


def test_print_version_and_attributes(emulator: PlutoEmulator) -> None:
    c = Client(emulator)
    size = c.cmd("PRINT")
    xml = c.rfile.read(size + 1)
    assert xml.startswith(b"<?xml") and b'name="cf-ad9361-lpc"' in xml
    c.sock.sendall(b"VERSION\r\n")
    assert c.rfile.readline().startswith(b"0.24.")
    assert c.cmd("ZPRINT") == -22  # libiio falls back to PRINT
    assert c.cmd("WRITE iio:device0 OUTPUT voltage0 hardwaregain 7", b"-20.1\x00\x00") == 7
    size = c.cmd("READ iio:device0 OUTPUT voltage0 hardwaregain")
    assert c.rfile.read(size + 1) == b"-20.000000 dB\n"
    assert c.cmd("WRITE ad9361-phy OUTPUT voltage0 hardwaregain 3", b"5\x00\x00") == -22
    assert c.cmd("READ iio:device0 OUTPUT voltage9 hardwaregain") == -19  # ENODEV
    assert c.cmd("READ iio:device9 nothing") == -19
    assert c.cmd("TIMEOUT 2500") == 0 and emulator.timeout_s == 2.5


def test_buffer_commands_check_their_arguments(emulator: PlutoEmulator) -> None:
    c = Client(emulator)
    assert c.cmd("READBUF iio:device2 4096") == -9  # EBADF: not open
    assert c.cmd("OPEN iio:device2 1024 0000000") == -22  # wrong mask length
    assert c.cmd("OPEN iio:device2 1024 00000004") == -22  # not a scan channel
    assert c.cmd("OPEN iio:device2 1024 00000003 CYCLIC") == -22  # the ADC has no cyclic buffers
    assert c.cmd("OPEN iio:device2 99999999999 00000003") == -22
    assert c.cmd("OPEN iio:device0 1024 00000003") == -22  # no buffer on the phy
    assert c.cmd("OPEN iio:device2 1024 00000001") == 0  # I only
    other = Client(emulator)
    assert other.cmd("OPEN iio:device2 1024 00000003") == -16  # EBUSY: one buffer per device
    assert c.cmd("READBUF iio:device2 2048") == 2048
    assert c.rfile.readline() == b"00000001\n" and len(c.rfile.read(2048)) == 2048
    assert c.cmd("CLOSE iio:device2") == 0
    assert other.cmd("OPEN iio:device2 1024 00000003") == 0
    assert c.cmd("FROBNICATE") == -22
    assert c.cmd("SET iio:device1 BUFFERS_COUNT 8") == 0
    assert c.cmd("SET iio:device1 BUFFERS_COUNT 100000") == -22


@pytest.mark.parametrize("attack", [
    b"A" * (MAX_LINE + 10) + b"\r\n",  # an endless line
    b"WRITE iio:device0 filter_fir_config 999999999\r\n",  # a huge announced size
    b"WRITE iio:device0 filter_fir_config -5\r\n",
    b"OPEN iio:device1 1024 00000003\r\nWRITEBUF iio:device1 999999999\r\n",
    b"\xff\xfe\r\n",  # not ASCII
])
def test_a_bad_client_costs_its_own_connection_only(emulator: PlutoEmulator, attack: bytes) -> None:
    good = Client(emulator)
    bad = Client(emulator)
    bad.sock.sendall(attack)
    while True:  # replies to the well-formed part may come first
        line = bad.rfile.readline()
        if not line:
            break
    assert bad.closed()
    assert good.cmd("READ iio:device0 INPUT voltage0 sampling_frequency") > 0
    assert emulator.counters.bad_sessions == 1
