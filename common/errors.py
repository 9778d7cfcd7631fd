"""The one exception tree of semalign; every error a caller should catch lives here.

    SemalignError
    ├── ConfigError                 a config file or flag is invalid
    │   └── ShiftError              a sensor-shift spec is invalid, or its plugin misbehaved
    ├── DatasetError                a dataset is missing, corrupt or unreachable
    │   └── ChecksumError           a file does not match its published checksum
    ├── BundleError                 a model bundle is missing, corrupt or incompatible
    │   └── BundleMismatch          TX and RX hold different bundles
    ├── ProtocolError               a message from the network is malformed (untrusted input)
    │   ├── OversizeMessage         larger than the configured limit; rejected before parsing
    │   ├── EnvelopeError           the msgpack envelope frame is malformed
    │   │   └── BadSyncMessage      a sync state, clock probe or clock reply is malformed
    │   ├── FrameError              a radio frame's header or body is malformed (magic, CRC, fields)
    │   ├── SampleError             a block of baseband samples has the wrong shape, dtype or length
    │   ├── MonitorError            a monitor-stream message is malformed (``semalign watch`` input)
    │   └── PayloadError            the binary payload is malformed
    │       ├── BadMagic
    │       ├── BadVersion
    │       ├── BadValueType
    │       ├── SizeMismatch        byte count disagrees with the header
    │       ├── EmptyPayload        the header announces no vectors at all (t = n = 0)
    │       ├── AlphaOutOfRange     alpha is zero or beyond the bundle's dims
    │       ├── BadVector           a vector header is inconsistent (kind, index)
    │       ├── LabelOutOfRange
    │       └── NonFiniteValue      NaN or inf among the values
    ├── BudgetError                 nothing fits in the byte budget
    ├── InternalError               a bug in semalign met one message (answered, logged with traceback)
    ├── TransportError              a link could not deliver (timeouts, closed sockets)
    │   └── Unreachable             no peer is connected; a send could not be queued
    │       └── HandshakeRefused    the peer refused our CURVE handshake (key not allowed, wrong peer key)
    ├── RadioError                  the SDR front end failed (translated from pyadi-iio/libiio)
    │   ├── SampleOverflow          TX samples exceed the DAC full scale (rejected, never wrapped)
    │   ├── RadioUnreachable        the radio stayed unreachable for the whole reconnect window
    │   └── IiodError               the Pluto emulator refuses an iiod request (answered as -errno)
    ├── TimeSyncError               a clock sync-state reader could not read its source
    ├── JournalError                TX's journal file does not read as one (set aside, TX starts afresh)
    ├── AdaptationError             fine-tuning produced an unusable model (e.g. non-finite merge)
    └── BenchError                  a benchmark could not run as asked

Third-party errors are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class SemalignError(Exception):
    """Base of every error semalign raises on purpose."""

    #: Short stable name put on the wire and in logs/counters.
    code = "error"
    #: The batch a protocol error belongs to, when it could be read before the error.
    batch_id: int | None = None


class ConfigError(SemalignError):
    code = "config"


class ShiftError(ConfigError):
    """A ``shift`` spec does not parse, names no registered plugin, or a plugin failed or returned bad images."""

    code = "shift"


class DatasetError(SemalignError):
    code = "dataset"


class ChecksumError(DatasetError):
    code = "checksum"


class BundleError(SemalignError):
    code = "bundle"


class BundleMismatch(BundleError):
    code = "bundle_mismatch"


class ProtocolError(SemalignError):
    code = "protocol"


class OversizeMessage(ProtocolError):
    code = "oversize"


class EnvelopeError(ProtocolError):
    code = "envelope"


class BadSyncMessage(EnvelopeError):
    """A sync state, clock probe or clock reply from a peer is malformed or inconsistent."""

    code = "bad_sync"


class FrameError(ProtocolError):
    """A received frame header or body is malformed (bad magic, CRC or inconsistent fields)."""

    code = "frame"


class SampleError(ProtocolError):
    """Baseband samples have the wrong shape, dtype or length for the block they were given to.

    Received samples are untrusted input like any network message, so this is a
    ``ProtocolError``: a bad burst costs that burst only.
    """

    code = "samples"


class MonitorError(ProtocolError):
    """A message on a daemon's monitor stream is malformed; the watcher drops it and counts it."""

    code = "monitor"


class PayloadError(ProtocolError):
    code = "payload"


class BadMagic(PayloadError):
    code = "bad_magic"


class BadVersion(PayloadError):
    code = "bad_version"


class BadValueType(PayloadError):
    code = "bad_value_type"


class SizeMismatch(PayloadError):
    code = "size_mismatch"


class EmptyPayload(PayloadError):
    """A payload with t = n = 0: nothing to reconstruct, adapt or classify."""

    code = "empty_payload"


class AlphaOutOfRange(PayloadError):
    code = "alpha_out_of_range"


class BadVector(PayloadError):
    code = "bad_vector"


class LabelOutOfRange(PayloadError):
    code = "label_out_of_range"


class NonFiniteValue(PayloadError):
    code = "non_finite"


class BudgetError(SemalignError):
    code = "budget"


class InternalError(SemalignError):
    """An unexpected exception while handling one message: a bug in semalign, not bad input.

    The message is answered with ``internal_error`` and the traceback goes to the log; the
    daemon carries on.
    """

    code = "internal_error"


class TransportError(SemalignError):
    code = "transport"


class Unreachable(TransportError):
    """No peer is connected, so a send could not be queued."""

    code = "unreachable"


class HandshakeRefused(Unreachable):
    """The peer answered, but refused our CURVE handshake: our key is not in its allow-list, or
    the peer key we hold is not its key. Told apart from a wrong address by zmq's socket monitor."""

    code = "handshake_refused"


class RadioError(SemalignError):
    code = "radio"


class SampleOverflow(RadioError):
    """TX samples exceed the DAC full scale; they are rejected instead of wrapping in int16."""

    code = "sample_overflow"


class RadioUnreachable(RadioError):
    """Reconnecting kept failing for the configured window (``PlutoConfig.reconnect_window_s``)."""

    code = "radio_unreachable"


class IiodError(RadioError):
    """An iiod request the Pluto emulator refuses; the client reads ``-errno`` as the answer.

    Raised inside ``common.radio.emu`` only: it costs the request (or, for a malformed
    command stream, the client's connection), never the emulator.
    """

    code = "iiod"

    def __init__(self, errno: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.errno = errno
        #: The request cannot be answered in sync (data of unknown length follows it, or the
        #: client broke the protocol): the emulator closes this client's connection instead.
        self.close = close


class JournalError(SemalignError):
    """TX's journal of unscored batches (``tx.journal``) is not a journal: truncated, edited,
    or another program's. TX sets the file aside and starts with an empty journal."""

    code = "journal"


class TimeSyncError(SemalignError):
    """A sync-state reader could not read its source (daemon absent, timeout, bad output).

    Raised by the individual readers only; ``read_sync_state`` turns it into an
    unsynchronised state with the reason, so it never reaches a daemon's loop.
    """

    code = "timesync"


class AdaptationError(SemalignError):
    code = "adaptation"


class BenchError(SemalignError):
    """A benchmark could not run as asked (bad options, a link that never answered)."""

    code = "bench"
