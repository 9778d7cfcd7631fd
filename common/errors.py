"""The one exception tree of semalign; every error a caller should catch lives here.

    SemalignError
    ├── ConfigError                 a config file or flag is invalid
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
    │   └── PayloadError            the binary payload is malformed
    │       ├── BadMagic
    │       ├── BadVersion
    │       ├── BadValueType
    │       ├── SizeMismatch        byte count disagrees with the header
    │       ├── AlphaOutOfRange     alpha is zero or beyond the bundle's dims
    │       ├── BadVector           a vector header is inconsistent (kind, index)
    │       ├── LabelOutOfRange
    │       └── NonFiniteValue      NaN or inf among the values
    ├── BudgetError                 nothing fits in the byte budget
    ├── TransportError              a link could not deliver (timeouts, closed sockets)
    │   └── Unreachable             no peer is connected; a send could not be queued
    ├── RadioError                  the SDR front end failed (translated from pyadi-iio/libiio)
    │   └── SampleOverflow          TX samples exceed the DAC full scale (rejected, never wrapped)
    ├── TimeSyncError               a clock sync-state reader could not read its source
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


class TransportError(SemalignError):
    code = "transport"


class Unreachable(TransportError):
    """No peer is connected, so a send could not be queued."""

    code = "unreachable"


class RadioError(SemalignError):
    code = "radio"


class SampleOverflow(RadioError):
    """TX samples exceed the DAC full scale; they are rejected instead of wrapping in int16."""

    code = "sample_overflow"


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
