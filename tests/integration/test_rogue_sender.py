"""A rogue sender's garbage gets typed error replies and never stops RX serving good batches."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from common.clock import realtime_ns
from common.data.spec import load_dataset
from common.ml.bundle import Bundle
from common.runtime import free_tcp_port
from common.timesync import ClockProbe, ClockReply
from common.wire import messages
from common.wire import payload as wire
from tests.procs import Daemon, metrics

pytestmark = pytest.mark.slow

MAX_MESSAGE = 200_000
T, N = 20, 40


def good_batch(bundle: Bundle, batch_id: int, alpha: int = 30) -> tuple[bytes, bytes]:
    ds = load_dataset("digits")
    coeffs = bundle.codec.encode(np.concatenate([ds.test.x[:T], ds.pool.x[:N]]), alpha)
    body = wire.build(coeffs[:T], coeffs[T:], ds.pool.y[:N])
    env = messages.Envelope(batch_id=batch_id, attempt=0, modulation="64qam", b_max=len(body),
                            alpha=alpha, bundle=bundle.hash, t_a_ns=realtime_ns(), t=T, n=N)
    return env.encode(), body


def with_byte(buf: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(buf)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def cases(bundle: Bundle) -> list[tuple[str, list[bytes], str]]:
    env, body = good_batch(bundle, 100)
    other_bundle = dataclasses.replace(messages.Envelope.decode(messages.unpack(env)), bundle="f" * 64)
    wrong_counts = dataclasses.replace(messages.Envelope.decode(messages.unpack(env)), n=N + 1)
    bad_sync = {**messages.unpack(env), "sync": {"source": "gps+pps"}}
    return [
        ("envelope disagrees with header", [wrong_counts.encode(), body], "payload"),
        ("over the air without a radio",
         [dataclasses.replace(wrong_counts, n=N, transport="pluto", samples=1000).encode(), b""], "envelope"),
        ("sim burst of odd size", [dataclasses.replace(wrong_counts, n=N, transport="sim").encode(), b"abc"],
         "size_mismatch"),
        ("malformed sync state", [msgpack.packb(bad_sync), body], "bad_sync"),
        ("malformed clock probe", [msgpack.packb({"v": 1, "kind": "clock_probe", "seq": -1})], "bad_sync"),
        ("random bytes", [b"\x93\xff\x00garbage"], "envelope"),
        ("three frames", [env, body, b"x"], "envelope"),
        ("msgpack list", [msgpack.packb([1, 2])], "envelope"),
        ("unknown kind", [msgpack.packb({"v": 1, "kind": "launch"})], "envelope"),
        ("batch without payload", [env], "envelope"),
        ("bad magic", [env, with_byte(body, 0, "<B", 0)], "bad_magic"),
        ("bad version", [env, with_byte(body, 1, "<B", 0x31)], "bad_version"),
        ("bad value type", [env, with_byte(body, 1, "<B", 0x1F)], "bad_value_type"),
        ("truncated", [env, body[:-3]], "size_mismatch"),
        ("alpha beyond bundle", [env, with_byte(body, 2, "<H", 999)], "alpha_out_of_range"),
        ("label out of range", [env, with_byte(body, 8 + T * (4 + 4 * 30) + 1, "<B", 12)], "label_out_of_range"),
        ("test label leaked", [env, with_byte(body, 9, "<B", 3)], "label_out_of_range"),
        ("NaN value", [env, body[:12] + struct.pack("<f", float("nan")) + body[16:]], "non_finite"),
        ("oversize", [env, b"\0" * (MAX_MESSAGE + 1)], "oversize"),
        ("other bundle", [other_bundle.encode(), body], "bundle_mismatch"),
    ]


def test_garbage_is_rejected_and_good_batches_still_served(digits_bundle_dir: Path, digits_bundle: Bundle,
                                                          tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--bind", endpoint,
                       "--max-message-bytes", str(MAX_MESSAGE), "--metrics-out", str(tmp_path / "rx.jsonl")],
                tmp_path / "rx.log")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def exchange(frames: list[bytes], timeout_ms: int = 60_000) -> object:
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms), f"no reply from RX; log:\n{rx.log_text()[-2000:]}"
        (frame,) = sock.recv_multipart()
        return messages.decode_reply(frame)

    try:
        for name, frames, code in cases(digits_bundle):
            reply = exchange(frames)
            assert isinstance(reply, messages.ErrorReply), name
            assert reply.code == code, (name, reply)
        for batch_id in (1, 2):
            reply = exchange(list(good_batch(digits_bundle, batch_id)))
            assert isinstance(reply, messages.Report)
            assert (reply.batch_id, reply.n_test, reply.n_train, reply.alpha) == (batch_id, T, N, 30)
        probe = ClockProbe(seq=9, t1_ns=realtime_ns())
        answer = exchange([messages.encode_clock(messages.KIND_CLOCK_PROBE, probe.to_dict())])
        assert isinstance(answer, ClockReply)
        clock = answer
        assert (clock.seq, clock.t1_ns) == (9, probe.t1_ns) and probe.t1_ns <= clock.t2_ns <= clock.t3_ns
        # Far beyond zmq's MAXMSGSIZE backstop: zmq drops the sender's connection before RX
        # allocates anything; another sender is still served.
        sock.send_multipart([b"x", b"\0" * (3 * MAX_MESSAGE + messages.MAX_META_BYTES)])
        assert not sock.poll(1000)
        sock.close(0)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        reply = exchange(list(good_batch(digits_bundle, 3)))
        assert isinstance(reply, messages.Report) and reply.batch_id == 3
        assert rx.proc.poll() is None
    finally:
        sock.close(0)
        ctx.term()
        rx.stop()
    assert [r["batch"] for r in metrics(tmp_path / "rx.jsonl")] == [1, 2, 3]
    log = rx.log_text()
    assert log.count("message_rejected") >= len(cases(digits_bundle)) - 1
    assert '"rx_stopped"' in log
