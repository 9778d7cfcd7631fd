"""Property tests: whatever bytes arrive, every decoder returns a value or raises a typed error.

Hypothesis draws both raw garbage and near-valid inputs (a well-formed payload or frame with
fields overwritten), so the checks deep inside the parsers are reached too. Seeded through
Hypothesis's database-free derandomised profile, so CI runs are reproducible.
"""

from __future__ import annotations

import struct

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import EnvelopeError, PayloadError, SemalignError
from common.wire import messages
from common.wire import payload as wire

PROFILE = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
MAX_ALPHA, CLASSES = 64, 10


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """A well-formed payload, then maybe some header fields or bytes overwritten."""
    alpha = draw(st.integers(1, 8))
    t = draw(st.integers(0, 4))
    n = draw(st.integers(0 if t else 1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    value_type = draw(st.sampled_from([wire.ValueType.FLOAT32, wire.ValueType.FLOAT16]))
    buf = bytearray(wire.build(rng.normal(size=(t, alpha)), rng.normal(size=(n, alpha)),
                               rng.integers(0, CLASSES, n), value_type))
    for offset, value in draw(st.lists(st.tuples(st.integers(0, max(0, len(buf) - 1)), st.integers(0, 255)),
                                       max_size=4)):
        if offset < len(buf):
            buf[offset] = value
    if draw(st.booleans()):
        struct.pack_into("<HHH", buf, 2, *draw(st.tuples(*[st.integers(0, 0xFFFF)] * 3)))
    cut = draw(st.integers(0, len(buf)))
    return bytes(buf[:cut] if draw(st.booleans()) else buf)


@PROFILE
@given(st.one_of(st.binary(max_size=256), payloads()))
def test_parse_returns_a_payload_or_a_payload_error(buf: bytes) -> None:
    try:
        parsed = wire.parse(buf, max_alpha=MAX_ALPHA, num_classes=CLASSES)
    except PayloadError:
        return
    h = parsed.header
    assert 1 <= h.alpha <= MAX_ALPHA and h.t + h.n >= 1 and len(buf) == h.size
    assert parsed.values.shape == (h.t + h.n, h.alpha) and np.isfinite(parsed.values).all()
    assert parsed.train_labels.shape == (h.n,) and (parsed.train_labels < CLASSES).all()


@PROFILE
@given(payloads(), st.integers(0, 2**32 - 1),
       st.tuples(st.integers(1, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), st.booleans())
def test_parse_partial_returns_whole_vectors_or_a_payload_error(
        buf: bytes, seed: int, announced: tuple[int, int, int], honest: bool) -> None:
    valid = np.random.default_rng(seed).random(len(buf)) < 0.9
    try:
        sent = wire.parse_header(buf) if honest else wire.Header(1, wire.ValueType.FLOAT32, *announced)
    except PayloadError:
        sent = wire.Header(1, wire.ValueType.FLOAT32, *announced)
    if sent.size > 1 << 20:
        return  # the receiver refuses such announcements before it would build a mask
    try:
        partial = wire.parse_partial(buf, valid, sent, max_alpha=MAX_ALPHA, num_classes=CLASSES)
    except PayloadError:
        return
    kept = partial.payload.header
    assert kept.t + kept.n + partial.vectors_lost == sent.t + sent.n
    assert partial.test_index.shape == (kept.t,) and np.isfinite(partial.payload.values).all()


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                        st.text(max_size=20), st.binary(max_size=20))
maps = st.dictionaries(st.text(max_size=12), st.recursive(json_leaves, lambda c: st.lists(c, max_size=3)
                                                          | st.dictionaries(st.text(max_size=5), c, max_size=3),
                                                          max_leaves=8), max_size=8)
KINDS = [messages.KIND_HELLO, messages.KIND_BATCH, messages.KIND_REPORT, messages.KIND_ERROR,
         messages.KIND_CLOCK_PROBE, messages.KIND_CLOCK_REPLY, messages.KIND_AIR_READY, "other"]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Garbage, or a msgpack map with v = 1, a known kind and arbitrary fields."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    body = draw(maps)
    body.update({"v": draw(st.sampled_from([1, 1, 1, 2])), "kind": draw(st.sampled_from(KINDS))})
    out: bytes = msgpack.packb(body, use_bin_type=True)
    return out


@PROFILE
@given(frames())
def test_decode_reply_returns_a_message_or_an_envelope_error(frame: bytes) -> None:
    try:
        reply = messages.decode_reply(frame)
    except EnvelopeError:
        return
    assert isinstance(reply, messages.Reply)  # type: ignore[arg-type]


@PROFILE
@given(frames())
def test_envelope_decoder_returns_an_envelope_or_a_typed_error(frame: bytes) -> None:
    try:
        env = messages.Envelope.decode(messages.unpack(frame))
        size = env.payload_size  # what RX checks before allocating
    except SemalignError:
        return
    assert 1 <= env.alpha <= 0xFFFF and 0 <= env.t <= 0xFFFF and 0 <= env.n <= 0xFFFF and size >= 8
