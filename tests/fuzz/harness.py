"""The fuzz target shared by the atheris run (``make fuzz``) and the corpus regression test.

One input drives one of RX's and TX's untrusted-input paths, chosen by its first byte:

    0  payload.parse(rest)
    1  payload.parse_partial(rest, mask from the next byte, header announced by the payload)
    2  messages.decode_reply(rest)                           (TX reading RX's replies)
    3  ControlRequest.decode(rest)                           (TX's control socket)
    4  BatchHandler.handle(frames)  rest = u16 length, frame 0, frame 1   (RX, end to end)

Every outcome must be a value or a ``SemalignError``; anything else is a crash. In target 4
the handler itself must never raise, and its reply must decode.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np

from common.errors import InternalError, PayloadError, SemalignError
from common.wire import messages
from common.wire import payload as wire
from tx.control import ControlRequest

MAX_ALPHA, CLASSES = 64, 10
#: Largest announced payload target 1 builds a mask for (RX refuses larger ones before this).
MAX_PARTIAL = 1 << 20


def make_handler(bundle: Any) -> Any:
    """RX's ``BatchHandler`` on ``bundle`` with every bearer RX opens without a radio; no fine-tuning."""
    from common.ml.adapt import AdaptConfig, AdaptMode
    from common.timesync import SyncState
    from common.transport.base import BearerSettings, open_receivers
    from rx.handler import BatchHandler
    from rx.pipeline import Receiver

    bearers = open_receivers(BearerSettings(max_payload_bytes=1 << 20))
    return BatchHandler(bundle, Receiver(bundle, AdaptConfig(mode=AdaptMode.NONE)), bearers,
                        lambda: SyncState.unsynchronised("fuzz", read_at_ns=0), max_message_bytes=1 << 20)


def one_input(data: bytes, handler: Any = None) -> None:
    if not data:
        return
    target, rest = data[0] % 5, data[1:]
    try:
        if target == 0:
            wire.parse(rest, max_alpha=MAX_ALPHA, num_classes=CLASSES)
        elif target == 1:
            if not rest:
                return
            header = wire.parse_header(rest[1:])
            if header.size > MAX_PARTIAL:
                return
            body = rest[1:]
            valid = np.random.default_rng(rest[0]).random(len(body)) < 0.8
            wire.parse_partial(body, valid, header, max_alpha=MAX_ALPHA, num_classes=CLASSES)
        elif target == 2:
            messages.decode_reply(rest)
        elif target == 3:
            ControlRequest.decode(rest)
        elif handler is not None:
            _handle(handler, rest)
    except PayloadError:
        return
    except SemalignError:
        if target == 4:
            raise  # the handler must turn every error into a reply
        return


#: Stands for the handler's bundle hash in a seed's envelope (same length: a byte-for-byte swap),
#: so seeds reach the checks behind the bundle comparison whichever bundle the run holds.
BUNDLE_PLACEHOLDER = b"@BUNDLE@" * 8


def _handle(handler: Any, rest: bytes) -> None:
    rest = rest.replace(BUNDLE_PLACEHOLDER, handler.bundle.hash.encode())
    if len(rest) < 2:
        frames = [memoryview(rest)]
    else:
        (cut,) = struct.unpack_from("<H", rest)
        body = rest[2:]
        frames = [memoryview(body[:cut]), memoryview(body[cut:])] if cut < len(body) else [memoryview(body)]
    handled = handler.handle(frames)
    reply = messages.decode_reply(handled.reply)
    # A reply is not enough: internal_error is a bug of ours answered politely.
    if isinstance(reply, messages.ErrorReply) and reply.code == InternalError.code:
        raise AssertionError(f"internal error on a fuzzed input: {reply.message}")


def handler_input(envelope: bytes, frame: bytes) -> bytes:
    """Encode an input for target 4 (used to write the corpus's regression seeds)."""
    return bytes([4]) + struct.pack("<H", len(envelope)) + envelope + frame


def _envelope(**fields: Any) -> bytes:
    base = {"batch_id": 7, "attempt": 0, "modulation": "64qam", "b_max": 30000, "alpha": 30,
            "bundle": BUNDLE_PLACEHOLDER.decode(), "t_a_ns": 1, "t": 0, "n": 0}
    return messages.Envelope(**{**base, **fields}).encode()


def regression_seeds() -> dict[str, bytes]:
    """The crashers found before (kept as seeds, each must now be answered) and two valid inputs."""
    header_only = struct.pack("<BBHHH", wire.MAGIC, (wire.VERSION << 4) | 1, 30, 0, 0)
    good = wire.build(np.ones((2, 3)), np.ones((2, 3)), np.array([1, 2]))
    return {
        "crash-parse-header-only": bytes([0]) + header_only,
        "crash-partial-header-only": bytes([1, 0]) + header_only,
        "crash-rx-header-only": handler_input(_envelope(), header_only),
        "crash-rx-sim-65535": handler_input(_envelope(batch_id=8, transport="sim", alpha=65535, t=65535, n=65535),
                                            bytes(8)),
        "valid-payload": bytes([0]) + good,
        "valid-batch": handler_input(_envelope(batch_id=9, alpha=3, t=2, n=2), good),
        "valid-control": bytes([3]) + ControlRequest("status").encode(),
        "valid-control-rx": bytes([3]) + ControlRequest("set-modulation", "64qam", rx="b").encode(),
        # A restarted TX's recall (nothing cached: answered report_unknown), and one whose run
        # id is longer than any TX makes (refused before any lookup).
        "valid-recall": handler_input(messages.Recall("0f3e715709f9", 7, 1).encode(), b""),
        "recall-long-run": handler_input(msgpack.packb({"v": messages.PROTOCOL, "kind": messages.KIND_RECALL,
                                                        "run": "r" * 4096, "batch_id": 7, "t_a_ns": 1}), b""),
    }
