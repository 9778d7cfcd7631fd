"""RX's answer to one message: hello, clock probe or batch in, one reply frame out.

A batch goes envelope -> bearer (payload bytes, validity mask, PHY report) -> parse ->
``Receiver`` (reconstruct, fine-tune, classify) -> ``Report``. Every message is
untrusted: a malformed one gets a typed ``ErrorReply`` and a counter, never an exception.
The daemon and ``semalign bench paper`` both run batches through ``BatchHandler``.
"""

from __future__ import annotations

import collections
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.clock import NS_PER_S, monotonic_ns, realtime_ns
from common.errors import (
    AlphaOutOfRange,
    BundleMismatch,
    EmptyPayload,
    EnvelopeError,
    InternalError,
    OversizeMessage,
    PayloadError,
    ProtocolError,
    RadioError,
    SemalignError,
)
from common.log import get_logger
from common.ml.bundle import Bundle
from common.timesync import (
    ClockProbe,
    ClockReply,
    CommLatency,
    OffsetEstimate,
    SyncState,
    comm_latency_record,
    comm_metrics,
)
from common.transport.base import Bearer, Notify, Received, Transport
from common.wire import messages
from common.wire import payload as wire
from rx.pipeline import Outcome, Receiver

log = get_logger("semalign.rx")

#: Reports kept, by (TX run, batch id, A), for answering resent batches without recomputing
#: them and a restarted TX's ``recall`` of its last run's unacknowledged ones.
REPORT_CACHE = 64
#: Batch ids remembered with the TX run they were answered for (to notice a restarted TX reusing one).
ANSWERED_IDS = 100_000
_NEVER = object()


#: Longest error text put in a reply: a message may quote what it got (a long transport
#: name, say), and the reply must stay far under the reply limit whatever came in.
MAX_ERROR_TEXT = 1024


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."


def _nobody(frame: bytes) -> None:
    raise RadioError("this message has no sender to notify")


@dataclass(frozen=True)
class Handled:
    """The reply to send back, and the metrics row when a batch was processed just now."""

    reply: bytes
    record: dict[str, Any] | None = None
    #: The batch's comm latency in words, for the log line.
    comm: str | None = None
    #: Why the message was refused (its ``code`` went back in the error reply).
    error: SemalignError | None = None
    #: A resent batch answered from the report cache.
    duplicate: bool = False
    #: A decimated sample of the last radio frame's equalised symbols (sim and pluto transports).
    constellation: np.ndarray | None = None


class BatchHandler:
    def __init__(self, bundle: Bundle, receiver: Receiver, bearers: Mapping[Transport, Bearer],
                 sync: Callable[[], SyncState], *, max_message_bytes: int,
                 max_batch_vectors: int = 2 * wire.MAX_COUNT) -> None:
        self.bundle = bundle
        self.receiver = receiver
        self.bearers = bearers
        self.sync = sync
        self.max_message_bytes = max_message_bytes
        #: Most vectors (t + n) one batch may carry: bounds RX's work per batch (rx.yaml max_batch_vectors).
        self.max_batch_vectors = max_batch_vectors
        self.counters: Counter[str] = Counter()
        self._reports: collections.OrderedDict[tuple[str | None, int, int], bytes] = collections.OrderedDict()
        #: The TX run that each recent batch id was answered for: a restarted TX reusing an id is noted.
        self._answered: collections.OrderedDict[int, str | None] = collections.OrderedDict()

    def handle(self, frames: Sequence[memoryview], *, received_ns: int = 0, notify: Notify = _nobody) -> Handled:
        """Answer one message; never raises for bad input."""
        try:
            return self._handle(frames, received_ns, notify)
        except ProtocolError as exc:
            self.counters[exc.code] += 1
            log.warning("message_rejected", error=exc.code, detail=_short(exc), batch=exc.batch_id)
            return Handled(messages.ErrorReply(exc.code, _short(exc), exc.batch_id).encode(), error=exc)
        except (BundleMismatch, RadioError) as exc:
            self.counters[exc.code] += 1
            log.error(exc.code, detail=_short(exc), batch=exc.batch_id)
            return Handled(messages.ErrorReply(exc.code, _short(exc), exc.batch_id).encode(), error=exc)
        except Exception as exc:  # a bug of ours met this message: it costs the message only
            code = InternalError.code
            batch_id = exc.batch_id if isinstance(exc, SemalignError) else None
            self.counters[code] += 1
            log.error(code, detail=str(exc), batch=batch_id, traceback=traceback.format_exc())
            # The reply names no internals: the traceback is for this host's log only.
            internal = exc if isinstance(exc, InternalError) else InternalError(f"{type(exc).__name__}: {exc}")
            return Handled(messages.ErrorReply(code, "the receiver failed on this message", batch_id).encode(),
                           error=internal)

    def _handle(self, frames: Sequence[memoryview], received_ns: int, notify: Notify) -> Handled:
        body = sum(len(f) for f in frames[1:])
        if body > self.max_message_bytes or (frames and len(frames[0]) > messages.MAX_META_BYTES):
            raise OversizeMessage(
                f"message of {body} payload bytes exceeds the limit of {self.max_message_bytes} "
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
            return Handled(messages.Hello(bundle=self.bundle.hash, role="rx").encode())
        if kind == messages.KIND_CLOCK_PROBE:
            probe = ClockProbe.from_dict(messages.clock_body(meta))
            reply = ClockReply.answer(probe, received_ns or realtime_ns(), realtime_ns(), self.sync())
            return Handled(messages.encode_clock(messages.KIND_CLOCK_REPLY, reply.to_dict()))
        if kind == messages.KIND_RECALL:
            if len(frames) != 1:
                raise EnvelopeError(f"a recall is 1 frame, got {len(frames)}")
            return self._recall(messages.Recall.decode(meta))
        if kind == messages.KIND_ADAPT_RESET:
            request = messages.AdaptReset.decode(meta)
            alphas = self.receiver.reset_alignment(request.alpha)
            self.counters["adapt_resets"] += 1
            log.info("adapt_reset", alpha=request.alpha, reset=alphas)
            return Handled(messages.AdaptReset(alpha=request.alpha, reset=alphas).encode())
        if kind != messages.KIND_BATCH:
            raise EnvelopeError(f"unexpected message kind {kind!r}")
        env = messages.Envelope.decode(meta)
        try:
            return self._batch(env, frames, notify)
        except (PayloadError, OversizeMessage, BundleMismatch, RadioError) as exc:
            exc.batch_id = env.batch_id
            raise
        except SemalignError:
            raise
        except Exception as exc:
            internal = InternalError(f"{type(exc).__name__}: {exc}")
            internal.batch_id = env.batch_id
            raise internal from exc

    def _batch(self, env: messages.Envelope, frames: Sequence[memoryview], notify: Notify) -> Handled:
        if env.bundle != self.bundle.hash:
            raise BundleMismatch(
                f"batch {env.batch_id} was encoded with bundle {env.bundle[:12]}, "
                f"this receiver holds {self.bundle.hash[:12]}"
            )
        key = (env.run, env.batch_id, env.t_a_ns)
        cached = self._reports.get(key)
        if cached is not None:
            self.counters["duplicate"] += 1
            log.info("duplicate_batch", batch=env.batch_id, attempt=env.attempt)
            return Handled(cached, duplicate=True)
        if len(frames) != 2:
            raise EnvelopeError(f"batch {env.batch_id} has no payload frame")
        tx_sync = (SyncState.from_dict(env.sync) if env.sync is not None
                   else SyncState.unsynchronised("TX sent no sync state", read_at_ns=env.t_a_ns))
        offset = OffsetEstimate.from_dict(env.offset) if env.offset is not None else None
        sent = env.header
        # Every announced count is checked before a bearer may allocate by it.
        if sent.size > self.max_message_bytes:
            raise OversizeMessage(f"batch {env.batch_id} announces {sent.size} payload bytes, "
                                  f"limit {self.max_message_bytes}")
        if not 1 <= sent.alpha <= self.bundle.dims:
            raise AlphaOutOfRange(f"alpha={sent.alpha}, this receiver's bundle allows 1..{self.bundle.dims}")
        if sent.t + sent.n == 0:
            raise EmptyPayload(f"batch {env.batch_id} announces t = n = 0")
        if sent.t + sent.n > self.max_batch_vectors:
            raise OversizeMessage(f"batch {env.batch_id} announces t + n = {sent.t} + {sent.n} vectors, this "
                                  f"receiver processes at most {self.max_batch_vectors} per batch "
                                  "(rx.yaml max_batch_vectors)")
        bearer = self._bearer(env)
        received = bearer.receive(env, frames[1], notify)
        t0 = monotonic_ns()
        parsed, test_index, vectors_lost = self._parse(received, sent)
        parse_s = (monotonic_ns() - t0) / NS_PER_S
        if received.frames_lost:
            self.counters["frames_lost"] += received.frames_lost
            log.warning("frames_lost", batch=env.batch_id, frames_lost=received.frames_lost,
                        frames_total=None if received.phy is None else received.phy.frames_total,
                        vectors_lost=vectors_lost, snr_db=received.snr_db)
        outcome = self.receiver.process_parsed(parsed, seed=env.batch_id, parse_s=parse_s, batch=env.batch_id)
        comm = comm_latency_record(env.t_a_ns, outcome.t_b_ns, tx_sync, self.sync(), offset)
        report = _report(env, outcome, test_index, received, vectors_lost, comm, self.receiver.adapt.mode.value)
        encoded = report.encode()
        self._reports[key] = encoded
        while len(self._reports) > REPORT_CACHE:
            self._reports.popitem(last=False)
        self._note_answered(env)
        self.counters["batches"] += 1
        return Handled(encoded, _record(env, report, received, outcome, comm), comm.describe(),
                       constellation=None if received.phy is None else received.phy.constellation)

    def _recall(self, recall: messages.Recall) -> Handled:
        """A restarted TX asks for a report its earlier run never received: answered from the
        cache (nothing recomputed, nothing logged as a batch), or ``report_unknown``."""
        cached = self._reports.get((recall.run, recall.batch_id, recall.t_a_ns))
        if cached is not None:
            self.counters["recalled"] += 1
            log.info("report_recalled", batch=recall.batch_id, tx_run=recall.run)
            return Handled(cached)
        self.counters["recall_unknown"] += 1
        log.warning("recall_unknown", batch=recall.batch_id, tx_run=recall.run)
        return Handled(messages.ErrorReply(
            messages.RECALL_UNKNOWN, f"no report of batch {recall.batch_id} of TX run {recall.run} here "
            "(never received, evicted from the cache, or this receiver restarted since)",
            recall.batch_id, run=recall.run).encode())

    def _note_answered(self, env: messages.Envelope) -> None:
        """Remember which TX run batch ``env.batch_id`` was answered for; say so when a new run reuses it."""
        before = self._answered.pop(env.batch_id, _NEVER)
        if before is not _NEVER and before != env.run:
            self.counters["batch_id_reused"] += 1
            log.warning("batch_id_reused", batch=env.batch_id, tx_run=env.run, earlier_tx_run=before,
                        detail="a restarted TX numbers its batches from 0 again; metrics rows differ by tx_run")
        self._answered[env.batch_id] = env.run
        while len(self._answered) > ANSWERED_IDS:
            self._answered.popitem(last=False)

    def _bearer(self, env: messages.Envelope) -> Bearer:
        try:
            return self.bearers[Transport(env.transport)]
        except ValueError:
            raise EnvelopeError(f"unknown transport {env.transport!r}: expected one of "
                                f"{', '.join(t.value for t in Transport)}") from None
        except KeyError:
            raise EnvelopeError(f"batch {env.batch_id} comes by {env.transport} but this receiver has no "
                                "bearer for it (over the air: add a pluto section to its config)") from None

    def _parse(self, received: Received, sent: wire.Header) -> tuple[wire.Payload, np.ndarray, int]:
        """The vectors to use, the test indices they carry, and how many vectors were lost."""
        if received.valid is None:
            parsed = self.receiver.parse(received.payload)
            if parsed.header != sent:
                raise PayloadError(f"payload header {parsed.header} disagrees with the envelope's {sent}")
            return parsed, np.arange(sent.t), 0
        partial = wire.parse_partial(received.payload, received.valid, sent, max_alpha=self.bundle.dims,
                                     num_classes=self.bundle.meta.num_classes)
        return partial.payload, partial.test_index, partial.vectors_lost



def _report(env: messages.Envelope, outcome: Outcome, test_index: np.ndarray, received: Received,
            vectors_lost: int, comm: CommLatency, adapt: str) -> messages.Report:
    """The reply to a processed batch; a test vector that did not arrive has no prediction."""
    predictions = np.full(env.t, wire.NO_LABEL, dtype=np.uint8)
    predictions[test_index] = outcome.predictions
    comm_s = comm.value_ns / NS_PER_S
    c, d = outcome.fit.seconds, outcome.classify_s
    return messages.Report(
        batch_id=env.batch_id,
        attempt=env.attempt,
        predictions=predictions.tobytes(),
        n_test=env.t,
        n_train=outcome.header.n,
        alpha=outcome.header.alpha,
        adapt=adapt,
        t_b_ns=outcome.t_b_ns,
        latency_comm_s=comm_s,
        latency_finetune_s=c,
        latency_classify_s=d,
        latency_e2e_s=comm_s + c + d,
        parse_s=outcome.parse_s,
        reconstruct_s=outcome.reconstruct_s,
        train_loss=outcome.fit.final_loss,
        vectors_lost=vectors_lost,
        frames_lost=received.frames_lost,
        snr_db=received.snr_db,
        comm=comm.to_dict(),
        sync=comm.rx.to_dict(),
        extra=alignment(outcome),
        run=env.run,
    )


def alignment(outcome: Outcome) -> dict[str, Any]:
    """The alignment policy, its gate figure and what it did, for the report and metrics rows."""
    return {"policy": outcome.policy, "gate": outcome.fit.gate, "align_action": outcome.fit.action,
            "bank_entry": outcome.fit.bank_entry, "holdout_gain": outcome.fit.holdout_gain}


def _record(env: messages.Envelope, report: messages.Report, received: Received, outcome: Outcome,
            comm: CommLatency) -> dict[str, Any]:
    """RX's metrics row of a processed batch."""
    return {
        "batch": env.batch_id,
        "attempt": env.attempt,
        "tx_run": env.run,
        "modulation": env.modulation,
        "alpha": env.alpha,
        "b_max": env.b_max,
        "n_test": report.n_test,
        "n_train": report.n_train,
        "payload_bytes": env.payload_size,
        "transport": env.transport,
        "vectors_lost": report.vectors_lost,
        "frames_lost": report.frames_lost,
        "frames_total": None if received.phy is None else received.phy.frames_total,
        "snr_db": report.snr_db,
        # RX never sees test labels; TX scores the predictions.
        "accuracy": None,
        **comm_metrics(comm),
        "latency_finetune_s": report.latency_finetune_s,
        "latency_classify_s": report.latency_classify_s,
        "latency_e2e_s": report.latency_e2e_s,
        "parse_s": outcome.parse_s,
        "reconstruct_s": outcome.reconstruct_s,
        # Parts of C and D: the gate's scoring, first-layer folds, images rebuilt for a fit.
        "gate_s": outcome.fit.gate_s,
        "fold_s": outcome.fold_s,
        "images_s": outcome.images_s,
        "train_loss": outcome.fit.final_loss,
        "adapt": report.adapt,
        **alignment(outcome),
        "t_a_ns": env.t_a_ns,
        "t_b_ns": outcome.t_b_ns,
        "rx_done_ns": realtime_ns(),
    }
