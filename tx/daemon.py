"""The TX daemon: a poll loop over its links to the receivers and the control socket.

One thread. A link (``tx.link``) owns everything that belongs to one receiver: wire and
bearer, plan and AMC, the in-flight window and resends, the clock offset, the scores, the
recall of an earlier run's batches from the journal (``tx.journal``). Control commands are
applied by ``tx.commands`` to the receiver a request names, or to all; the daemon composes
status and telemetry.

With several receivers (``receivers:``) no link waits for another: each is given its due
work in turn and only its own socket is read when it is readable. A receiver that cannot go
on (bundle mismatch) is given up and the others go on; TX stops when every one is given up.
``hello_timeout_s`` is then TX's: it stops only if no receiver has answered within it, and
the silent ones keep being greeted (one started late joins). With one receiver it is that
receiver's, as it always was.
"""

from __future__ import annotations

import secrets
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from common.clock import NS_PER_S, monotonic_ns
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
from tx.control import TABLE, ControlRequest, encode_reply, make_reply
from tx.journal import Entry, Journal
from tx.link import Link, Station
from tx.shift import load_plugins

log = get_logger("semalign.tx")

POLL_MS = 50
#: Control requests queued per client (a REQ client has one outstanding): 8 x 128 KiB at most.
CONTROL_RCVHWM = 8

EXIT_OK = 0
EXIT_FATAL = 2


#: Builds one receiver's link: (name, its config, its station, the journal's earlier entries).
MakeLink = Callable[[str, TxConfig, Station, list[Entry]], Link]


class TxDaemon:
    """``make_link`` builds each receiver's link (default: over zmq on ``ctx``; tests pass twins)."""

    def __init__(self, config: TxConfig, bundle: Bundle, dataset: Dataset, *, ctx: Context | None = None,
                 make_link: MakeLink | None = None) -> None:
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
        make_link = make_link or (lambda name, link_config, station, recalled: Link(
            link_config, station, dataset, recalled=recalled, ctx=ctx, name=name))
        # The shift plugins of tx.yaml, imported now and never again (a spec only names them),
        # before anything is opened that a bad one would leave open.
        plugins = load_plugins(config.shift_plugins)
        self.metrics = MetricsWriter(config.metrics_out, tags={"run": self.run_id})
        self.sync = SyncMonitor(daemon_sync_config(config.gpsd, config.chrony_socket),
                                interval_s=config.sync_interval_s, logger=log)
        try:
            self.telemetry = open_telemetry("tx", config, ctx=ctx, per_receiver=bool(config.receivers))
        except BaseException:
            self.metrics.close()
            raise
        station = Station(bundle, self.run_id, self.journal, self.metrics, self.telemetry, self.sync,
                          plugins=plugins)
        #: The receivers, one link each, in the config's order.
        self.links: list[Link] = []
        try:
            for name, link_config in config.links():
                self.links.append(make_link(name, link_config, station.for_receiver(name), earlier))
        except BaseException:
            self._close_links()
            raise
        names = {link.name for link in self.links}
        if orphans := sorted({e.rx for e in earlier} - names):
            # Kept in the journal, not recalled: the receiver may come back to the config.
            log.warning("journal_receivers_unknown", receivers=orphans,
                        entries=sum(e.rx in orphans for e in earlier))
        if len(self.links) > 1:
            for link in self.links:
                link.hello_timeout_fatal = False  # TX's own, checked in ``_check_links``
        #: The links given up (logged once each) while others went on.
        self._given_up: set[str] = set()
        self._hello_fatal: str | None = None
        self._started_ns = 0
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
        """The first receiver (the one of a one-receiver TX)."""
        return self.links[0]

    @property
    def offset(self) -> OffsetEstimate | None:
        return self.link.offset

    @property
    def fatal(self) -> str | None:
        """Why TX stops (no receiver can go on, or none answered in time), None: it goes on."""
        if self._hello_fatal:
            return self._hello_fatal
        if not all(link.fatal for link in self.links):
            return None
        if len(self.links) == 1:
            return self.link.fatal
        return "; ".join(f"{link.name}: {link.fatal}" for link in self.links)

    def live(self) -> list[Link]:
        """The links not given up."""
        return [link for link in self.links if not link.fatal]

    def target(self, rx: str | None) -> list[Link]:
        """The links a control request names (None: all); ``ConfigError`` for an unknown name."""
        if rx is None:
            return list(self.links)
        for link in self.links:
            if link.name == rx:
                return [link]
        raise ConfigError(f"unknown receiver {rx!r}: expected one of {', '.join(link.name for link in self.links)}")

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
        """Every receiver not given up has had all its batches scored (none left: not finished)."""
        live = self.live()
        return bool(live) and all(link.finished() for link in live)

    def run(self, stop: StopFlag) -> int:
        for link in self.links:
            rx = {} if len(self.links) == 1 else {"rx": link.name}
            log.info("tx_start", run=self.run_id, endpoint=link.endpoint, control=self.control_endpoint,
                     curve=self.config.security.enabled, journal=self.journal.path and str(self.journal.path),
                     recalling=len(link.recalls), bundle=self.bundle.hash[:12], dataset=self.dataset.name,
                     **rx, **link.plan.as_dict())
        self.begin(monotonic_ns())
        self.sync.refresh()
        start_monitor_thread(self.sync, lambda: bool(stop))
        while not stop and not self.fatal and not self.finished():
            self.telemetry.heartbeat(self.monitor_status)
            if self.step(monotonic_ns()):
                continue
            if self.fatal:
                break
            self._poll()
        return self._finish(stop)

    def begin(self, now: int) -> None:
        """The loop starts: the receivers have ``hello_timeout_s`` from ``now`` to answer."""
        self._started_ns = now
        for link in self.links:
            link.begin(now)

    def step(self, now: int) -> bool:
        """Every live link does its due work; True if one built a batch (it may have more at once)."""
        built = [link.work(now) for link in self.live()]
        self._check_links(now)
        return any(built)

    def _check_links(self, now: int) -> None:
        """Log a link given up while others go on; with several, TX's own hello timeout."""
        for link in self.links:
            if link.fatal and link.name not in self._given_up and len(self.links) > 1:
                self._given_up.add(link.name)
                log.error("rx_given_up", rx=link.name, reason=link.fatal, others=len(self.live()))
                self.telemetry.event("rx_given_up", rx=link.name, reason=link.fatal)
        timeout = self.config.hello_timeout_s
        if (len(self.links) > 1 and timeout and not any(link.answered for link in self.links)
                and now - self._started_ns > timeout * NS_PER_S):
            endpoints = ", ".join(f"{link.name} ({link.endpoint})" for link in self.links)
            self._hello_fatal = f"no receiver answered within {timeout:g} s: {endpoints}"

    def _poll(self) -> None:
        """Wait up to ``POLL_MS`` for a control request or a reply, and handle what came."""
        # Polled afresh each time: a link's socket changes when its wire is rebuilt.
        live = self.live()
        sockets = [self.control, *(link.socket for link in live if link.socket is not None)]
        ready = {sock for sock, _ in zmq.zmq_poll([(sock, zmq.POLLIN) for sock in sockets], POLL_MS)}
        if self.control in ready:
            self._serve_control()
        for link in live:
            # A wire with no socket (the in-memory twin) is read each time: recv is a queue's.
            if link.socket is None or link.socket in ready:
                link.drain()

    def _finish(self, stop: StopFlag) -> int:
        summary = self.status()
        unacknowledged = sum(len(link.inflight) for link in self.links)
        given_up = {} if len(self.links) == 1 else {"given_up": sorted(self._given_up)}
        self.telemetry.event("stopped", finished=self.finished(), fatal=self.fatal, signal=stop.signal,
                             acked=summary["acked"], lost=summary["lost"], unacknowledged=unacknowledged,
                             **given_up)
        if self.fatal:
            log.error("tx_fatal", reason=self.fatal, **summary)
            return EXIT_FATAL
        log.info("tx_stopped", signal=stop.signal, unacknowledged=unacknowledged, **given_up,
                 **{k: v for k, v in summary.items() if k != "receivers"})
        return EXIT_OK

    # -- control and status --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The one receiver's figures (several: their sums, and a ``receivers`` map), then TX's own."""
        refused = 0 if self.control_guard is None else self.control_guard.refused
        links = self.link.status() if len(self.links) == 1 else self._summed()
        return {**links, "control_refused": refused, "refused": {"control": refused, "monitor": self.telemetry.refused}}

    def _summed(self) -> dict[str, Any]:
        each = [link.status() for link in self.links]
        out = dict(each[0])
        for key, value in each[0].items():
            if isinstance(value, int) and not isinstance(value, bool) and key != "next_batch":
                out[key] = sum(s[key] for s in each)
        scored = [(s["accuracy"], s["acked"]) for s in each if s["accuracy"] is not None and s["acked"]]
        out.update(rx_ready=all(s["rx_ready"] for s in each), paused=all(s["paused"] for s in each),
                   next_batch=min(s["next_batch"] for s in each),
                   accuracy=sum(a * n for a, n in scored) / sum(n for _, n in scored) if scored else None,
                   receivers={link.name: s for link, s in zip(self.links, each, strict=True)})
        return out

    def receivers(self) -> dict[str, dict[str, Any]]:
        """Each receiver's figures, plan and endpoint, by name."""
        return {link.name: {**link.status(), "given_up": link.fatal, "plan": link.plan.as_dict(),
                            "endpoint": link.endpoint} for link in self.links}

    def monitor_status(self) -> dict[str, Any]:
        """TX's state for the monitor stream: the plan the next batch is built with, and clock sync."""
        one = {"rx": self.link.name} if len(self.links) == 1 else {}
        return {**self.status(), "plan": self.link.plan.as_dict(), "control": self.control_endpoint,
                "endpoint": self.link.endpoint, **sync_fields(self.sync.current()), **one,
                "receivers": self.receivers()}

    def apply(self, req: ControlRequest) -> dict[str, Any]:
        """Apply a control command to the receiver it names, or to all; from the next batch built.

        The reply names the receiver (``rx``, a list for several) and carries each one's own
        reply in ``receivers`` (with its ``status`` where the command reports status); a
        command for several is ok only if every one took it (each that did keeps it).
        """
        links = self.target(req.rx)
        own: dict[str, dict[str, Any]] = {}
        for link in links:
            try:
                reply = apply(link, req, link.status)
            except SemalignError as exc:
                if len(links) == 1:
                    raise
                reply = {"ok": False, "error": str(exc), "plan": link.plan.as_dict()}
            reply.pop("v", None)
            own[link.name] = reply
        status = {"status": self.status()} if TABLE[req.cmd].reports_status else {}
        if len(links) == 1:
            ((name, reply),) = own.items()
            return make_reply(**{**reply, **status, "rx": name, "receivers": own})
        failed = [f"{name}: {r['error']}" for name, r in own.items() if not r["ok"]]
        message = "; ".join(f"{name}: {r['message']}" for name, r in own.items() if r["ok"])
        return make_reply(not failed, error="; ".join(failed) or None, message=message,
                          rx=[link.name for link in links], receivers=own, **status)

    def _serve_control(self) -> None:
        """Answer one control request; whatever it holds, it costs that request only."""
        try:
            frames = self.control.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return
        # ROUTER framing: [identity, (REQ's empty delimiter), body...]; the route goes back as it came.
        split = frames.index(b"", 1) + 1 if b"" in frames[1:] else 1
        route, body = frames[:split], frames[split:]
        reply, frame = self._answer(body)
        try:
            self.control.send_multipart([*route, frame], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.counters["control_reply_dropped"] += 1
            log.warning("control_reply_dropped", detail=str(exc))
        self.telemetry.event("control", **reply)
        self.telemetry.status(self.monitor_status())

    def _answer(self, body: list[bytes]) -> tuple[dict[str, Any], bytes]:
        """The reply to a request's body frames, as a mapping (telemetry's) and encoded once (the client's)."""
        try:
            if len(body) != 1:
                raise EnvelopeError(f"expected a 1-frame control request, got {len(body)} frames")
            reply = self.apply(ControlRequest.decode(body[0]))
            return reply, encode_reply(reply)  # one that cannot be encoded is our bug, answered below
        except SemalignError as exc:
            self.counters["control_errors"] += 1
            log.warning("control_rejected", detail=str(exc))
            one = {"rx": self.link.name} if len(self.links) == 1 else {}
            reply = make_reply(False, error=str(exc), plan=self.link.plan.as_dict(), **one)
        except Exception as exc:  # a bug of ours: answered, logged with its traceback, TX goes on
            self.counters[InternalError.code] += 1
            log.error(InternalError.code, detail=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            reply = make_reply(False, error="internal error: TX failed on this request (see its log)")
        return reply, encode_reply(reply)
