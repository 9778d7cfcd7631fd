"""One receiver as TX sees it: its wire and bearer, plan, in-flight window, clock offset and scores.

The daemon's loop calls ``work`` (whatever is due: hello, recalls, probes, the next batch,
resends) and ``drain`` when the link's socket is readable; control commands change its plan.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

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
    ShiftError,
    Unreachable,
)
from common.link.amc import AmcPolicy
from common.link.plan import LinkState, make_plan
from common.log import get_logger
from common.metrics import MetricsWriter
from common.ml.bundle import Bundle
from common.modulation import Modulation
from common.phy import PhyConfig
from common.telemetry import Telemetry
from common.timesync import ClockProbe, ClockReply, OffsetEstimate, SyncMonitor
from common.timesync.offset import OffsetTracker
from common.transport.base import Bearer, BearerSettings, open_bearer
from common.transport.zmq import Context, DealerWire
from common.wire import messages
from common.wire.payload import ValueType
from tx.batches import Batch, BatchBuilder
from tx.config import DEFAULT_RX, TxConfig
from tx.inflight import MAX_BACKOFF, UNREACHABLE_RETRY_S, Inflight, Pending
from tx.journal import Entry, Journal, entry_labels
from tx.scoring import Scoreboard, base_record
from tx.shift import Plugin, Shift

log = get_logger("semalign.tx")

HELLO_RETRY_S = 1.0
#: Log "rx unreachable" at most this often.
UNREACHABLE_LOG_S = 5.0


class TxWire(Protocol):
    """TX's end of the message path to one RX: ``DealerWire``, or ``MemoryWire`` in tests."""

    #: When the current socket was built (monotonic ns): a fresh one needs time to connect.
    built_ns: int

    @property
    def socket(self) -> zmq.Socket[bytes] | None:
        """What the daemon polls for replies (None: nothing to poll, ``recv`` reads a queue)."""
        ...

    def send(self, frames: Sequence[bytes | memoryview]) -> None: ...

    def recv(self) -> list[bytes] | None: ...

    def rebuild(self) -> object: ...

    def close(self) -> None: ...


@dataclass(frozen=True, eq=False)
class Station:
    """What every link of one TX shares: the bundle and shift plugins, the run, the journal,
    where records go, and the sync state of the host's clock."""

    bundle: Bundle
    run_id: str
    journal: Journal
    metrics: MetricsWriter
    telemetry: Telemetry
    sync: SyncMonitor
    plugins: Mapping[str, Plugin] = field(default_factory=dict)
    #: Fields every metrics row and monitor event of a link carries (the daemon's: ``{"rx": NAME}``).
    tags: Mapping[str, Any] = field(default_factory=dict)

    def for_receiver(self, name: str) -> Station:
        """This station as one receiver's link sees it: its rows and events name the receiver."""
        return replace(self, tags={**self.tags, "rx": name})


@dataclass
class Recall:
    """A batch of an earlier run, journaled unscored: its report is asked of RX again."""

    entry: Entry
    sends: int = 0
    due_mono_ns: int = 0


class Link:
    """One receiver: the batches built for it, sent to it, resent and scored, and its link state.

    ``wire`` and ``bearer`` default to the ones the config names (a ``DealerWire`` on ``ctx``);
    tests pass twins. ``clock`` gives monotonic ns (tests inject their own).
    """

    def __init__(self, config: TxConfig, station: Station, dataset: Dataset | None, *,
                 recalled: Iterable[Entry] = (), ctx: Context | None = None, wire: TxWire | None = None,
                 bearer: Bearer | None = None, clock: Callable[[], int] = monotonic_ns,
                 name: str = DEFAULT_RX) -> None:
        #: The receiver's name (``receivers:``, else ``DEFAULT_RX``): in its rows, events and journal entries.
        self.name = name
        self.config = config
        self.station = station
        self.bundle = station.bundle
        self.run_id = station.run_id
        self.endpoint = config.endpoint
        self._mono = clock
        self.value_type = config.value_type_enum
        if self.value_type is ValueType.INT8:
            self.bundle.codec.int8_step(1)  # BundleError now, not at the first batch, if it has no scales
        self.defaults = config.link
        self.state = LinkState(Modulation.parse(config.modulation), config.alpha_policy, config.alpha)
        self.plan = make_plan(self.state, self.bundle.dims, self.defaults, self.value_type)
        self.amc: AmcPolicy | None = None
        if config.link_policy == "amc":
            self.amc = AmcPolicy(hysteresis_db=config.amc_hysteresis_db, initial=self.state.modulation)
        self.bearer = bearer or open_bearer(config.transport, BearerSettings(phy=PhyConfig(labelling=config.labelling),
                                                                             pluto=config.pluto))
        try:
            self.builder = BatchBuilder(self.bundle, dataset, seed=config.seed, transport=self.bearer.transport,
                                        shift=config.shift, plugins=station.plugins)
            self.wire: TxWire = wire or DealerWire(ctx or zmq.Context.instance(), config.endpoint, config.security)
        except BaseException:
            self.bearer.close()
            raise
        self.paused = False
        self.rx_ready = False
        #: False when the daemon keeps the hello timeout (several receivers): this link greets on.
        self.hello_timeout_fatal = True
        #: Why this link cannot go on (the daemon stops with it), None: it can.
        self.fatal: str | None = None
        self.counters: Counter[str] = Counter()
        #: The last shift dropped because it failed at run time (status shows it), None: none.
        self.shift_error: str | None = None
        self.inflight = Inflight(config.ack_timeout_s, config.max_attempts, run=self.run_id)
        #: The earlier runs' batches whose reports are recalled from RX once it answers.
        self.recalls = {e.key: Recall(e) for e in recalled if e.rx == name}
        self.scores = Scoreboard(self.counters)
        self.clock = OffsetTracker(config.clock_probe_interval_s)
        self.next_batch = 0
        self._begun_ns = clock()  # ``begin`` sets it again when the daemon's loop starts
        self._hello_due = 0
        self._next_build_ns = 0
        self._last_unreachable_log = 0
        #: Since when RX has been reported unreachable (monotonic ns), 0: it is not.
        self._unreachable_since = 0
        #: RX refused our handshake since it was last heard from (logged once at once, then rarely).
        self._refused = False

    @property
    def answered(self) -> bool:
        """RX has answered our hello (and so is not absent)."""
        return self.rx_ready

    @property
    def offset(self) -> OffsetEstimate | None:
        return self.clock.estimate

    @property
    def socket(self) -> zmq.Socket[bytes] | None:
        """The socket RX's replies arrive on (it changes when the wire is rebuilt)."""
        return self.wire.socket

    def close(self) -> None:
        self.bearer.close()
        self.wire.close()

    def finished(self) -> bool:
        return 0 < self.config.batches <= self.next_batch and not self.inflight and not self.recalls

    # -- what the loop calls -------------------------------------------------------------

    def begin(self, now: int) -> None:
        """The daemon starts: RX has ``hello_timeout_s`` from ``now`` to answer."""
        self._begun_ns = now

    def work(self, now: int) -> bool:
        """Do what is due; True if a batch was built (the loop comes back at once, more may be due)."""
        if not self.rx_ready:
            if self.hello_timeout_fatal and self.config.hello_timeout_s and now - self._begun_ns > self.config.hello_timeout_s * NS_PER_S:
                self.fatal = f"no receiver answered at {self.endpoint} within {self.config.hello_timeout_s:g} s"
                return False
            self._hello(now)
        else:
            self._recall_due(now)
            self.clock.poll(now, self._send_probe)
            if self._may_build(now):
                self._build_and_send(now)
                return True
        self._resend_due(self._mono())
        return False

    def drain(self) -> None:
        """Handle every reply waiting on the wire; one bad reply costs that reply only."""
        while (frames := self.wire.recv()) is not None:
            received_ns = realtime_ns()  # t4 of a clock exchange
            self._rx_back(self._mono())
            try:
                if len(frames) != 1:
                    raise EnvelopeError(f"expected a 1-frame reply, got {len(frames)}")
                reply = messages.decode_reply(frames[0])
            except EnvelopeError as exc:
                self.counters["bad_sync" if exc.code == "bad_sync" else "bad_reply"] += 1
                log.warning("bad_reply", detail=str(exc))
                continue
            try:
                self.on_reply(reply, received_ns)
            except Exception as exc:  # one reply costs that reply only, even through a bug of ours
                self.counters[InternalError.code] += 1
                log.error(InternalError.code, detail=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc())

    def on_reply(self, reply: messages.Reply, received_ns: int) -> None:
        """One decoded reply from RX (``received_ns``: CLOCK_REALTIME at its arrival)."""
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

    def status(self) -> dict[str, Any]:
        """This link's figures for ``status`` (the daemon adds its own)."""
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
        }

    # -- what control commands change (each from the next batch built) -------------------

    def set_state(self, state: LinkState) -> None:
        """Modulation and alpha policy; raises ``BudgetError``/``ConfigError`` if no plan fits them."""
        self.state, self.plan = state, make_plan(state, self.bundle.dims, self.defaults, self.value_type)

    def set_value_type(self, value_type: ValueType) -> None:
        if value_type is ValueType.INT8:
            self.bundle.codec.int8_step(1)  # BundleError unless the bundle records scales
        self.plan = make_plan(self.state, self.bundle.dims, self.defaults, value_type)
        self.value_type = value_type

    def set_shift(self, spec: str) -> None:
        # ShiftError if bad; a request chooses among the plugins loaded at start, imports none.
        self.builder.shift = Shift(spec, seed=self.config.seed + self.next_batch, plugins=self.station.plugins)

    def set_amc(self, on: bool) -> None:
        if on and not self.bearer.reports_snr:
            raise ConfigError("amc needs SNR reports, which only the sim and pluto transports give")
        self.amc = AmcPolicy(hysteresis_db=self.config.amc_hysteresis_db, initial=self.state.modulation) if on else None

    def reset_adapter(self, alpha: int | None) -> None:
        """Ask RX to forget its carried-over adapters (of ``alpha``, or all)."""
        try:
            self.wire.send([messages.AdaptReset(alpha=alpha).encode()])
        except Unreachable as exc:
            raise ConfigError("reset-adapter: RX is not connected") from exc

    # -- reaching RX ---------------------------------------------------------------------

    def _rebuild(self) -> None:
        self.wire.rebuild()
        self.counters["reconnects"] += 1

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
            log.error("rx_refused", endpoint=self.endpoint, detail=str(exc), unacknowledged=len(self.inflight))
            self._event("rx_refused", endpoint=self.endpoint, detail=str(exc), unacknowledged=len(self.inflight))
            self._rebuild()
            return
        log.warning("rx_unreachable", endpoint=self.endpoint, unacknowledged=len(self.inflight))
        self._event("rx_unreachable", endpoint=self.endpoint, unacknowledged=len(self.inflight))

    def _rx_back(self, now: int) -> None:
        """A reply arrived: if RX had been reported unreachable, say once that it is back."""
        if self._unreachable_since:
            log.info("rx_back", endpoint=self.endpoint, unreachable_s=round((now - self._unreachable_since) / NS_PER_S, 3))
            self._unreachable_since = 0
            self._refused = False

    # -- batches -------------------------------------------------------------------------

    def _may_build(self, now: int) -> bool:
        return (
            not self.paused
            and len(self.inflight) < self.config.max_inflight
            and (self.config.batches == 0 or self.next_batch < self.config.batches)
            and now >= self._next_build_ns
            and self.clock.ready(now)
        )

    def _build_and_send(self, now: int) -> None:
        try:
            try:
                batch = self.build()
            except ShiftError as exc:
                # A plugin that fails at run time costs its shift, not the stream: the batch is
                # built unshifted (its metrics row says so) and the error is kept for status.
                log.error("shift_dropped", shift=str(self.builder.shift), detail=str(exc), batch_id=self.next_batch)
                self.counters["shift_dropped"] += 1
                self.shift_error = str(exc)
                self.builder.shift = Shift("")
                batch = self.build()
        except (BudgetError, ConfigError) as exc:
            # The plan was validated when it was made: a builder that still refuses it is a bug.
            log.error("batch_not_built", detail=str(exc))
            self.paused = True
            return
        self.next_batch += 1
        pending = self.inflight.add(batch)
        self._next_build_ns = now + int(self.config.interval_s * NS_PER_S)
        self.send(pending, now)

    def build(self) -> Batch:
        """The next batch, built with the plan held (every change of the link state replaces it)."""
        sync = self.station.sync.current()
        # The exchange whose bound, aged to now, is least (not the least-delay one aged afterwards).
        offset = self.clock.estimate_at(realtime_ns(), sync)
        return self.builder.build(self.plan, self.next_batch, sync=sync.to_dict(),
                                  offset=None if offset is None else offset.to_dict())

    def send(self, pending: Pending, now: int) -> None:
        """Send a batch in flight (first time or again); a send that could not be queued uses no attempt."""
        resend = pending.sends > 0
        if not pending.journaled:
            # Journaled once, before it can reach RX: a kill after this send leaves what the
            # next start needs to score RX's report of it (a send no peer could take is retried
            # every 0.25 s and must not rewrite the file each time).
            pending.journaled = True
            self._journal_put(Entry(self.run_id, pending.batch_id, pending.envelope.t_a_ns,
                                    entry_labels(pending.batch.test_labels), base_record(pending), self.name))
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
            self._event("resend", batch=pending.batch_id, attempt=pending.sends - 1)

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
            self.send(pending, now)

    def _lost(self, pending: Pending, reason: str) -> None:
        self.inflight.pop(pending.batch_id)
        self.bearer.forget(pending.batch_id)
        self._journal_drop(self.run_id, pending.batch_id)
        self.counters["lost"] += 1
        log.error("batch_lost", batch=pending.batch_id, reason=reason)
        self._record({**base_record(pending), "status": "lost", "reason": reason})

    def _record(self, record: dict[str, Any]) -> None:
        record = {**record, **self.station.tags}
        self.station.metrics.write(record)
        self.station.telemetry.record(record)

    def _event(self, kind: str, **fields: Any) -> None:
        self.station.telemetry.event(kind, **{**fields, **self.station.tags})

    # -- the journal and the earlier runs' batches ----------------------------------------

    def _journal_put(self, entry: Entry) -> None:
        try:
            evicted = self.station.journal.put(entry)
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
            self.station.journal.drop(run, batch_id, self.name)
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
        self._record(record)
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
        self._record({**self._recovered_fields(entry), "status": "lost", "reason": reason})

    # -- replies -------------------------------------------------------------------------

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
            log.info("rx_connected", endpoint=self.endpoint, bundle=hello.bundle[:12])
        self.rx_ready = True

    def _on_error(self, err: messages.ErrorReply) -> None:
        self.counters[f"rx_error_{err.code}"] += 1
        self._event("rejected", code=err.code, batch=err.batch_id, detail=err.message)
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
        rtt_s = (self._mono() - pending.sent_mono_ns) / NS_PER_S
        record = self.scores.score(pending, report, rtt_s)
        self.counters["acked"] += 1
        self._record(record)
        log.info("batch", **record)  # every figure: one row on a TTY, all of it in JSON off one
        if self.amc is not None and report.snr_db is not None:
            self._adapt(report.snr_db, report.batch_id)

    def _adapt(self, snr_db: float, batch_id: int) -> None:
        """AMC: pick the modulation for the next batch from RX's SNR estimate."""
        assert self.amc is not None
        chosen = self.amc.update(snr_db)
        if chosen is self.state.modulation:
            return
        state = replace(self.state, modulation=chosen)
        try:
            plan = make_plan(state, self.bundle.dims, self.defaults, self.value_type)
        except (BudgetError, ConfigError) as exc:
            log.error("amc_switch_refused", modulation=chosen.value, detail=str(exc))
            return
        log.info("amc_switch", snr_db=snr_db, after_batch=batch_id, was=self.state.modulation.value,
                 from_batch=self.next_batch, **plan.as_dict())
        self._event("amc", snr_db=snr_db, after_batch=batch_id, was=self.state.modulation.value,
                                     from_batch=self.next_batch, plan=plan.as_dict())
        self.state, self.plan = state, plan
