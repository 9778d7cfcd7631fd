"""Metadata frames: encode/decode round trips and rejection of untrusted garbage."""

from __future__ import annotations

import msgpack
import pytest

from common.errors import EnvelopeError
from common.wire import messages

ENVELOPE = messages.Envelope(
    batch_id=3, attempt=1, modulation="64qam", b_max=375000, alpha=150, bundle="ab" * 32,
    t_a_ns=1_700_000_000_000_000_000, sync={"source": "none"},
)
REPORT = messages.Report(
    batch_id=3, attempt=1, predictions=bytes([1, 2, 3]), n_test=3, n_train=10, alpha=150, adapt="lora",
    t_b_ns=1_700_000_000_100_000_000, latency_comm_s=0.1, latency_finetune_s=0.2,
    latency_classify_s=0.01, latency_e2e_s=0.31, train_loss=0.25, snr_db=21.5,
)


def test_envelope_round_trip() -> None:
    assert messages.Envelope.decode(messages.unpack(ENVELOPE.encode())) == ENVELOPE


@pytest.mark.parametrize("msg", [REPORT, messages.ErrorReply("bad_magic", "x", 4), messages.Hello("h", "rx")])
def test_reply_round_trip(msg: object) -> None:
    assert messages.decode_reply(msg.encode()) == msg  # type: ignore[attr-defined]


def _envelope_with(**changes: object) -> bytes:
    obj = messages.unpack(ENVELOPE.encode())
    obj.update(changes)
    return msgpack.packb({k: v for k, v in obj.items() if v is not ...}, use_bin_type=True)


BAD = [
    ("not msgpack", b"\xc1\xc1\xc1"),
    ("not a map", msgpack.packb([1, 2, 3])),
    ("wrong version", _envelope_with(v=9)),
    ("missing field", _envelope_with(alpha=...)),
    ("string batch id", _envelope_with(batch_id="3")),
    ("bool as count", _envelope_with(b_max=True)),
    ("negative batch", _envelope_with(batch_id=-1)),
    ("alpha zero", _envelope_with(alpha=0)),
    ("oversize", b"\x00" * (messages.MAX_META_BYTES + 1)),
]


@pytest.mark.parametrize(("name", "frame"), BAD, ids=[b[0] for b in BAD])
def test_bad_envelope_rejected(name: str, frame: bytes) -> None:
    with pytest.raises(EnvelopeError):
        messages.Envelope.decode(messages.unpack(frame))


def test_report_predictions_must_match_count() -> None:
    obj = messages.unpack(REPORT.encode())
    obj["n_test"] = 4
    with pytest.raises(EnvelopeError, match="3 predictions for 4"):
        messages.Report.decode(obj)


def test_recall_and_the_run_of_reports_and_errors_round_trip() -> None:
    recall = messages.Recall("0f3e715709f9", 12, 1_700_000_000_000_000_000)
    assert messages.Recall.decode(messages.unpack(recall.encode())) == recall
    assert messages.unpack(recall.encode())["kind"] == messages.KIND_RECALL
    for msg in (messages.Report(**{**vars(REPORT), "run": "0f3e715709f9"}),
                messages.ErrorReply(messages.RECALL_UNKNOWN, "none here", 12, run="0f3e715709f9")):
        assert messages.decode_reply(msg.encode()) == msg


@pytest.mark.parametrize(("name", "changes"), [
    ("no run", {"run": ...}),
    ("empty run", {"run": ""}),
    ("long run", {"run": "r" * (messages.MAX_RUN_CHARS + 1)}),
    ("run not a string", {"run": 12}),
    ("negative batch", {"batch_id": -1}),
    ("bool batch", {"batch_id": True}),
    ("no t_a_ns", {"t_a_ns": ...}),
])
def test_bad_recall_rejected(name: str, changes: dict[str, object]) -> None:
    obj = messages.unpack(messages.Recall("r", 1, 2).encode())
    obj.update(changes)
    frame = msgpack.packb({k: v for k, v in obj.items() if v is not ...}, use_bin_type=True)
    with pytest.raises(EnvelopeError):
        messages.Recall.decode(messages.unpack(frame))


def test_a_long_run_is_refused_in_every_message_that_carries_one() -> None:
    long = "r" * (messages.MAX_RUN_CHARS + 1)
    for msg in (messages.Report(**{**vars(REPORT), "run": long}), messages.ErrorReply("x", "y", 1, run=long)):
        with pytest.raises(EnvelopeError, match="'run'"):
            messages.decode_reply(msg.encode())
    with pytest.raises(EnvelopeError, match="'run'"):
        messages.Envelope.decode(messages.unpack(ENVELOPE.replace(run=long).encode()))
