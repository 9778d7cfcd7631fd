"""The RX daemon: a ROUTER socket that answers each batch with predictions and latencies.

Every message is untrusted: a malformed one gets a typed error reply, a log line and a
counter, and the loop carries on with the next message.
"""

from __future__ import annotations

import collections
from collections import Counter
from typing import Any

import numpy as np
import zmq
from threadpoolctl import threadpool_limits

from common.clock import realtime_ns
from common.config import RxConfig
from common.errors import (
    BundleMismatch,
    EnvelopeError,
    OversizeMessage,
    PayloadError,
    ProtocolError,
    RadioError,
    SizeMismatch,
)
from common.log import get_logger
from common.metrics import MetricsWriter
from common.ml.bundle import Bundle
from common.phy import PhyConfig, PhyResult, demodulate_payload
from common.radio.pluto import PlutoRadio
from common.runtime import StopFlag
from common.timesync import (
    ClockProbe,
    ClockReply,
    OffsetEstimate,
    SyncMonitor,
    SyncState,
    comm_latency_record,
    comm_metrics,
    daemon_sync_config,
    start_monitor_thread,
)
from common.transport.zmq import make_socket
from common.wire import messages
from common.wire import payload as wire
from rx.pipeline import Receiver

log = get_logger("semalign.rx")

#: How long one poll waits before the stop flag is checked again.
POLL_MS = 100
#: Reports kept for answering resent batches without recomputing them.
REPORT_CACHE = 64
#: Extra capture beyond the announced burst (transport pluto): covers the air_ready round
#: trip and TX's buffer set-up, so the burst lies inside the capture.
CAPTURE_MARGIN_S = 0.25
#: Longest burst RX agrees to capture (samples); checked before the capture buffer exists.
MAX_BURST_SAMPLES = 1 << 25


class RxDaemon:
    def __init__(self, config: RxConfig, bundle: Bundle, *, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self.config = config
        self.bundle = bundle
        self.receiver = Receiver(bundle, config.adapt, threads=config.threads)
        self.counters: Counter[str] = Counter()
        self._reports: collections.OrderedDict[tuple[int, int], bytes] = collections.OrderedDict()
        self._ctx = ctx or zmq.Context.instance()
        self._max_msg = config.max_message_bytes
        # The zmq limit sits above ours so messages between the two get a typed error reply.
        self.sock = make_socket(self._ctx, zmq.ROUTER, max_msg=2 * self._max_msg + messages.MAX_META_BYTES)
        self.sock.bind(config.bind)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.metrics = MetricsWriter(config.metrics_out)
        self.phy = PhyConfig()
        self.radio = PlutoRadio(config.pluto).open() if config.pluto is not None else None
        self._peer: bytes | None = None
        # The demodulator's matched filter and the small reconstruct matmuls gain nothing from
        # BLAS threads on this workload and suffer from contention with torch's.
        threadpool_limits(1)
        self.sync = SyncMonitor(daemon_sync_config(config.gpsd, config.chrony_socket),
                                interval_s=config.sync_interval_s, logger=log)

    def close(self) -> None:
        if self.radio is not None:
            self.radio.close()
        self.sock.close(0)
        self.metrics.close()

    def run(self, stop: StopFlag) -> None:
        warm_s = self.receiver.warm_up()
        self.sync.refresh()
        start_monitor_thread(self.sync, lambda: bool(stop))
        log.info("rx_ready", warm_up_s=round(warm_s, 3), endpoint=self.endpoint, bundle=self.bundle.hash[:12],
                 dataset=self.bundle.meta.dataset, dims=self.bundle.dims,
                 adapt=self.config.adapt.mode.value, threads=self.config.threads)
        while not stop:
            if not self.sock.poll(POLL_MS):
                continue
            frames = self.sock.recv_multipart(copy=False)
            received_ns = realtime_ns()  # t2 of a clock probe
            identity, body = frames[0].bytes, [f.buffer for f in frames[1:]]
            self._peer = identity
            reply = self.handle(body, received_ns=received_ns)
            try:
                self.sock.send_multipart([identity, reply], flags=zmq.NOBLOCK)
            except zmq.Again:
                self.counters["reply_dropped"] += 1
                log.warning("reply_dropped", reason="peer gone or send queue full")
        log.info("rx_stopped", signal=stop.signal, counters=dict(self.counters))

    def handle(self, frames: list[memoryview], *, received_ns: int = 0) -> bytes:
        """Answer one message; never raises for bad input."""
        try:
            return self._handle(frames, received_ns)
        except ProtocolError as exc:
            self.counters[exc.code] += 1
            log.warning("message_rejected", error=exc.code, detail=str(exc), batch=exc.batch_id)
            return messages.ErrorReply(exc.code, str(exc), exc.batch_id).encode()
        except (BundleMismatch, RadioError) as exc:
            self.counters[exc.code] += 1
            log.error(exc.code, detail=str(exc), batch=exc.batch_id)
            return messages.ErrorReply(exc.code, str(exc), exc.batch_id).encode()

    def _handle(self, frames: list[memoryview], received_ns: int) -> bytes:
        body = sum(len(f) for f in frames[1:])
        if body > self._max_msg or (frames and len(frames[0]) > messages.MAX_META_BYTES):
            raise OversizeMessage(
                f"message of {body} payload bytes exceeds the limit of {self._max_msg} "
                f"(or its metadata frame exceeds {messages.MAX_META_BYTES})"
            )
        if not 1 <= len(frames) <= 2:
            raise EnvelopeError(f"expected 1 or 2 frames (envelope[, payload]), got {len(frames)}")
        meta = messages.unpack(frames[0])
        kind = meta.get("kind")
        if kind == messages.KIND_HELLO:
            hello = messages.Hello.decode(meta)
            if hello.bundle != self.bundle.hash:
                log.error("bundle_mismatch", tx_bundle=hello.bundle[:12], rx_bundle=self.bundle.hash[:12])
            return messages.Hello(bundle=self.bundle.hash, role="rx").encode()
        if kind == messages.KIND_CLOCK_PROBE:
            probe = ClockProbe.from_dict(messages.clock_body(meta))
            state = self.sync.current()
            reply = ClockReply.answer(probe, received_ns or realtime_ns(), realtime_ns(), state)
            return messages.encode_clock(messages.KIND_CLOCK_REPLY, reply.to_dict())
        if kind != messages.KIND_BATCH:
            raise EnvelopeError(f"unexpected message kind {kind!r}")
        env = messages.Envelope.decode(meta)
        try:
            return self._batch(env, frames)
        except (PayloadError, BundleMismatch, RadioError) as exc:
            exc.batch_id = env.batch_id
            raise

    def _batch(self, env: messages.Envelope, frames: list[memoryview]) -> bytes:
        if env.bundle != self.bundle.hash:
            raise BundleMismatch(
                f"batch {env.batch_id} was encoded with bundle {env.bundle[:12]}, "
                f"this receiver holds {self.bundle.hash[:12]}"
            )
        key = (env.batch_id, env.t_a_ns)
        cached = self._reports.get(key)
        if cached is not None:
            self.counters["duplicate"] += 1
            log.info("duplicate_batch", batch=env.batch_id, attempt=env.attempt)
            return cached
        if len(frames) != 2:
            raise EnvelopeError(f"batch {env.batch_id} has no payload frame")
        tx_sync = (SyncState.from_dict(env.sync) if env.sync is not None
                   else SyncState.unsynchronised("TX sent no sync state", read_at_ns=env.t_a_ns))
        offset = OffsetEstimate.from_dict(env.offset) if env.offset is not None else None
        try:
            sent = wire.Header(wire.VERSION, wire.ValueType(env.value_type), env.alpha, env.t, env.n)
        except ValueError:
            raise PayloadError(f"unknown value type {env.value_type} in the envelope") from None
        phy: PhyResult | None = None
        frames_lost = 0
        if env.transport == "zmq":
            parsed = self.receiver.parse(frames[1])
            if parsed.header != sent:
                raise PayloadError(f"payload header {parsed.header} disagrees with the envelope's {sent}")
            test_index = np.arange(env.t)
            vectors_lost = 0
        elif env.transport in ("sim", "pluto"):
            samples = self._capture(env) if env.transport == "pluto" else self._samples(frames[1])
            phy, partial = self._demodulate(env, sent, samples)
            parsed, test_index, vectors_lost = partial.payload, partial.test_index, partial.vectors_lost
            # With no frame header decoded the receiver counts the frames the sender must have sent.
            frames_lost = phy.frames_lost if phy.frames_total else -(-sent.size // self.phy.max_frame_payload)
        else:
            raise EnvelopeError(f"unknown transport {env.transport!r}: expected zmq, sim or pluto")
        outcome = self.receiver.process_parsed(parsed, seed=env.batch_id)
        predictions = np.full(env.t, wire.NO_LABEL, dtype=np.uint8)
        predictions[test_index] = outcome.predictions
        comm = comm_latency_record(env.t_a_ns, outcome.t_b_ns, tx_sync, self.sync.current(), offset)
        comm_s = comm.value_ns / 1e9
        c, d = outcome.fit.seconds, outcome.classify_s
        report = messages.Report(
            batch_id=env.batch_id,
            attempt=env.attempt,
            predictions=predictions.tobytes(),
            n_test=env.t,
            n_train=outcome.header.n,
            alpha=outcome.header.alpha,
            adapt=self.config.adapt.mode.value,
            t_b_ns=outcome.t_b_ns,
            latency_comm_s=comm_s,
            latency_finetune_s=c,
            latency_classify_s=d,
            latency_e2e_s=comm_s + c + d,
            parse_s=outcome.parse_s,
            reconstruct_s=outcome.reconstruct_s,
            train_loss=outcome.fit.final_loss,
            vectors_lost=vectors_lost,
            frames_lost=frames_lost,
            snr_db=None if phy is None else phy.snr_db,
            comm=comm.to_dict(),
            sync=comm.rx.to_dict(),
        )
        encoded = report.encode()
        self._reports[key] = encoded
        while len(self._reports) > REPORT_CACHE:
            self._reports.popitem(last=False)
        self.counters["batches"] += 1
        record: dict[str, Any] = {
            "batch": env.batch_id,
            "attempt": env.attempt,
            "modulation": env.modulation,
            "alpha": env.alpha,
            "b_max": env.b_max,
            "n_test": report.n_test,
            "n_train": report.n_train,
            "payload_bytes": sent.size,
            "transport": env.transport,
            "vectors_lost": vectors_lost,
            "frames_lost": report.frames_lost,
            "frames_total": None if phy is None else phy.frames_total,
            "snr_db": report.snr_db,
            # RX never sees test labels; TX scores the predictions.
            "accuracy": None,
            **comm_metrics(comm),
            "latency_finetune_s": c,
            "latency_classify_s": d,
            "latency_e2e_s": report.latency_e2e_s,
            "parse_s": outcome.parse_s,
            "reconstruct_s": outcome.reconstruct_s,
            "train_loss": outcome.fit.final_loss,
            "adapt": report.adapt,
            "t_a_ns": env.t_a_ns,
            "t_b_ns": outcome.t_b_ns,
            "rx_done_ns": realtime_ns(),
        }
        self.metrics.write(record)
        log.info("batch", comm=comm.describe(),
                 **{k: v for k, v in record.items() if k not in ("t_a_ns", "t_b_ns", "rx_done_ns")})
        return encoded

    @staticmethod
    def _samples(frame: memoryview) -> np.ndarray:
        if len(frame) % 8:
            raise SizeMismatch(f"sample frame of {len(frame)} bytes is not a whole number of complex64")
        return np.frombuffer(frame, dtype=np.complex64)

    def _capture(self, env: messages.Envelope) -> np.ndarray:
        """Tell TX the radio listens, then capture the burst plus a margin."""
        if self.radio is None:
            raise EnvelopeError(f"batch {env.batch_id} comes over the air but this receiver has no "
                                "radio (add a pluto section to its config)")
        if not 0 < env.samples <= MAX_BURST_SAMPLES:
            raise SizeMismatch(f"announced burst of {env.samples} samples, expected 1..{MAX_BURST_SAMPLES}")
        if self._peer is not None:
            try:
                self.sock.send_multipart([self._peer, messages.encode_air_ready(env.batch_id, env.attempt)],
                                         flags=zmq.NOBLOCK)
            except zmq.Again:
                # TX is gone: nobody will transmit, and its resend starts the exchange again.
                raise RadioError(f"cannot ask TX to transmit batch {env.batch_id}: peer unreachable") from None
        margin = int(CAPTURE_MARGIN_S * self.radio.config.sample_rate_hz)
        return self.radio.receive(env.samples + margin)

    def _demodulate(self, env: messages.Envelope, sent: wire.Header,
                    samples: np.ndarray) -> tuple[PhyResult, wire.PartialPayload]:
        """Baseband samples -> the vectors that arrived whole; CRC-failed frames never reach the model."""
        phy = demodulate_payload(samples, self.phy, expected_batch_id=env.batch_id)
        if phy.frames_total == 0:  # nothing decodable: every vector is lost
            buf, valid = bytes(sent.size), np.zeros(sent.size, dtype=bool)
        elif len(phy.payload) != sent.size:
            raise SizeMismatch(f"radio frames carry {len(phy.payload)} bytes, the envelope announces {sent.size}")
        else:
            buf, valid = phy.payload, phy.valid
        partial = wire.parse_partial(buf, valid, sent, max_alpha=self.bundle.dims,
                                     num_classes=self.bundle.meta.num_classes)
        if phy.frames_lost:
            self.counters["frames_lost"] += phy.frames_lost
            log.warning("frames_lost", batch=env.batch_id, frames_lost=phy.frames_lost,
                        frames_total=phy.frames_total, vectors_lost=partial.vectors_lost,
                        snr_db=phy.snr_db)
        return phy, partial
