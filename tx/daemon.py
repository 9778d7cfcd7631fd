"""The TX daemon: builds batches, streams them to RX over a DEALER socket, scores the reports.

One thread, one poll loop over the data and control sockets. At most ``max_inflight``
batches are unacknowledged; a batch RX does not acknowledge in time is resent after the
socket is rebuilt (zguide's Lazy Pirate), up to ``max_attempts`` sends.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq

from common.clock import NS_PER_S, Stamp, monotonic_ns, realtime_ns
from common.config import TxConfig
from common.data.datasets import Dataset
from common.errors import BudgetError, ConfigError, EnvelopeError, RadioError, SemalignError
from common.log import get_logger
from common.metrics import MetricsWriter
from common.ml.bundle import Bundle
from common.modulation import Modulation
from common.phy import AmcPolicy, PhyConfig, modulate_payload
from common.radio.pluto import PlutoRadio
from common.runtime import StopFlag
from common.timesync import (
    BadSyncMessage,
    ClockProbe,
    ClockReply,
    CommLatency,
    OffsetEstimate,
    SyncMonitor,
    comm_metrics,
    daemon_sync_config,
    estimate_rx_minus_tx,
    start_monitor_thread,
)
from common.transport.zmq import make_socket
from common.wire import messages
from common.wire import payload as wire
from tx.control import ControlRequest, encode_reply
from tx.plan import LinkPlan, LinkState, make_plan

log = get_logger("semalign.tx")

POLL_MS = 50
#: Resend timeouts grow 1x, 2x, 4x, 4x, ... the configured ack timeout.
MAX_BACKOFF = 4
#: How soon to try again when no RX is connected (nothing was sent, no attempt used).
UNREACHABLE_RETRY_S = 0.25
HELLO_RETRY_S = 1.0
#: Log "rx unreachable" at most this often.
UNREACHABLE_LOG_S = 5.0
#: Clock exchanges kept; the one with the least round-trip delay gives the offset estimate.
CLOCK_EXCHANGES_KEPT = 8
#: Probes sent back to back when RX first answers, so the first batch already has an estimate.
CLOCK_PROBE_BURST = 4
#: How long the first batch waits for that burst to be answered.
CLOCK_FIRST_WAIT_S = 1.0

EXIT_OK = 0
EXIT_FATAL = 2


@dataclass
class Pending:
    """A batch built and not yet acknowledged."""

    envelope: messages.Envelope
    payload: bytes  # what goes on the socket: payload bytes (zmq), baseband samples (sim), b"" (pluto)
    payload_bytes: int
    test_labels: npt.NDArray[np.int64]
    plan: LinkPlan
    a: Stamp
    encode_s: float
    sends: int = 0
    sent_mono_ns: int = 0
    due_mono_ns: int = 0
    #: The baseband burst, kept here until RX says its radio listens (transport pluto).
    burst: npt.NDArray[np.complex64] | None = None


class TxDaemon:
    def __init__(self, config: TxConfig, bundle: Bundle, dataset: Dataset,
                 *, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        if dataset.name != bundle.meta.dataset or dataset.dim != bundle.meta.input_dim:
            raise ConfigError(
                f"dataset {dataset.name!r} ({dataset.dim} features) does not match the bundle, "
                f"built for {bundle.meta.dataset!r} ({bundle.meta.input_dim} features)"
            )
        self.config = config
        self.bundle = bundle
        self.dataset = dataset
        self.value_type = wire.ValueType.parse(config.value_type)
        self.link = config.link
        self.state = LinkState(Modulation.parse(config.modulation), config.alpha_policy, config.alpha)
        self.plan = make_plan(self.state, bundle.dims, self.link, self.value_type)
        self.phy = PhyConfig() if config.transport in ("sim", "pluto") else None
        self.radio: PlutoRadio | None = None
        if config.transport == "pluto":
            assert config.pluto is not None  # TxConfig validates this
            self.radio = PlutoRadio(config.pluto).open()
        self.amc: AmcPolicy | None = None
        if config.link_policy == "amc":
            self.amc = AmcPolicy(hysteresis_db=config.amc_hysteresis_db, initial=self.state.modulation)
        self.paused = False
        self.rx_ready = False
        self.fatal: str | None = None
        self.inflight: dict[int, Pending] = {}
        self.next_batch = 0
        self.stream_pos = 0
        self.counters: Counter[str] = Counter()
        self.correct = 0
        self.scored = 0
        self.rng = np.random.default_rng(config.seed)
        self._hello_due = 0
        self._next_build_ns = 0
        self._last_unreachable_log = 0
        self._pool_warned = False
        self._ctx = ctx or zmq.Context.instance()
        self.data = self._connect()
        self.control = make_socket(self._ctx, zmq.REP)
        self.control.bind(config.control)
        self.poller = zmq.Poller()
        self.poller.register(self.data, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)
        self.control_endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        self.metrics = MetricsWriter(config.metrics_out)
        self.sync = SyncMonitor(daemon_sync_config(config.gpsd, config.chrony_socket),
                                interval_s=config.sync_interval_s, logger=log)
        self.offset: OffsetEstimate | None = None
        self._probes: dict[int, ClockProbe] = {}
        self._exchanges: deque[tuple[ClockProbe, ClockReply, int]] = deque(maxlen=CLOCK_EXCHANGES_KEPT)
        self._probe_seq = 0
        self._probe_due = 0
        self._first_probe_ns: int | None = None

    # -- sockets -------------------------------------------------------------------------

    def _connect(self) -> zmq.Socket[bytes]:
        sock = make_socket(self._ctx, zmq.DEALER)
        # Refuse to queue for a peer that is not connected: a send then fails at once and the
        # batch stays ours, instead of vanishing into a pipe to a dead receiver.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(self.config.endpoint)
        return sock

    def _rebuild(self) -> None:
        self.poller.unregister(self.data)
        self.data.close(0)
        self.data = self._connect()
        self.poller.register(self.data, zmq.POLLIN)
        self.counters["reconnects"] += 1

    def close(self) -> None:
        if self.radio is not None:
            self.radio.close()
        self.data.close(0)
        self.control.close(0)
        self.metrics.close()

    # -- main loop -----------------------------------------------------------------------

    def finished(self) -> bool:
        return 0 < self.config.batches <= self.next_batch and not self.inflight

    def run(self, stop: StopFlag) -> int:
        log.info("tx_start", endpoint=self.config.endpoint, control=self.control_endpoint,
                 bundle=self.bundle.hash[:12], dataset=self.dataset.name, **self.plan.as_dict())
        started = monotonic_ns()
        self.sync.refresh()
        start_monitor_thread(self.sync, lambda: bool(stop))
        while not stop and not self.fatal and not self.finished():
            now = monotonic_ns()
            if not self.rx_ready:
                if self.config.hello_timeout_s and now - started > self.config.hello_timeout_s * NS_PER_S:
                    self.fatal = f"no receiver answered at {self.config.endpoint} within {self.config.hello_timeout_s:g} s"
                    break
                self._hello(now)
            else:
                self._probe_clock(now)
                if self._may_build(now):
                    self._build_and_send(now)
                    continue
            self._resend_due(monotonic_ns())
            events = dict(self.poller.poll(POLL_MS))
            if self.control in events:
                self._serve_control()
            if self.data in events:
                self._drain_replies()
        return self._finish(stop)

    def _finish(self, stop: StopFlag) -> int:
        summary = self.status()
        if self.fatal:
            log.error("tx_fatal", reason=self.fatal, **summary)
            return EXIT_FATAL
        log.info("tx_stopped", signal=stop.signal, unacknowledged=len(self.inflight), **summary)
        return EXIT_OK

    def _may_build(self, now: int) -> bool:
        return (
            not self.paused
            and len(self.inflight) < self.config.max_inflight
            and (self.config.batches == 0 or self.next_batch < self.config.batches)
            and now >= self._next_build_ns
            and (self.offset is not None or self._first_probe_ns is None
                 or now - self._first_probe_ns > CLOCK_FIRST_WAIT_S * NS_PER_S)
        )

    def _hello(self, now: int) -> None:
        if now < self._hello_due:
            return
        self._hello_due = now + int(HELLO_RETRY_S * NS_PER_S)
        try:
            self.data.send(messages.Hello(bundle=self.bundle.hash, role="tx").encode(), flags=zmq.NOBLOCK)
        except zmq.Again:
            self._log_unreachable(now)

    def _probe_clock(self, now: int) -> None:
        """NTP-style probes to RX; the estimate corrects B - A only where sync is missing."""
        if now < self._probe_due:
            return
        interval = int(self.config.clock_probe_interval_s * NS_PER_S)
        self._probe_due = now + interval if interval else 2**63
        burst = CLOCK_PROBE_BURST if not self._exchanges else 1
        if self._first_probe_ns is None:
            self._first_probe_ns = now
        self._probes = {}  # unanswered probes from earlier rounds are stale
        for _ in range(burst):
            self._probe_seq = (self._probe_seq + 1) % 2**32
            probe = ClockProbe(self._probe_seq, realtime_ns())
            try:
                self.data.send(messages.encode_clock(messages.KIND_CLOCK_PROBE, probe.to_dict()),
                               flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._probes[probe.seq] = probe

    def _on_clock_reply(self, obj: dict[str, Any], t4_ns: int) -> None:
        try:
            reply = ClockReply.from_dict(messages.clock_body(obj))
        except BadSyncMessage as exc:
            self.counters["bad_clock_reply"] += 1
            log.warning("bad_clock_reply", detail=str(exc))
            return
        probe = self._probes.pop(reply.seq, None)
        if probe is None or probe.t1_ns != reply.t1_ns:
            self.counters["stale_clock_reply"] += 1
            return
        self._exchanges.append((probe, reply, t4_ns))
        self.offset = estimate_rx_minus_tx(self._exchanges, client="tx")

    def _log_unreachable(self, now: int) -> None:
        if now - self._last_unreachable_log > UNREACHABLE_LOG_S * NS_PER_S:
            self._last_unreachable_log = now
            log.warning("rx_unreachable", endpoint=self.config.endpoint, unacknowledged=len(self.inflight))

    # -- batches -------------------------------------------------------------------------

    def build_batch(self) -> Pending:
        """Draw ``t`` test and up to ``N_max`` training images, PCA-encode, pack the payload."""
        plan = make_plan(self.state, self.bundle.dims, self.link, self.value_type)
        test, pool = self.dataset.test, self.dataset.pool
        t = plan.t
        test_idx = (self.stream_pos + np.arange(t)) % len(test.y)
        self.stream_pos = (self.stream_pos + t) % len(test.y)
        n = min(plan.n_max, len(pool.y))
        if n < plan.n_max and not self._pool_warned:
            self._pool_warned = True
            log.warning("pool_short", pool=len(pool.y), n_max=plan.n_max,
                        detail=f"TX pool holds {len(pool.y)} samples; sending {n} of N_max={plan.n_max}")
        train_idx = self.rng.choice(len(pool.y), size=n, replace=False)
        images = np.concatenate([test.x[test_idx], pool.x[train_idx]])
        a = Stamp.now()  # the paper's A: PCA starts now
        coeffs = self.bundle.codec.encode(images, plan.alpha)
        body = wire.build(coeffs[:t], coeffs[t:], pool.y[train_idx], self.value_type)
        on_wire, burst = body, None
        if self.phy is not None:
            burst = modulate_payload(body, plan.modulation, self.next_batch, self.phy)
            # Over the air only the envelope rides ZeroMQ; the burst waits for RX's air_ready.
            on_wire = b"" if self.radio is not None else burst.tobytes()
        encode_s = (monotonic_ns() - a.monotonic_ns) / NS_PER_S
        env = messages.Envelope(
            batch_id=self.next_batch, attempt=0, modulation=plan.modulation.value, b_max=plan.b_max,
            alpha=plan.alpha, bundle=self.bundle.hash, t_a_ns=a.realtime_ns, t=t, n=n,
            value_type=int(self.value_type), transport=self.config.transport,
            samples=0 if burst is None else burst.size,
            sync=self.sync.current().to_dict(),
            offset=None if self.offset is None else self.offset.to_dict(),
        )
        self.next_batch += 1
        return Pending(env, on_wire, len(body), test.y[test_idx].astype(np.int64), plan, a, encode_s,
                       burst=burst if self.radio is not None else None)

    def _build_and_send(self, now: int) -> None:
        try:
            pending = self.build_batch()
        except (BudgetError, ConfigError) as exc:
            # Only reachable through a control change validated against an older plan.
            log.error("batch_not_built", detail=str(exc))
            self.paused = True
            return
        self.inflight[pending.envelope.batch_id] = pending
        self._next_build_ns = now + int(self.config.interval_s * NS_PER_S)
        self._send(pending, now)

    def _send(self, pending: Pending, now: int) -> None:
        env = replace(pending.envelope, attempt=pending.sends)
        try:
            self.data.send_multipart([env.encode(), pending.payload], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pending.due_mono_ns = now + int(UNREACHABLE_RETRY_S * NS_PER_S)
            self._log_unreachable(now)
            return
        pending.envelope = env
        pending.sends += 1
        if pending.sends == 1:
            pending.sent_mono_ns = now
        backoff = min(2 ** (pending.sends - 1), MAX_BACKOFF)
        pending.due_mono_ns = now + int(self.config.ack_timeout_s * backoff * NS_PER_S)
        self.counters["sends"] += 1

    def _resend_due(self, now: int) -> None:
        due = [p for p in self.inflight.values() if p.due_mono_ns <= now]
        if not due:
            return
        if any(p.sends for p in due):
            # A reply did not come in time: the socket may hold a pipe to a dead peer, so
            # rebuild it and resend everything in flight (RX answers duplicates from cache).
            self._rebuild()
            due = list(self.inflight.values())
        for pending in due:
            if pending.sends >= self.config.max_attempts:
                self._lost(pending, f"no acknowledgement after {pending.sends} sends")
                continue
            if pending.sends:
                self.counters["resends"] += 1
                log.warning("batch_resend", batch=pending.envelope.batch_id, attempt=pending.sends)
            self._send(pending, now)

    def _lost(self, pending: Pending, reason: str) -> None:
        batch_id = pending.envelope.batch_id
        self.inflight.pop(batch_id, None)
        self.counters["lost"] += 1
        log.error("batch_lost", batch=batch_id, reason=reason)
        self.metrics.write({**self._base_record(pending), "status": "lost", "reason": reason})

    # -- replies -------------------------------------------------------------------------

    def _drain_replies(self) -> None:
        while True:
            try:
                frames = self.data.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            received_ns = realtime_ns()  # t4 of a clock exchange
            try:
                if len(frames) != 1:
                    raise EnvelopeError(f"expected a 1-frame reply, got {len(frames)}")
                reply = messages.decode_reply(frames[0])
            except EnvelopeError as exc:
                self.counters["bad_reply"] += 1
                log.warning("bad_reply", detail=str(exc))
                continue
            if isinstance(reply, dict) and reply.get("kind") == messages.KIND_AIR_READY:
                self._on_air_ready(reply)
            elif isinstance(reply, dict):
                self._on_clock_reply(reply, received_ns)
            elif isinstance(reply, messages.Hello):
                self._on_hello(reply)
            elif isinstance(reply, messages.ErrorReply):
                self._on_error(reply)
            else:
                self._on_report(reply)

    def _on_air_ready(self, notice: dict[str, Any]) -> None:
        """RX's radio is capturing: put the batch's burst on the air."""
        pending = self.inflight.get(notice["batch_id"])
        if pending is None or pending.burst is None or self.radio is None:
            self.counters["stale_air_ready"] += 1
            return
        try:
            buffers = self.radio.transmit(pending.burst)
        except RadioError as exc:
            # The batch is not lost: RX reports what it heard, or the resend timer fires.
            self.counters["radio_errors"] += 1
            log.error("radio_transmit_failed", batch=pending.envelope.batch_id, detail=str(exc))
            return
        log.debug("burst_sent", batch=pending.envelope.batch_id, samples=pending.burst.size, buffers=buffers)

    def _on_hello(self, hello: messages.Hello) -> None:
        if hello.bundle != self.bundle.hash:
            self.fatal = (
                f"bundle mismatch: TX holds {self.bundle.hash[:12]}, RX holds {hello.bundle[:12]}; "
                "run both daemons on the same bundle (see metadata.json 'hash')"
            )
            return
        if not self.rx_ready:
            log.info("rx_connected", endpoint=self.config.endpoint, bundle=hello.bundle[:12])
        self.rx_ready = True

    def _on_error(self, err: messages.ErrorReply) -> None:
        self.counters[f"rx_error_{err.code}"] += 1
        if err.code == "bundle_mismatch":
            self.fatal = f"RX refused the batch: {err.message}"
            return
        pending = self.inflight.get(err.batch_id) if err.batch_id is not None else None
        if pending is not None and err.code == "radio":
            # RX's radio failed, not the batch: the resend timer tries again.
            log.warning("rx_radio_error", batch=err.batch_id, detail=err.message)
        elif pending is not None:
            # RX rejected what we built: resending the same bytes cannot help.
            self._lost(pending, f"rejected by RX: {err.code}: {err.message}")
        else:
            log.warning("rx_error", code=err.code, detail=err.message, batch=err.batch_id)

    def _on_report(self, report: messages.Report) -> None:
        pending = self.inflight.pop(report.batch_id, None)
        if pending is None:
            self.counters["stale_reports"] += 1
            return
        now = monotonic_ns()
        try:
            comm = CommLatency.from_dict(report.comm) if report.comm is not None else None
        except BadSyncMessage as exc:
            self.counters["bad_reply"] += 1
            log.warning("bad_comm_record", batch=report.batch_id, detail=str(exc))
            comm = None
        predictions = np.frombuffer(report.predictions, dtype=np.uint8)
        # A test vector lost on the air has no prediction (0xFF); score the delivered ones.
        delivered = predictions != wire.NO_LABEL
        correct = int((predictions[delivered] == pending.test_labels[delivered]).sum())
        n_delivered = int(delivered.sum())
        self.correct += correct
        self.scored += n_delivered
        self.counters["acked"] += 1
        record = {
            **self._base_record(pending),
            "status": "ok",
            "n_train": report.n_train,
            "n_test_delivered": n_delivered,
            "vectors_lost": report.vectors_lost,
            "frames_lost": report.frames_lost,
            "snr_db": report.snr_db,
            "accuracy": correct / n_delivered if n_delivered else None,
            "latency_comm_s": report.latency_comm_s,
            **(comm_metrics(comm) if comm is not None else {}),
            "latency_finetune_s": report.latency_finetune_s,
            "latency_classify_s": report.latency_classify_s,
            "latency_e2e_s": report.latency_e2e_s,
            "adapt": report.adapt,
            "train_loss": report.train_loss,
            "rtt_s": (now - pending.sent_mono_ns) / NS_PER_S,
            "t_b_ns": report.t_b_ns,
        }
        self.metrics.write(record)
        log.info("batch", **{k: v for k, v in record.items() if k not in ("t_a_ns", "t_b_ns")})
        if self.amc is not None and report.snr_db is not None:
            self._adapt_link(report.snr_db, report.batch_id)

    def _adapt_link(self, snr_db: float, batch_id: int) -> None:
        """AMC: pick the modulation for the next batch from RX's SNR estimate."""
        assert self.amc is not None
        chosen = self.amc.update(snr_db)
        if chosen is self.state.modulation:
            return
        state = replace(self.state, modulation=chosen)
        try:
            plan = make_plan(state, self.bundle.dims, self.link, self.value_type)
        except (BudgetError, ConfigError) as exc:
            log.error("amc_switch_refused", modulation=chosen.value, detail=str(exc))
            return
        log.info("amc_switch", snr_db=snr_db, after_batch=batch_id, was=self.state.modulation.value,
                 from_batch=self.next_batch, **plan.as_dict())
        self.state, self.plan = state, plan

    def _base_record(self, pending: Pending) -> dict[str, Any]:
        plan = pending.plan
        return {
            "batch": pending.envelope.batch_id,
            "modulation": plan.modulation.value,
            "alpha": plan.alpha,
            "b_max": plan.b_max,
            "n_max": plan.n_max,
            "n_test": plan.t,
            "n_train": pending.envelope.n,
            "payload_bytes": pending.payload_bytes,
            "transport": pending.envelope.transport,
            "wire_bytes": len(pending.payload),
            "accuracy": None,
            "attempts": pending.sends,
            "encode_s": pending.encode_s,
            "t_a_ns": pending.a.realtime_ns,
        }

    # -- control -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "rx_ready": self.rx_ready,
            "paused": self.paused,
            "policy": self.state.policy,
            "link_policy": "amc" if self.amc is not None else "manual",
            "transport": self.config.transport,
            "next_batch": self.next_batch,
            "built": self.next_batch,
            "acked": self.counters["acked"],
            "lost": self.counters["lost"],
            "resends": self.counters["resends"],
            "inflight": len(self.inflight),
            "accuracy": self.correct / self.scored if self.scored else None,
        }

    def _serve_control(self) -> None:
        try:
            frame = self.control.recv(flags=zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            reply = self.apply(ControlRequest.decode(frame))
        except SemalignError as exc:
            self.counters["control_errors"] += 1
            log.warning("control_rejected", detail=str(exc))
            reply = encode_reply(False, error=str(exc), plan=self.plan.as_dict())
        self.control.send(reply)

    def apply(self, req: ControlRequest) -> bytes:
        """Apply a control command; the new plan takes effect from the next batch built."""
        if req.cmd in ("set-modulation", "set-alpha", "set-policy"):
            if req.cmd == "set-modulation":
                state = replace(self.state, modulation=Modulation.parse(str(req.arg)))
                if self.amc is not None:
                    log.info("amc_off", reason="set-modulation switches to manual")
                self.amc = None
            elif req.cmd == "set-alpha":
                if not isinstance(req.arg, int):
                    raise ConfigError(f"set-alpha expects an integer, got {req.arg!r}")
                state = LinkState(self.state.modulation, "fixed", req.arg)
            else:
                state = LinkState(self.state.modulation, str(req.arg),
                                  self.state.fixed_alpha if req.arg == "fixed" else None)
            plan = make_plan(state, self.bundle.dims, self.link, self.value_type)  # raises if impossible
            self.state, self.plan = state, plan
            log.info("link_changed", cmd=req.cmd, from_batch=self.next_batch, **plan.as_dict())
            return encode_reply(True, message=f"{req.cmd} applied from batch {self.next_batch}",
                                effective_from_batch=self.next_batch, plan=plan.as_dict())
        if req.cmd == "amc":
            if req.arg not in ("on", "off"):
                raise ConfigError(f"amc expects on or off, got {req.arg!r}")
            if req.arg == "on" and self.phy is None:
                raise ConfigError("amc needs SNR reports, which only the sim and pluto transports give")
            self.amc = (AmcPolicy(hysteresis_db=self.config.amc_hysteresis_db, initial=self.state.modulation)
                        if req.arg == "on" else None)
        elif req.cmd == "pause":
            self.paused = True
        elif req.cmd == "resume":
            self.paused = False
        return encode_reply(True, message=f"{req.cmd} ok", plan=self.plan.as_dict(), status=self.status())
