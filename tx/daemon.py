"""The TX daemon: a poll loop over its link to RX and the control socket.

One thread. The link (``tx.link``) owns everything that belongs to the receiver: wire and
bearer, plan and AMC, the in-flight window and resends, the clock offset, the scores, the
recall of an earlier run's batches from the journal (``tx.journal``). Control commands are
applied by ``tx.commands``; the daemon composes status and telemetry.
"""

from __future__ import annotations

import secrets
import traceback
from collections import Counter
from typing import Any

import zmq

from common.clock import monotonic_ns
from common.data.spec import Dataset
from common.errors import ConfigError, EnvelopeError, InternalError, JournalError, SemalignError
from common.log import get_logger
from common.metrics import MetricsWriter
from common.ml.bundle import Bundle
from common.runtime import StopFlag
from common.telemetry import open_telemetry, sync_fields
from common.timesync import OffsetEstimate, SyncMonitor, daemon_sync_config, start_monitor_thread
from common.transport.security import secure_server
from common.transport.zmq import Context, bind_endpoint, make_socket
from common.wire import messages
from tx.commands import apply
from tx.config import TxConfig
from tx.control import ControlRequest, decode_reply, encode_reply
from tx.journal import Journal
from tx.link import Link, Station
from tx.shift import load_plugins

log = get_logger("semalign.tx")

POLL_MS = 50
#: Control requests queued per client (a REQ client has one outstanding): 8 x 128 KiB at most.
CONTROL_RCVHWM = 8

EXIT_OK = 0
EXIT_FATAL = 2


class TxDaemon:
    def __init__(self, config: TxConfig, bundle: Bundle, dataset: Dataset, *, ctx: Context | None = None) -> None:
        if dataset.name != bundle.meta.dataset or dataset.dim != bundle.meta.input_dim:
            raise ConfigError(
                f"dataset {dataset.name!r} ({dataset.dim} features) does not match the bundle, "
                f"built for {bundle.meta.dataset!r} ({bundle.meta.input_dim} features)"
            )
        self.config = config
        self.bundle = bundle
        self.dataset = dataset
        #: One id per daemon start, in every metrics record and envelope: restarts are told apart.
        self.run_id = secrets.token_hex(6)
        #: Control-plane counters (each link counts its own batches and replies).
        self.counters: Counter[str] = Counter()
        self.journal = Journal(config.journal_path)
        try:
            earlier = self.journal.load()
        except JournalError as exc:
            log.error("journal_unreadable", detail=str(exc), action="set aside; starting with an empty journal")
            earlier = []
        ctx = ctx or zmq.Context.instance()
        self.metrics = MetricsWriter(config.metrics_out, tags={"run": self.run_id})
        self.sync = SyncMonitor(daemon_sync_config(config.gpsd, config.chrony_socket),
                                interval_s=config.sync_interval_s, logger=log)
        try:
            self.telemetry = open_telemetry("tx", config, ctx=ctx)
        except BaseException:
            self.metrics.close()
            raise
        # The shift plugins of tx.yaml, imported now and never again: a spec only names them.
        station = Station(bundle, self.run_id, self.journal, self.metrics, self.telemetry, self.sync,
                          plugins=load_plugins(config.shift_plugins))
        try:
            #: The receivers, one link each; today TX serves exactly one.
            self.links = [Link(config, station, dataset, recalled=earlier, ctx=ctx)]
        except BaseException:
            self.metrics.close()
            self.telemetry.close()
            raise
        # ROUTER rather than REP: it answers each request whatever came before (a REP that
        # failed one reply would refuse every later request). REQ clients see no difference.
        self.control = make_socket(ctx, zmq.ROUTER, max_msg=2 * messages.MAX_META_BYTES, rcvhwm=CONTROL_RCVHWM)
        try:
            self.control_guard = secure_server(self.control, config.security, endpoint=config.control,
                                               domain="control")
            bind_endpoint(self.control, config.control, "control")
        except BaseException:
            self.control.close(0)
            self._close_links()
            raise
        self.control_endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def link(self) -> Link:
        """The one receiver this TX serves."""
        return self.links[0]

    @property
    def offset(self) -> OffsetEstimate | None:
        return self.link.offset

    @property
    def fatal(self) -> str | None:
        """Why TX stops (a link that cannot go on), None: it goes on."""
        return next((link.fatal for link in self.links if link.fatal), None)

    def _close_links(self) -> None:
        for link in self.links:
            link.close()
        self.metrics.close()
        self.telemetry.close()

    def close(self) -> None:
        self.control.close(0)
        if self.control_guard is not None:
            self.control_guard.release()
        self._close_links()

    # -- main loop -----------------------------------------------------------------------

    def finished(self) -> bool:
        return all(link.finished() for link in self.links)

    def run(self, stop: StopFlag) -> int:
        link = self.link
        log.info("tx_start", run=self.run_id, endpoint=link.endpoint, control=self.control_endpoint,
                 curve=self.config.security.enabled, journal=self.journal.path and str(self.journal.path),
                 recalling=len(link.recalls), bundle=self.bundle.hash[:12], dataset=self.dataset.name,
                 **link.plan.as_dict())
        started = monotonic_ns()
        for each in self.links:
            each.begin(started)
        self.sync.refresh()
        start_monitor_thread(self.sync, lambda: bool(stop))
        while not stop and not self.fatal and not self.finished():
            self.telemetry.heartbeat(self.monitor_status)
            now = monotonic_ns()
            # Every link does its due work; one that built a batch may have more to build at once.
            built = [link.work(now) for link in self.links]
            if any(built):
                continue
            if self.fatal:
                break
            self._poll()
        return self._finish(stop)

    def _poll(self) -> None:
        """Wait up to ``POLL_MS`` for a control request or a reply, and handle what came."""
        # Polled afresh each time: a link's socket changes when its wire is rebuilt.
        sockets = [self.control, *(link.socket for link in self.links if link.socket is not None)]
        ready = {sock for sock, _ in zmq.zmq_poll([(sock, zmq.POLLIN) for sock in sockets], POLL_MS)}
        if self.control in ready:
            self._serve_control()
        for link in self.links:
            if link.socket in ready:
                link.drain()

    def _finish(self, stop: StopFlag) -> int:
        summary = self.status()
        unacknowledged = sum(len(link.inflight) for link in self.links)
        self.telemetry.event("stopped", finished=self.finished(), fatal=self.fatal, signal=stop.signal,
                             acked=summary["acked"], lost=summary["lost"], unacknowledged=unacknowledged)
        if self.fatal:
            log.error("tx_fatal", reason=self.fatal, **summary)
            return EXIT_FATAL
        log.info("tx_stopped", signal=stop.signal, unacknowledged=unacknowledged, **summary)
        return EXIT_OK

    # -- control and status --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        refused = 0 if self.control_guard is None else self.control_guard.refused
        return {**self.link.status(), "control_refused": refused,
                "refused": {"control": refused, "monitor": self.telemetry.refused}}

    def monitor_status(self) -> dict[str, Any]:
        """TX's state for the monitor stream: the plan the next batch is built with, and clock sync."""
        return {**self.status(), "plan": self.link.plan.as_dict(), "control": self.control_endpoint,
                "endpoint": self.link.endpoint, **sync_fields(self.sync.current())}

    def apply(self, req: ControlRequest) -> bytes:
        """Apply a control command; the new plan takes effect from the next batch built."""
        return apply(self.link, req, self.status)

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
            reply = encode_reply(False, error=str(exc), plan=self.link.plan.as_dict())
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
