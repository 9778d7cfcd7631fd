"""The small msgpack frames that travel beside the payload: envelope, hello, report, error, clock, air-ready, recall.

Every decoder treats its bytes as untrusted: size first, then types and ranges, and any
failure is an ``EnvelopeError``. Arrays never travel here except predictions (raw bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from common.errors import BadValueType, EnvelopeError
from common.timesync.latency import ClockReply
from common.wire import payload

#: Upper bound on any metadata frame; checked before unpacking.
MAX_META_BYTES = 64 * 1024
#: Upper bound on a reply frame: a report carries one prediction byte per test vector (t <= 65535)
#: beside its metadata, so a legal report of any t fits.
MAX_REPLY_BYTES = MAX_META_BYTES + payload.MAX_COUNT
PROTOCOL = 1

KIND_HELLO = "hello"
KIND_BATCH = "batch"
KIND_REPORT = "report"
KIND_ERROR = "error"
KIND_CLOCK_PROBE = "clock_probe"
KIND_CLOCK_REPLY = "clock_reply"
#: RX to TX: "my radio is capturing now, transmit batch ``batch_id``" (transport pluto).
KIND_AIR_READY = "air_ready"
#: TX to RX: forget carried-over adapters (``semalign ctl reset-adapter``); RX answers in kind.
KIND_ADAPT_RESET = "adapt_reset"
#: TX to RX: "send again your report of batch ``batch_id`` of my earlier run ``run``" (a TX
#: restarted after a kill collects what its last run never heard); RX answers from its cache.
KIND_RECALL = "recall"
#: ``ErrorReply.code`` of a recall RX holds no report for.
RECALL_UNKNOWN = "report_unknown"
#: Longest run id accepted (TX makes 12 hex digits).
MAX_RUN_CHARS = 64


def _pack(obj: Mapping[str, Any]) -> bytes:
    # Callers pass ``vars(self)``: a shallow view, where ``dataclasses.asdict`` would deep-copy
    # every nested map (it cost more than packing, per message).
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(frame: bytes | memoryview, limit: int = MAX_META_BYTES) -> dict[str, Any]:
    """Decode one metadata frame (at most ``limit`` bytes) into a dict, bounded in size and depth."""
    if len(frame) > limit:
        raise EnvelopeError(f"metadata frame is {len(frame)} bytes, limit {limit}")
    try:
        obj = msgpack.unpackb(
            bytes(frame), raw=False, strict_map_key=True,
            max_bin_len=limit, max_str_len=limit,
            max_array_len=4096, max_map_len=256,
        )
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise EnvelopeError(f"metadata frame is not valid msgpack ({exc})") from exc
    if not isinstance(obj, dict):
        raise EnvelopeError(f"metadata frame must be a map, got {type(obj).__name__}")
    if obj.get("v") != PROTOCOL:
        raise EnvelopeError(f"protocol version {obj.get('v')!r}, expected {PROTOCOL}")
    return obj


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise EnvelopeError(f"field {key!r} is missing")
    value = obj[key]
    # bool is an int subclass; a flag where a count belongs is still malformed.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise EnvelopeError(f"field {key!r} must be {kind}, got {type(value).__name__}")
    return value


def _run(obj: Mapping[str, Any]) -> str | None:
    """The optional ``run`` field: a TX run id of 1..``MAX_RUN_CHARS`` characters, or None."""
    return None if obj.get("run") is None else _required_run(obj)


def _required_run(obj: Mapping[str, Any]) -> str:
    run: str = _get(obj, "run", str)
    if not 1 <= len(run) <= MAX_RUN_CHARS:
        raise EnvelopeError(f"field 'run' is {len(run)} characters, expected 1..{MAX_RUN_CHARS}")
    return run


def _count(obj: Mapping[str, Any], key: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    value: int = _get(obj, key, int)
    if not lo <= value <= hi:
        raise EnvelopeError(f"field {key!r}={value} outside [{lo}, {hi}]")
    return value


@dataclass(frozen=True)
class Hello:
    """TX's greeting and RX's answer: both name the bundle they hold."""

    bundle: str
    role: str
    sync: dict[str, Any] | None = None

    def encode(self) -> bytes:
        return _pack({"v": PROTOCOL, "kind": KIND_HELLO, **vars(self)})

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> Hello:
        return cls(
            bundle=_get(obj, "bundle", str),
            role=_get(obj, "role", str),
            sync=_get(obj, "sync", dict, optional=True),
        )


@dataclass(frozen=True)
class Envelope:
    """Batch metadata the paper's file does not carry; frame 0 of a batch message."""

    batch_id: int
    attempt: int
    modulation: str
    b_max: int
    alpha: int
    bundle: str
    t_a_ns: int  # TX CLOCK_REALTIME at PCA start (the paper's A)
    t: int = 0
    n: int = 0
    value_type: int = 1
    #: Length of the baseband burst, when it travels over the air (transport pluto).
    samples: int = 0
    transport: str = "zmq"
    sync: dict[str, Any] | None = None  # TX's SyncState
    offset: dict[str, Any] | None = None  # TX's latest estimate of RX clock minus TX clock
    #: TX's run id (one per daemon start): tells a restarted TX's batch 0 from the last run's.
    run: str | None = None

    def encode(self) -> bytes:
        return _pack({"v": PROTOCOL, "kind": KIND_BATCH, **vars(self)})

    def replace(self, **changes: Any) -> Envelope:
        return dataclasses.replace(self, **changes)

    @property
    def header(self) -> payload.Header:
        """The payload header this envelope announces; ``BadValueType`` for an unknown type."""
        try:
            value_type = payload.ValueType(self.value_type)
        except ValueError:
            raise BadValueType(f"unknown value type {self.value_type} in the envelope") from None
        return payload.Header(payload.VERSION, value_type, self.alpha, self.t, self.n)

    @property
    def payload_size(self) -> int:
        """Bytes of the payload this envelope announces (checked against limits before allocating)."""
        return self.header.size

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> Envelope:
        return cls(
            batch_id=_count(obj, "batch_id"),
            attempt=_count(obj, "attempt", 0, 1000),
            modulation=_get(obj, "modulation", str),
            b_max=_count(obj, "b_max"),
            alpha=_count(obj, "alpha", 1, 0xFFFF),
            bundle=_get(obj, "bundle", str),
            t_a_ns=_count(obj, "t_a_ns"),
            t=_count(obj, "t", 0, 0xFFFF),
            n=_count(obj, "n", 0, 0xFFFF),
            value_type=_count(obj, "value_type", 0, 15),
            samples=_count(obj, "samples", 0, 1 << 30),
            transport=_get(obj, "transport", str),
            sync=_get(obj, "sync", dict, optional=True),
            offset=_get(obj, "offset", dict, optional=True),
            run=_run(obj),
        )


@dataclass(frozen=True)
class Report:
    """RX's answer to a batch: predictions for the test vectors and the measured latencies."""

    batch_id: int
    attempt: int
    predictions: bytes  # one uint8 class per test vector, in index order
    n_test: int
    n_train: int
    alpha: int
    adapt: str
    t_b_ns: int  # RX CLOCK_REALTIME when the received vectors were ready for the model (the paper's B)
    latency_comm_s: float  # B - A
    latency_finetune_s: float  # C
    latency_classify_s: float  # D
    latency_e2e_s: float  # (B - A) + C + D
    parse_s: float = 0.0
    reconstruct_s: float = 0.0
    train_loss: float = float("nan")
    vectors_lost: int = 0
    frames_lost: int = 0
    snr_db: float | None = None
    comm: dict[str, Any] | None = None
    sync: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The TX run the batch came from (the envelope's ``run``): a report recalled for an
    #: earlier run is told from this run's report of the same batch id.
    run: str | None = None

    def encode(self) -> bytes:
        return _pack({"v": PROTOCOL, "kind": KIND_REPORT, **vars(self)})

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> Report:
        n_test = _count(obj, "n_test", 0, 0xFFFF)
        predictions = _get(obj, "predictions", bytes)
        if len(predictions) != n_test:
            raise EnvelopeError(f"{len(predictions)} predictions for {n_test} test vectors")
        num = (int, float)
        return cls(
            batch_id=_count(obj, "batch_id"),
            attempt=_count(obj, "attempt", 0, 1000),
            predictions=predictions,
            n_test=n_test,
            n_train=_count(obj, "n_train", 0, 0xFFFF),
            alpha=_count(obj, "alpha", 1, 0xFFFF),
            adapt=_get(obj, "adapt", str),
            t_b_ns=_count(obj, "t_b_ns"),
            latency_comm_s=float(_get(obj, "latency_comm_s", num)),
            latency_finetune_s=float(_get(obj, "latency_finetune_s", num)),
            latency_classify_s=float(_get(obj, "latency_classify_s", num)),
            latency_e2e_s=float(_get(obj, "latency_e2e_s", num)),
            parse_s=float(_get(obj, "parse_s", num)),
            reconstruct_s=float(_get(obj, "reconstruct_s", num)),
            train_loss=float(_get(obj, "train_loss", num)),
            # Of the t + n vectors a batch announced: up to twice the header's count field.
            vectors_lost=_count(obj, "vectors_lost", 0, 2 * payload.MAX_COUNT),
            frames_lost=_count(obj, "frames_lost"),
            snr_db=_get(obj, "snr_db", num, optional=True),
            comm=_get(obj, "comm", dict, optional=True),
            sync=_get(obj, "sync", dict, optional=True),
            extra=_get(obj, "extra", dict, optional=True) or {},
            run=_run(obj),
        )


@dataclass(frozen=True)
class ErrorReply:
    """RX's answer to a message it rejected; ``batch_id`` is None if it could not be read."""

    code: str
    message: str
    batch_id: int | None = None
    #: Set on the answer to a ``recall``: the earlier TX run whose batch it concerns.
    run: str | None = None

    def encode(self) -> bytes:
        return _pack({"v": PROTOCOL, "kind": KIND_ERROR, **vars(self)})

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> ErrorReply:
        return cls(
            code=_get(obj, "code", str),
            message=_get(obj, "message", str),
            batch_id=_get(obj, "batch_id", int, optional=True),
            run=_run(obj),
        )


def encode_clock(kind: str, body: Mapping[str, Any]) -> bytes:
    """A clock probe (TX -> RX) or reply (RX -> TX); bodies come from ``common.timesync``."""
    return _pack({"v": PROTOCOL, "kind": kind, **body})


def clock_body(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a clock message without the framing keys, for ``ClockProbe/Reply.from_dict``."""
    return {k: v for k, v in obj.items() if k not in ("v", "kind")}


@dataclass(frozen=True)
class AirReady:
    """RX to TX: "my radio is capturing now, transmit batch ``batch_id``" (transport pluto)."""

    batch_id: int
    attempt: int

    def encode(self) -> bytes:
        return _pack({"v": PROTOCOL, "kind": KIND_AIR_READY, **vars(self)})

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> AirReady:
        return cls(batch_id=_count(obj, "batch_id"), attempt=_count(obj, "attempt", 0, 1000))


@dataclass(frozen=True)
class AdaptReset:
    """TX to RX: reset the adapters carried over for ``alpha`` (all if None), from the next batch.

    RX answers with the same kind, ``reset`` listing the alphas whose adapter it forgot.
    """

    alpha: int | None = None
    reset: list[int] | None = None

    def encode(self) -> bytes:
        return _pack({"v": PROTOCOL, "kind": KIND_ADAPT_RESET, **vars(self)})

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> AdaptReset:
        alpha = _get(obj, "alpha", int, optional=True)
        if alpha is not None and not 1 <= alpha <= 0xFFFF:
            raise EnvelopeError(f"field 'alpha'={alpha} outside [1, 65535]")
        reset = _get(obj, "reset", list, optional=True)
        if reset is not None and not all(isinstance(a, int) and not isinstance(a, bool) for a in reset):
            raise EnvelopeError("field 'reset' must be a list of alphas")
        return cls(alpha=alpha, reset=reset)


@dataclass(frozen=True)
class Recall:
    """TX to RX: the report of batch ``batch_id`` of TX's earlier run ``run``, sent at ``t_a_ns``.

    A restarted TX asks this for each batch its journal holds unacknowledged. RX answers
    with the ``Report`` it cached (its ``run`` set), or an ``ErrorReply`` ``report_unknown``
    carrying ``run`` when it holds none (never received, evicted, or RX restarted).
    """

    run: str
    batch_id: int
    t_a_ns: int

    def encode(self) -> bytes:
        return _pack({"v": PROTOCOL, "kind": KIND_RECALL, **vars(self)})

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> Recall:
        return cls(run=_required_run(obj), batch_id=_count(obj, "batch_id"), t_a_ns=_count(obj, "t_a_ns"))


Reply = Hello | Report | ErrorReply | ClockReply | AirReady | AdaptReset


def decode_reply(frame: bytes | memoryview) -> Reply:
    """Decode a frame RX sent back to TX into its typed message; ``EnvelopeError`` otherwise."""
    obj = unpack(frame, MAX_REPLY_BYTES)
    kind = obj.get("kind")
    if kind == KIND_CLOCK_REPLY:
        return ClockReply.from_dict(clock_body(obj))  # BadSyncMessage is an EnvelopeError
    if kind == KIND_AIR_READY:
        return AirReady.decode(obj)
    if kind == KIND_REPORT:
        return Report.decode(obj)
    if kind == KIND_ERROR:
        return ErrorReply.decode(obj)
    if kind == KIND_HELLO:
        return Hello.decode(obj)
    if kind == KIND_ADAPT_RESET:
        return AdaptReset.decode(obj)
    raise EnvelopeError(f"unexpected reply kind {kind!r}")
