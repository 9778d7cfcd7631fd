"""``PlutoEmulator``: an iiod (libiio network protocol, v0.2x) server that answers as an ADALM-Pluto.

One thread per TCP connection. Each command is one line (bounded length); every count is
checked before anything is allocated; a malformed request costs its connection only.
libiio opens one connection for the context (PRINT, attributes) and one per buffer
(OPEN, READBUF/WRITEBUF, CLOSE).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import socket
import threading
from types import TracebackType

from common.errors import IiodError
from common.radio.emu.air import Air
from common.radio.emu.buffers import DEFAULT_BUFFERS, RxBuffer, TxBuffer
from common.radio.emu.context import context_xml
from common.radio.emu.devices import Ad936xState, Attribute, Device, build_devices

log = logging.getLogger(__name__)

#: libiio's default iiod port.
IIOD_PORT = 30431
#: Longest command line accepted (libiio's client builds commands in 1024-byte buffers).
MAX_LINE = 1024
#: Largest attribute write (a 128-tap FIR file is about 2.5 kB).
MAX_ATTR_BYTES = 1 << 16
#: Largest buffer, in samples (the Pluto's 512 MB of RAM holds about this many per device).
MAX_BUFFER_SAMPLES = 1 << 24
MAX_KERNEL_BUFFERS = 64
MAX_SESSIONS = 32
#: Backend timeout until a client sends TIMEOUT (libiio's local backend default).
DEFAULT_TIMEOUT_S = 1.0
#: ``VERSION`` answer: major.minor.git-tag (7 characters).
VERSION = "0.24.semalgn"


@dataclasses.dataclass
class Faults:
    """Failure injection for tests: each counter fires on the next N matching commands."""

    #: Drop the connection after reading a WRITEBUF command, before its data.
    drop_writebuf: int = 0
    #: Drop the connection instead of answering a READBUF.
    drop_readbuf: int = 0


@dataclasses.dataclass
class Counters:
    sessions: int = 0
    bad_sessions: int = 0
    blocks_read: int = 0
    blocks_written: int = 0
    overflows: int = 0
    underflows: int = 0


class PlutoEmulator:
    """One emulated Pluto serving iiod on ``host:port`` (port 0 picks a free one).

    It transmits into and listens to ``air``; two emulators on one air are a link, one
    alone hears itself (a bench loopback cable).
    """

    def __init__(self, air: Air, *, host: str = "127.0.0.1", port: int = 0, part: str = "ad9364",
                 repeat_cyclic: bool = True, name: str = "pluto") -> None:
        self.air = air
        self.host, self.name = host, name
        self.repeat_cyclic = repeat_cyclic
        self.state = Ad936xState(part)
        self.devices = build_devices(self.state)
        self.xml = context_xml(self.devices, {
            "hw_model": f"semalign ADALM-Pluto emulator ({part.upper()})",
            "fw_version": "v0.38-emu",
            "ad9361-phy,model": part,
            "ad9361-phy,xo_correction": "40000000",
        }).encode()
        self.sender = air.new_id()
        self.listener = air.listener()
        self.faults = Faults()
        self.counters = Counters()
        self.timeout_s = DEFAULT_TIMEOUT_S
        self.kernel_buffers = {dev.id: DEFAULT_BUFFERS for dev in self.devices if dev.stream}
        self._owners: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._port = port

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def uri(self) -> str:
        return f"ip:{self.host}:{self._port}"

    def start(self) -> PlutoEmulator:
        if self._listener is not None:
            return self
        self._stop.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(MAX_SESSIONS)
        self._port = sock.getsockname()[1]
        self._listener = sock
        self._accept_thread = threading.Thread(target=self._accept, args=(sock,), name=f"{self.name}-accept",
                                               daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every connection (what a Pluto does when it goes away)."""
        self._stop.set()
        sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.kill()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        for session in sessions:
            session.thread.join(5)

    def outage(self, seconds: float) -> threading.Thread:
        """Go away for ``seconds`` (a USB re-enumeration), then serve again on the same port."""
        self.stop()

        def come_back() -> None:
            if not self._stop_outage.wait(seconds):
                self.start()

        self._stop_outage = threading.Event()
        thread = threading.Thread(target=come_back, name=f"{self.name}-outage", daemon=True)
        thread.start()
        return thread

    _stop_outage = threading.Event()

    def __enter__(self) -> PlutoEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop_outage.set()
        self.stop()

    def _accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with self._lock:
                if len(self._sessions) >= MAX_SESSIONS:
                    conn.close()
                    continue
                session = _Session(self, conn)
                self._sessions.add(session)
                self.counters.sessions += 1
            session.thread.start()

    def _forget(self, session: _Session) -> None:
        with self._lock:
            self._sessions.discard(session)
            for dev_id, owner in list(self._owners.items()):
                if owner is session:
                    del self._owners[dev_id]

    # -- lookups shared by sessions ---------------------------------------------------------
    def device(self, word: str) -> Device:
        for dev in self.devices:
            if word in (dev.id, dev.name):
                return dev
        raise IiodError(errno.ENODEV, f"no device {word[:40]!r}")

    def claim(self, dev: Device, session: _Session) -> None:
        with self._lock:
            if dev.id in self._owners:
                raise IiodError(errno.EBUSY, f"{dev.name} already has a buffer open")
            self._owners[dev.id] = session

    def release(self, dev: Device, session: _Session) -> None:
        with self._lock:
            if self._owners.get(dev.id) is session:
                del self._owners[dev.id]


class _Session:
    """One client connection and the buffers it opened."""

    def __init__(self, emu: PlutoEmulator, conn: socket.socket) -> None:
        self.emu = emu
        self.conn = conn
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = conn.makefile("rb", buffering=1 << 16)
        self.buffers: dict[str, RxBuffer | TxBuffer] = {}
        self.thread = threading.Thread(target=self.run, name=f"{emu.name}-session", daemon=True)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)

    # -- wire helpers -----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def reply(self, value: int) -> None:
        self.send(b"%d\n" % value)

    def read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if data is None or len(data) != n:
            raise _drop(f"connection closed inside a {n}-byte transfer")
        return bytes(data)

    def read_line(self) -> str | None:
        raw = self.rfile.readline(MAX_LINE + 1)
        if not raw:
            return None
        if not raw.endswith(b"\n"):
            raise _drop(f"command line longer than {MAX_LINE} bytes")
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise _drop("command line is not ASCII") from None

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.emu._stop.is_set():
                line = self.read_line()
                if line is None:
                    break
                if not line:
                    continue  # libiio sends "\r\nEXIT\r\n"
                words = line.split()
                if words[0].upper() in ("EXIT", "QUIT"):
                    break
                try:
                    self.dispatch(words[0].upper(), words[1:])
                except IiodError as exc:
                    if exc.close:
                        raise
                    self.reply(-exc.errno)
        except IiodError as exc:
            self.emu.counters.bad_sessions += 1
            log.info("iiod session dropped: %s", exc)
        except (OSError, ValueError):
            pass  # the peer went away
        finally:
            for dev_id, buf in list(self.buffers.items()):
                self._close_buffer(dev_id, buf)
            with contextlib.suppress(OSError):
                self.rfile.close()
                self.conn.close()
            self.emu._forget(self)

    def dispatch(self, cmd: str, args: list[str]) -> None:
        handler = getattr(self, f"cmd_{cmd.lower()}", None) if cmd.isalpha() else None
        if handler is None:
            raise IiodError(errno.EINVAL, f"unknown command {cmd[:20]!r}")
        handler(args)

    # -- context ----------------------------------------------------------------------------
    def cmd_version(self, args: list[str]) -> None:
        self.send(VERSION.encode() + b"\n")

    def cmd_print(self, args: list[str]) -> None:
        self.send(b"%d\n" % len(self.emu.xml) + self.emu.xml + b"\n")

    def cmd_zprint(self, args: list[str]) -> None:
        raise IiodError(errno.EINVAL, "no compressed context")  # libiio falls back to PRINT

    def cmd_help(self, args: list[str]) -> None:
        self.send(b"Available commands: HELP EXIT PRINT VERSION TIMEOUT OPEN CLOSE READ WRITE "
                  b"READBUF WRITEBUF GETTRIG SETTRIG SET\n")

    def cmd_timeout(self, args: list[str]) -> None:
        ms = _count(args, 0, 1, 3_600_000)
        # iiod applies it to its one local context: every connection shares it.
        self.emu.timeout_s = ms / 1000.0
        self.reply(0)

    def cmd_gettrig(self, args: list[str]) -> None:
        self.emu.device(_word(args, 0))
        self.reply(0)  # no trigger

    def cmd_settrig(self, args: list[str]) -> None:
        self.emu.device(_word(args, 0))
        raise IiodError(errno.ENOSYS, "no triggers on this device")

    def cmd_set(self, args: list[str]) -> None:
        dev = self.emu.device(_word(args, 0))
        if _word(args, 1).upper() != "BUFFERS_COUNT" or dev.stream is None:
            raise IiodError(errno.EINVAL, "SET supports BUFFERS_COUNT on a streaming device")
        count = _count(args, 2, 1, MAX_KERNEL_BUFFERS)
        if dev.id in self.emu._owners:
            raise IiodError(errno.EBUSY, "the buffer is open")
        self.emu.kernel_buffers[dev.id] = count
        self.reply(0)

    # -- attributes ---------------------------------------------------------------------------
    def _lookup(self, args: list[str], *, writing: bool) -> tuple[Attribute | None, list[str]]:
        """Resolve ``dev [DEBUG|BUFFER|INPUT ch|OUTPUT ch] attr`` -> (attribute, remaining words)."""
        dev = self.emu.device(_word(args, 0))
        rest = args[1:]
        table: dict[str, Attribute]
        kind = rest[0].upper() if rest else ""
        if kind in ("INPUT", "OUTPUT"):
            channel = dev.channel(_word(rest, 1), kind == "OUTPUT")
            if channel is None:
                raise IiodError(errno.ENODEV, f"no {kind.lower()} channel {rest[1][:30]!r} on {dev.name}")
            table, rest = channel.attrs, rest[2:]
        elif kind in ("DEBUG", "BUFFER"):
            table, rest = (dev.debug_attrs if kind == "DEBUG" else dev.buffer_attrs), rest[1:]
        else:
            table = dev.attrs
        needed = 2 if writing else 1
        if len(rest) < needed:
            return None, rest  # all attributes at once: not served
        return table.get(rest[0]), rest[1:]

    def cmd_read(self, args: list[str]) -> None:
        attr, _ = self._lookup(args, writing=False)
        if attr is None:
            raise IiodError(errno.ENOENT, "no such attribute (reading all attributes is not served)")
        value = attr.read().encode()
        self.send(b"%d\n" % len(value) + value + b"\n")

    def cmd_write(self, args: list[str]) -> None:
        size = _count(args, len(args) - 1, 0, MAX_ATTR_BYTES, drop=True)
        # The value follows the command at once: read it before any error reply.
        value = self.read_exact(size)
        attr, _ = self._lookup(args, writing=True)
        if attr is None:
            raise IiodError(errno.ENOENT, "no such attribute")
        try:
            text = value.rstrip(b"\x00").decode("ascii")
        except UnicodeDecodeError:
            raise IiodError(errno.EINVAL, "attribute value is not ASCII") from None
        attr.set(text)
        self.reply(size)

    # -- buffers ------------------------------------------------------------------------------
    def cmd_open(self, args: list[str]) -> None:
        dev = self.emu.device(_word(args, 0))
        samples = _count(args, 1, 1, MAX_BUFFER_SAMPLES)
        mask = _word(args, 2)
        cyclic = len(args) > 3 and args[3].upper() == "CYCLIC"
        if dev.stream is None:
            raise IiodError(errno.EINVAL, f"{dev.name} has no buffer")
        if len(mask) != dev.mask_words * 8:
            raise IiodError(errno.EINVAL, f"mask must be {dev.mask_words * 8} hex digits")
        try:
            bits = int(mask, 16)
        except ValueError:
            raise IiodError(errno.EINVAL, "mask is not hexadecimal") from None
        scan = len(dev.scan_channels)
        channels = [i for i in range(scan) if bits >> i & 1]
        if not channels or bits >> scan:
            raise IiodError(errno.EINVAL, f"mask {mask} enables no or non-scan channels")
        if cyclic and dev.stream != "tx":
            raise IiodError(errno.EINVAL, "only the DAC has cyclic buffers")
        if dev.id in self.buffers:
            raise IiodError(errno.EBUSY, "already open on this connection")
        self.emu.claim(dev, self)
        emu, count = self.emu, self.emu.kernel_buffers[dev.id]
        buf: RxBuffer | TxBuffer
        if dev.stream == "rx":
            buf = RxBuffer(emu.air, emu.listener, emu.state, samples, channels, count, emu._stop)
        else:
            buf = TxBuffer(emu.air, emu.sender, emu.state, samples, channels, count, cyclic,
                           emu.repeat_cyclic, emu._stop)
        self.buffers[dev.id] = buf
        self.reply(0)

    def _close_buffer(self, dev_id: str, buf: RxBuffer | TxBuffer) -> None:
        self.buffers.pop(dev_id, None)
        if isinstance(buf, TxBuffer):
            buf.close()
            self.emu.counters.underflows += buf.underflows
        else:
            self.emu.counters.overflows += buf.overflows
        self.emu.release(self.emu.device(dev_id), self)

    def cmd_close(self, args: list[str]) -> None:
        dev = self.emu.device(_word(args, 0))
        buf = self.buffers.get(dev.id)
        if buf is None:
            raise IiodError(errno.ENXIO, f"{dev.name} is not open on this connection")
        self._close_buffer(dev.id, buf)
        self.reply(0)

    def _buffer(self, args: list[str]) -> tuple[Device, RxBuffer | TxBuffer]:
        dev = self.emu.device(_word(args, 0))
        buf = self.buffers.get(dev.id)
        if buf is None:
            raise IiodError(errno.EBADF, f"{dev.name} is not open on this connection")
        return dev, buf

    def cmd_readbuf(self, args: list[str]) -> None:
        dev, buf = self._buffer(args)
        if not isinstance(buf, RxBuffer):
            raise IiodError(errno.EBADF, f"{dev.name} does not stream to the host")
        wanted = _count(args, 1, 0, MAX_BUFFER_SAMPLES * 4)
        if self.emu.faults.drop_readbuf > 0:
            self.emu.faults.drop_readbuf -= 1
            raise _drop("injected fault: READBUF")
        if wanted < buf.sample_bytes:
            self.reply(0)
            return
        mask = b"%08x\n" % sum(1 << c for c in buf.columns)
        sent = 0
        while sent < wanted:
            block = buf.read(self.emu.timeout_s)
            chunk = block[: wanted - sent]
            self.send(b"%d\n" % len(chunk) + (mask if sent == 0 else b"") + chunk)
            sent += len(chunk)
            self.emu.counters.blocks_read += 1

    def cmd_writebuf(self, args: list[str]) -> None:
        dev, buf = self._buffer(args)
        if not isinstance(buf, TxBuffer):
            raise IiodError(errno.EBADF, f"{dev.name} does not stream from the host")
        size = _count(args, 1, 0, buf.samples * buf.sample_bytes, drop=True)
        if self.emu.faults.drop_writebuf > 0:
            self.emu.faults.drop_writebuf -= 1
            raise _drop("injected fault: WRITEBUF")
        if size % buf.sample_bytes:
            self.read_exact(size)
            raise IiodError(errno.EINVAL, f"{size} bytes are not whole {buf.sample_bytes}-byte samples")
        self.reply(0)  # opened fine: the data may follow
        data = self.read_exact(size)
        buf.write(data, self.emu.timeout_s)
        self.emu.counters.blocks_written += 1
        self.reply(size)


def _drop(message: str) -> IiodError:
    return IiodError(errno.EPROTO, message, close=True)


def _word(args: list[str], i: int) -> str:
    if i >= len(args):
        raise IiodError(errno.EINVAL, "missing argument")
    return args[i]


def _count(args: list[str], i: int, lo: int, hi: int, *, drop: bool = False) -> int:
    """Argument ``i`` as an integer in [lo, hi]; with ``drop`` a bad one closes the connection
    (data of unknown length follows it, so the stream cannot be resynchronised)."""
    word = _word(args, i)
    try:
        value = int(word, 10)
    except ValueError:
        if drop:
            raise _drop(f"count {word[:20]!r} is not an integer") from None
        raise IiodError(errno.EINVAL, f"{word[:20]!r} is not an integer") from None
    if not lo <= value <= hi:
        if drop:
            raise _drop(f"count {value} outside [{lo}, {hi}]")
        raise IiodError(errno.EINVAL, f"{value} outside [{lo}, {hi}]")
    return value
