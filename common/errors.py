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
    ├── RadioError                  the SDR front end failed (translated from pyadi-iio/libiio)
    └── AdaptationError             fine-tuning produced an unusable model (e.g. non-finite merge)

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


class RadioError(SemalignError):
    code = "radio"


class AdaptationError(SemalignError):
    code = "adaptation"
