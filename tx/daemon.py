"""The TX daemon: builds batches, streams them to RX through its bearer, scores the reports.

One thread, one poll loop over the data and control sockets. At most ``max_inflight``
batches are unacknowledged (``tx.inflight``); batches are built by ``tx.batches``,
scored by ``tx.scoring``; the bearer (``common.transport``) decides how payloads travel.
Batches sent and not yet scored are journaled (``tx.journal``): a TX restarted after a
kill recalls their reports from RX and scores them.
"""

from __future__ import annotations

import secrets
import traceback
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import zmq

from common.clock import NS_PER_S, monotonic_ns, realtime_ns
from common.data.spec import Dataset
from common.errors import (
    BudgetError,
    ConfigError,
    EnvelopeError,
    HandshakeRefused,
    InternalError,
    JournalError,
    RadioError,
    SemalignError,
    ShiftError,
    Unreachable,
)
from common.link.amc import AmcPolicy
from common.link.plan import AlphaPolicy, LinkPlan, LinkState, make_plan
from common.log import get_logger
from common.metrics import MetricsWriter
from common.ml.bundle import Bundle
from common.modulation import Modulation
from common.phy import PhyConfig
from common.runtime import StopFlag
from common.telemetry import open_telemetry, sync_fields
from common.timesync import (
    ClockProbe,
    ClockReply,
    OffsetEstimate,
    SyncMonitor,
    daemon_sync_config,
    start_monitor_thread,
)
from common.timesync.offset import OffsetTracker
from common.transport.base import BearerSettings, open_bearer
from common.transport.security import secure_server
from common.transport.zmq import Context, DealerWire, bind_endpoint, make_socket
from common.wire import messages
from common.wire.payload import ValueType
from tx.batches import Batch, BatchBuilder
from tx.config import TxConfig
from tx.control import ControlRequest, decode_reply, encode_reply
from tx.inflight import MAX_BACKOFF, UNREACHABLE_RETRY_S, Inflight, Pending
from tx.journal import Entry, Journal, entry_labels
from tx.scoring import Scoreboard, base_record
from tx.shift import Shift, load_plugins

log = get_logger("semalign.tx")

POLL_MS = 50
#: Control requests queued per client (a REQ client has one outstanding): 8 x 128 KiB at most.
CONTROL_RCVHWM = 8
HELLO_RETRY_S = 1.0
#: Log "rx unreachable" at most this often.
UNREACHABLE_LOG_S = 5.0

EXIT_OK = 0
EXIT_FATAL = 2


@dataclass
class Recall:
    """A batch of an earlier run, journaled unscored: its report is asked of RX again."""

    entry: Entry
    sends: int = 0
    due_mono_ns: int = 0


class TxDaemon:
    def __init__(self, config: TxConfig, bundle: Bundle, dataset: Dataset, *, ctx: Context | None = None) -> None:
        if dataset.name != bundle.meta.dataset or dataset.dim != bundle.meta.input_dim:
            raise ConfigError(
                f"dataset {dataset.name!r} ({dataset.dim} features) does not match the bundle, "
                f"built for {bundle.meta.dataset!r} ({bundle.meta.input_dim} features)"
            )
        self.config = config
        self.bundle = bundle
        #: The shift plugins of tx.yaml, imported now and never again: a spec only names them.
        self.plugins = load_plugins(config.shift_plugins)
        self.value_type = config.value_type_enum
        if self.value_type is ValueType.INT8:
            bundle.codec.int8_step(1)  # BundleError now, not at the first batch, if it has no scales
        self.link = config.link
        self.state = LinkState(Modulation.parse(config.modulation), config.alpha_policy, config.alpha)
        self.plan = make_plan(self.state, bundle.dims, self.link, self.value_type)
        self.bearer = open_bearer(config.transport, BearerSettings(phy=PhyConfig(labelling=config.labelling),
                                                                  pluto=config.pluto))
        self.amc: AmcPolicy | None = None
        if config.link_policy == "amc":
            self.amc = AmcPolicy(hysteresis_db=config.amc_hysteresis_db, initial=self.state.modulation)
        self.paused = False
        self.rx_ready = False
        self.fatal: str | None = None
        self.counters: Counter[str] = Counter()
        #: The last shift dropped because it failed at run time (status shows it), None: none.
        self.shift_error: str | None = None
        self.builder = BatchBuilder(bundle, dataset, seed=config.seed, transport=self.bearer.transport,
                                    shift=config.shift, plugins=self.plugins)
        #: One id per daemon start, in every metrics record and envelope: restarts are told apart.
        self.run_id = secrets.token_hex(6)
        self.inflight = Inflight(config.ack_timeout_s, config.max_attempts, run=self.run_id)
        self.journal = Journal(config.journal_path)
        try:
            earlier = self.journal.load()
        except JournalError as exc:
            log.error("journal_unreadable", detail=str(exc), action="set aside; starting with an empty journal")
            earlier = []
        #: The earlier runs' batches whose reports are recalled from RX once it answers.
        self.recalls = {e.key: Recall(e) for e in earlier}
        self.scores = Scoreboard(self.counters)
        self.next_batch = 0
        self._hello_due = 0
        self._next_build_ns = 0
        self._last_unreachable_log = 0
        #: Since when RX has been reported unreachable (monotonic ns), 0: it is not.
        self._unreachable_since = 0
        #: RX refused our handshake since it was last heard from (logged once at once, then rarely).
        self._refused = False
        ctx = ctx or zmq.Context.instance()
        self.wire = DealerWire(ctx, config.endpoint, config.security)
        # ROUTER rather than REP: it answers each request whatever came before (a REP that
        # failed one reply would refuse every later request). REQ clients see no difference.
        self.control = make_socket(ctx, zmq.ROUTER, max_msg=2 * messages.MAX_META_BYTES, rcvhwm=CONTROL_RCVHWM)
        try:
            self.control_guard = secure_server(self.control, config.security, endpoint=config.control,
                                               domain="control")
            bind_endpoint(self.control, config.control, "control")
        except BaseException:
            self.control.close(0)
            self.wire.close()
            raise
        self.poller = zmq.Poller()
        self.poller.register(self.wire.socket, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)
        self.control_endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        self.metrics = MetricsWriter(config.metrics_out, tags={"run": self.run_id})
        self.sync = SyncMonitor(daemon_sync_config(config.gpsd, config.chrony_socket),
                                interval_s=config.sync_interval_s, logger=log)
        self.clock = OffsetTracker(config.clock_probe_interval_s)
        self.telemetry = open_telemetry("tx", config, ctx=ctx)

    @property
    def offset(self) -> OffsetEstimate | None:
        return self.clock.estimate

    def _rebuild(self) -> None:
        self.poller.unregister(self.wire.socket)
        self.poller.register(self.wire.rebuild(), zmq.POLLIN)
        self.counters["reconnects"] += 1

    def close(self) -> None:
        self.bearer.close()
        self.wire.close()
        self.control.close(0)
        if self.control_guard is not None:
            self.control_guard.release()
        self.metrics.close()
        self.telemetry.close()

    # -- main loop -----------------------------------------------------------------------

    def finished(self) -> bool:
        return 0 < self.config.batches <= self.next_batch and not self.inflight and not self.recalls

    def run(self, stop: StopFlag) -> int:
        log.info("tx_start", run=self.run_id, endpoint=self.config.endpoint, control=self.control_endpoint,
                 curve=self.config.security.enabled, journal=self.journal.path and str(self.journal.path),
                 recalling=len(self.recalls),
                 bundle=self.bundle.hash[:12], dataset=self.builder.dataset.name if self.builder.dataset else None,
                 **self.plan.as_dict())
        started = monotonic_ns()
        self.sync.refresh()
        start_monitor_thread(self.sync, lambda: bool(stop))
        while not stop and not self.fatal and not self.finished():
            self.telemetry.heartbeat(self.monitor_status)
            now = monotonic_ns()
            if not self.rx_ready:
                if self.config.hello_timeout_s and now - started > self.config.hello_timeout_s * NS_PER_S:
                    self.fatal = f"no receiver answered at {self.config.endpoint} within {self.config.hello_timeout_s:g} s"
                    break
                self._hello(now)
            else:
                self._recall_due(now)
                self.clock.poll(now, self._send_probe)
                if self._may_build(now):
                    self._build_and_send(now)
                    continue
            self._resend_due(monotonic_ns())
            events = dict(self.poller.poll(POLL_MS))
            if self.control in events:
                self._serve_control()
            if self.wire.socket in events:
                self._drain_replies()
        return self._finish(stop)

    def _finish(self, stop: StopFlag) -> int:
        summary = self.status()
        self.telemetry.event("stopped", finished=self.finished(), fatal=self.fatal, signal=stop.signal,
                             acked=summary["acked"], lost=summary["lost"], unacknowledged=len(self.inflight))
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
            and self.clock.ready(now)
        )

    def _hello(self, now: int) -> None:
        if now < self._hello_due:
            return
        self._hello_due = now + int(HELLO_RETRY_S * NS_PER_S)
        try:
            self.wire.send([messages.Hello(bundle=self.bundle.hash, role="tx").encode()])
        except Unreachable as exc:
            self._log_unreachable(now, exc)

    def _send_probe(self, probe: ClockProbe) -> None:
        self.wire.send([messages.encode_clock(messages.KIND_CLOCK_PROBE, probe.to_dict())])

    def _log_unreachable(self, now: int, exc: Unreachable | None = None) -> None:
        refused = isinstance(exc, HandshakeRefused)
        if not (refused and not self._refused) and now - self._last_unreachable_log <= UNREACHABLE_LOG_S * NS_PER_S:
            return
        self._last_unreachable_log = now
        self._unreachable_since = self._unreachable_since or now  # only what was logged is "back"
        if refused:
            # Not a network fault: waiting will not help until RX allows our key, and zmq
            # stops retrying a refused handshake, so a fresh socket tries again each time.
            self._refused = True
            log.error("rx_refused", endpoint=self.config.endpoint, detail=str(exc),
                      unacknowledged=len(self.inflight))
            self.telemetry.event("rx_refused", endpoint=self.config.endpoint, detail=str(exc),
                                 unacknowledged=len(self.inflight))
            self._rebuild()
            return
        log.warning("rx_unreachable", endpoint=self.config.endpoint, unacknowledged=len(self.inflight))
        self.telemetry.event("rx_unreachable", endpoint=self.config.endpoint, unacknowledged=len(self.inflight))

    def _rx_back(self, now: int) -> None:
        """A reply arrived: if RX had been reported unreachable, say once that it is back."""
        if self._unreachable_since:
            log.info("rx_back", endpoint=self.config.endpoint,
                     unreachable_s=round((now - self._unreachable_since) / NS_PER_S, 3))
            self._unreachable_since = 0
            self._refused = False

    # -- batches -------------------------------------------------------------------------

    def _build_and_send(self, now: int) -> None:
        # The held plan: every change of the link state (control, AMC) replaces it at once.
        plan = self.plan
        try:
            try:
                batch = self._build(plan)
            except ShiftError as exc:
                # A plugin that fails at run time costs its shift, not the stream: the batch is
                # built unshifted (its metrics row says so) and the error is kept for status.
                log.error("shift_dropped", shift=str(self.builder.shift), detail=str(exc),
                          batch_id=self.next_batch)
                self.counters["shift_dropped"] += 1
                self.shift_error = str(exc)
                self.builder.shift = Shift("")
                batch = self._build(plan)
        except (BudgetError, ConfigError) as exc:
            # The plan was validated when it was made: a builder that still refuses it is a bug.
            log.error("batch_not_built", detail=str(exc))
            self.paused = True
            return
        self.next_batch += 1
        pending = self.inflight.add(batch)
        self._next_build_ns = now + int(self.config.interval_s * NS_PER_S)
        self._send(pending, now)

    def _build(self, plan: LinkPlan) -> Batch:
        sync = self.sync.current()
        # The exchange whose bound, aged to now, is least (not the least-delay one aged afterwards).
        offset = self.clock.estimate_at(realtime_ns(), sync)
        return self.builder.build(plan, self.next_batch, sync=sync.to_dict(),
                                  offset=None if offset is None else offset.to_dict())

    def _send(self, pending: Pending, now: int) -> None:
        resend = pending.sends > 0
        if not resend:
            # Journaled before it can reach RX: a kill after this send leaves what the next
            # start needs to score RX's report of it.
            self._journal_put(Entry(self.run_id, pending.batch_id, pending.envelope.t_a_ns,
                                    entry_labels(pending.batch.test_labels), base_record(pending)))
        try:
            sent = self.bearer.send(self.wire, self.inflight.next_envelope(pending), pending.batch.payload)
        except Unreachable as exc:
            # Nothing left TX (no peer connected yet): retried soon, no attempt used, no rebuild.
            self.inflight.unreachable(pending, now)
            self._log_unreachable(now, exc)
            return
        self.inflight.sent(pending, sent.envelope, sent.wire_bytes, now)
        self.counters["sends"] += 1
        if resend:
            self.counters["resends"] += 1  # real sends only
            log.warning("batch_resend", batch=pending.batch_id, attempt=pending.sends - 1)
            self.telemetry.event("resend", batch=pending.batch_id, attempt=pending.sends - 1)

    def _resend_due(self, now: int) -> None:
        due = self.inflight.due(now)
        if not due:
            return
        age = now - self.wire.built_ns
        ack = self.inflight.ack_timeout_ns
        if ((self.inflight.timed_out(due) and age >= ack)
                or (self.inflight.owed(due) and age >= MAX_BACKOFF * ack)):
            # A reply did not come in time: the socket may hold a pipe to a dead peer, so
            # rebuild it and resend everything in flight. A socket younger than one ack
            # timeout is kept: rebuilding it again would throw away a connection that is
            # still coming up on a slow link (a new socket that never connects is given
            # up after the longest backoff).
            self._rebuild()
            self.inflight.owe_all(now)
            due = self.inflight.due(now)
        for pending in due:
            if self.inflight.exhausted(pending):
                self._lost(pending, f"no acknowledgement after {pending.sends} sends")
                continue
            self._send(pending, now)

    def _lost(self, pending: Pending, reason: str) -> None:
        self.inflight.pop(pending.batch_id)
        self.bearer.forget(pending.batch_id)
        self._journal_drop(self.run_id, pending.batch_id)
        self.counters["lost"] += 1
        log.error("batch_lost", batch=pending.batch_id, reason=reason)
        self.metrics.write(record := {**base_record(pending), "status": "lost", "reason": reason})
        self.telemetry.record(record)

    # -- the journal and the earlier runs' batches ----------------------------------------

    def _journal_put(self, entry: Entry) -> None:
        try:
            evicted = self.journal.put(entry)
        except JournalError as exc:
            # The journal is a safety net for the next start; failing to keep it stops no batch.
            self.counters["journal_errors"] += 1
            log.error("journal_write_failed", detail=str(exc), batch=entry.batch_id)
            return
        for old in evicted:
            self.recalls.pop(old.key, None)
            self.counters["journal_evicted"] += 1
            log.error("journal_evicted", batch=old.batch_id, run=old.run,
                      detail="the journal is full: this batch cannot be recovered after a restart")

    def _journal_drop(self, run: str, batch_id: int) -> None:
        try:
            self.journal.drop(run, batch_id)
        except JournalError as exc:
            self.counters["journal_errors"] += 1
            log.error("journal_write_failed", detail=str(exc), batch=batch_id)

    def _recall_due(self, now: int) -> None:
        """Ask RX again for the reports of the earlier runs' unscored batches (timed like resends)."""
        for recall in list(self.recalls.values()):
            if recall.due_mono_ns > now:
                continue
            if recall.sends >= self.config.max_attempts:
                self._recall_failed(recall, f"RX did not answer the recall after {recall.sends} tries")
                continue
            entry = recall.entry
            try:
                self.wire.send([messages.Recall(entry.run, entry.batch_id, entry.t_a_ns).encode()])
            except Unreachable:
                recall.due_mono_ns = now + int(UNREACHABLE_RETRY_S * NS_PER_S)
                self._log_unreachable(now)
                return
            recall.sends += 1
            recall.due_mono_ns = now + self.inflight.ack_timeout_ns

    def _recovered_fields(self, entry: Entry) -> dict[str, Any]:
        # Sends and bytes on the wire died with the run that sent the batch: unknown, not zero.
        return {**entry.record, "attempts": None, "wire_bytes": None, "rtt_s": None,
                "recovered": True, "recovered_from": entry.run}

    def _on_recalled(self, report: messages.Report) -> None:
        """RX's cached report of an earlier run's batch: scored with the journaled labels."""
        recall = self.recalls.pop((str(report.run), report.batch_id), None)
        if recall is None:
            self.counters["stale_reports"] += 1
            return
        entry = recall.entry
        if report.n_test != len(entry.labels):
            self._recall_failed(recall, f"RX's report has {report.n_test} predictions, the journal "
                                        f"{len(entry.labels)} test labels")
            return
        record = {**self._recovered_fields(entry), **self.scores.report_fields(entry.labels, report)}
        self.counters["recovered"] += 1
        self._journal_drop(entry.run, entry.batch_id)
        self.metrics.write(record)
        self.telemetry.record(record)
        log.info("batch_recovered", **{k: v for k, v in record.items() if k not in ("t_a_ns", "t_b_ns")})

    def _on_recall_refused(self, err: messages.ErrorReply) -> None:
        recall = None if err.batch_id is None else self.recalls.get((str(err.run), err.batch_id))
        if recall is None:
            self.counters["stale_recall_errors"] += 1
            return
        self._recall_failed(recall, f"RX holds no report of it: {err.code}: {err.message}")

    def _recall_failed(self, recall: Recall, reason: str) -> None:
        """No report to score: the batch never reached RX (or RX lost it), and is written lost."""
        entry = recall.entry
        self.recalls.pop(entry.key, None)
        self._journal_drop(entry.run, entry.batch_id)
        self.counters["recovered_lost"] += 1
        log.error("batch_lost", batch=entry.batch_id, recovered_from=entry.run, reason=reason)
        self.metrics.write(record := {**self._recovered_fields(entry), "status": "lost", "reason": reason})
        self.telemetry.record(record)

    # -- replies -------------------------------------------------------------------------

    def _drain_replies(self) -> None:
        while (frames := self.wire.recv()) is not None:
            received_ns = realtime_ns()  # t4 of a clock exchange
            self._rx_back(monotonic_ns())
            try:
                if len(frames) != 1:
                    raise EnvelopeError(f"expected a 1-frame reply, got {len(frames)}")
                reply = messages.decode_reply(frames[0])
            except EnvelopeError as exc:
                self.counters["bad_sync" if exc.code == "bad_sync" else "bad_reply"] += 1
                log.warning("bad_reply", detail=str(exc))
                continue
            try:
                self._dispatch(reply, received_ns)
            except Exception as exc:  # one reply costs that reply only, even through a bug of ours
                self.counters[InternalError.code] += 1
                log.error(InternalError.code, detail=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc())

    def _dispatch(self, reply: messages.Reply, received_ns: int) -> None:
        # A report or error naming another run answers a recall of an earlier run's batch.
        earlier = isinstance(reply, messages.Report | messages.ErrorReply) and reply.run not in (None, self.run_id)
        match reply:
            case messages.Report() if earlier:
                self._on_recalled(reply)
            case messages.Report():
                self._on_report(reply)
            case messages.Hello():
                self._on_hello(reply)
            case messages.ErrorReply() if earlier:
                self._on_recall_refused(reply)
            case messages.ErrorReply():
                self._on_error(reply)
            case ClockReply():
                if not self.clock.on_reply(reply, received_ns):
                    self.counters["stale_clock_reply"] += 1
            case messages.AirReady():
                self._on_air_ready(reply)
            case messages.AdaptReset():
                log.info("adapt_reset_done", alpha=reply.alpha, reset=reply.reset)

    def _on_air_ready(self, notice: messages.AirReady) -> None:
        """RX's radio is capturing: the bearer puts the batch's burst on the air."""
        if self.inflight.get(notice.batch_id) is None:
            self.counters["stale_air_ready"] += 1
            return
        try:
            if not self.bearer.on_air_ready(notice):
                self.counters["stale_air_ready"] += 1
        except RadioError as exc:
            # The batch is not lost: RX reports what it heard, or the resend timer fires.
            self.counters["radio_errors"] += 1
            log.error("radio_transmit_failed", batch=notice.batch_id, detail=str(exc))

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
        self.telemetry.event("rejected", code=err.code, batch=err.batch_id, detail=err.message)
        if err.code == "bundle_mismatch":
            self.fatal = f"RX refused the batch: {err.message}"
            return
        pending = self.inflight.get(err.batch_id)
        if pending is not None and err.code == "radio":
            # RX's radio failed, not the batch: the resend timer tries again.
            log.warning("rx_radio_error", batch=err.batch_id, detail=err.message)
        elif pending is not None:
            # RX rejected what we built: resending the same bytes cannot help.
            self._lost(pending, f"rejected by RX: {err.code}: {err.message}")
        else:
            log.warning("rx_error", code=err.code, detail=err.message, batch=err.batch_id)

    def _on_report(self, report: messages.Report) -> None:
        pending = self.inflight.pop(report.batch_id)
        if pending is None:
            self.counters["stale_reports"] += 1
            return
        self.bearer.forget(report.batch_id)
        self._journal_drop(self.run_id, report.batch_id)
        rtt_s = (monotonic_ns() - pending.sent_mono_ns) / NS_PER_S
        record = self.scores.score(pending, report, rtt_s)
        self.counters["acked"] += 1
        self.metrics.write(record)
        self.telemetry.record(record)
        log.info("batch", **record)  # every figure: one row on a TTY, all of it in JSON off one
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
        self.telemetry.event("amc", snr_db=snr_db, after_batch=batch_id, was=self.state.modulation.value,
                             from_batch=self.next_batch, plan=plan.as_dict())
        self.state, self.plan = state, plan

    # -- control -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "rx_ready": self.rx_ready,
            "paused": self.paused,
            "policy": str(self.state.policy),
            "link_policy": "amc" if self.amc is not None else "manual",
            "transport": str(self.config.transport),
            "shift": str(self.builder.shift),
            "shift_error": self.shift_error,
            "next_batch": self.next_batch,
            "built": self.next_batch,
            "acked": self.counters["acked"],
            "lost": self.counters["lost"],
            "resends": self.counters["resends"],
            "inflight": len(self.inflight),
            "accuracy": self.scores.accuracy,
            "run": self.run_id,
            "recalling": len(self.recalls),
            "recovered": self.counters["recovered"],
            "recovered_lost": self.counters["recovered_lost"],
            "reconnects": self.counters["reconnects"],
            "control_refused": 0 if self.control_guard is None else self.control_guard.refused,
            "refused": {"control": 0 if self.control_guard is None else self.control_guard.refused,
                        "monitor": self.telemetry.refused},
        }

    def monitor_status(self) -> dict[str, Any]:
        """TX's state for the monitor stream: the plan the next batch is built with, and clock sync."""
        return {**self.status(), "plan": self.plan.as_dict(), "control": self.control_endpoint,
                "endpoint": self.config.endpoint, **sync_fields(self.sync.current())}

    def _apply_alignment(self, req: ControlRequest) -> bytes:
        """Sensor shift, value type and RX's adapter reset: all from the next batch."""
        if req.cmd in ("set-shift", "clear-shift"):
            spec = "" if req.cmd == "clear-shift" else str(req.arg or "")
            # ShiftError if bad; a request chooses among the plugins loaded at start, imports none.
            self.builder.shift = Shift(spec, seed=self.config.seed + self.next_batch, plugins=self.plugins)
            log.info("shift_changed", shift=str(self.builder.shift), from_batch=self.next_batch)
            return encode_reply(True, message=f"shift {self.builder.shift} from batch {self.next_batch}",
                                effective_from_batch=self.next_batch, shift=str(self.builder.shift),
                                plan=self.plan.as_dict())
        if req.cmd == "set-value-type":
            value_type = ValueType.parse(str(req.arg))
            if value_type is ValueType.INT8:
                self.bundle.codec.int8_step(1)  # BundleError unless the bundle records scales
            plan = make_plan(self.state, self.bundle.dims, self.link, value_type)
            self.value_type, self.plan = value_type, plan
            log.info("link_changed", cmd=req.cmd, from_batch=self.next_batch, **plan.as_dict())
            return encode_reply(True, message=f"{req.cmd} applied from batch {self.next_batch}",
                                effective_from_batch=self.next_batch, plan=plan.as_dict())
        alpha: int | None = None
        if req.arg not in (None, "", "all"):
            if not str(req.arg).isdigit() or not 1 <= int(str(req.arg)) <= self.bundle.dims:
                raise ConfigError(f"reset-adapter expects an alpha in 1..{self.bundle.dims} or all, got {req.arg!r}")
            alpha = int(str(req.arg))
        try:
            self.wire.send([messages.AdaptReset(alpha=alpha).encode()])
        except Unreachable as exc:
            raise ConfigError("reset-adapter: RX is not connected") from exc
        return encode_reply(True, message=f"adapter reset ({'all alphas' if alpha is None else f'alpha {alpha}'}) "
                            f"forwarded to RX before batch {self.next_batch}",
                            effective_from_batch=self.next_batch, plan=self.plan.as_dict())

    def _serve_control(self) -> None:
        """Answer one control request; whatever it holds, it costs that request only."""
        try:
            frames = self.control.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return
        # ROUTER framing: [identity, (REQ's empty delimiter), body...]; the route goes back as it came.
        split = frames.index(b"", 1) + 1 if b"" in frames[1:] else 1
        route, body = frames[:split], frames[split:]
        try:
            if len(body) != 1:
                raise EnvelopeError(f"expected a 1-frame control request, got {len(body)} frames")
            reply = self.apply(ControlRequest.decode(body[0]))
        except SemalignError as exc:
            self.counters["control_errors"] += 1
            log.warning("control_rejected", detail=str(exc))
            reply = encode_reply(False, error=str(exc), plan=self.plan.as_dict())
        except Exception as exc:  # a bug of ours: answered, logged with its traceback, TX goes on
            self.counters[InternalError.code] += 1
            log.error(InternalError.code, detail=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            reply = encode_reply(False, error="internal error: TX failed on this request (see its log)")
        try:
            self.control.send_multipart([*route, reply], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.counters["control_reply_dropped"] += 1
            log.warning("control_reply_dropped", detail=str(exc))
        self.telemetry.event("control", **decode_reply(reply))
        self.telemetry.status(self.monitor_status())

    def apply(self, req: ControlRequest) -> bytes:
        """Apply a control command; the new plan takes effect from the next batch built."""
        if req.cmd in ("set-shift", "clear-shift", "set-value-type", "reset-adapter"):
            return self._apply_alignment(req)
        if req.cmd in ("set-modulation", "set-alpha", "set-policy"):
            if req.cmd == "set-modulation":
                state = replace(self.state, modulation=Modulation.parse(str(req.arg)))
                if self.amc is not None:
                    log.info("amc_off", reason="set-modulation switches to manual")
                self.amc = None
            elif req.cmd == "set-alpha":
                if not isinstance(req.arg, int):
                    raise ConfigError(f"set-alpha expects an integer, got {req.arg!r}")
                state = LinkState(self.state.modulation, AlphaPolicy.FIXED, req.arg)
            else:
                policy = AlphaPolicy.parse(str(req.arg))
                state = LinkState(self.state.modulation, policy,
                                  self.state.fixed_alpha if policy is AlphaPolicy.FIXED else None)
            plan = make_plan(state, self.bundle.dims, self.link, self.value_type)  # raises if impossible
            self.state, self.plan = state, plan
            log.info("link_changed", cmd=req.cmd, from_batch=self.next_batch, **plan.as_dict())
            return encode_reply(True, message=f"{req.cmd} applied from batch {self.next_batch}",
                                effective_from_batch=self.next_batch, plan=plan.as_dict())
        if req.cmd == "amc":
            if req.arg not in ("on", "off"):
                raise ConfigError(f"amc expects on or off, got {req.arg!r}")
            if req.arg == "on" and not self.bearer.reports_snr:
                raise ConfigError("amc needs SNR reports, which only the sim and pluto transports give")
            self.amc = (AmcPolicy(hysteresis_db=self.config.amc_hysteresis_db, initial=self.state.modulation)
                        if req.arg == "on" else None)
        elif req.cmd == "pause":
            self.paused = True
        elif req.cmd == "resume":
            self.paused = False
        return encode_reply(True, message=f"{req.cmd} ok", plan=self.plan.as_dict(), status=self.status())
