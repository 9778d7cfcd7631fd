"""The RX daemon: a ROUTER socket whose every message is answered by ``BatchHandler``.

One thread, one loop: receive, handle, reply, write the batch's metrics row. The loop
carries on whatever one message held; ``rx.handler`` turns bad input into typed errors.
"""

from __future__ import annotations

import functools
import secrets
from collections import Counter
from dataclasses import asdict
from typing import Any

import zmq
from threadpoolctl import threadpool_limits

from common.clock import realtime_ns
from common.errors import Unreachable
from common.log import get_logger
from common.metrics import MetricsWriter
from common.ml.bundle import Bundle
from common.runtime import StopFlag
from common.telemetry import open_telemetry, sync_fields
from common.timesync import SyncMonitor, daemon_sync_config, start_monitor_thread
from common.transport.base import BearerSettings, open_receivers
from common.transport.zmq import Context, RouterWire
from common.wire import messages
from rx.config import RxConfig
from rx.handler import BatchHandler
from rx.pipeline import Receiver

log = get_logger("semalign.rx")

#: How long one poll waits before the stop flag is checked again.
POLL_MS = 100


class RxDaemon:
    def __init__(self, config: RxConfig, bundle: Bundle, *, ctx: Context | None = None) -> None:
        self.config = config
        self.bundle = bundle
        self.receiver = Receiver(bundle, config.adapt, threads=config.threads)
        max_msg = config.max_message_bytes
        # The zmq limit sits above ours so messages between the two get a typed error reply.
        self.wire = RouterWire(ctx or zmq.Context.instance(), config.bind,
                               max_msg=2 * max_msg + messages.MAX_META_BYTES, security=config.security)
        #: One id per daemon start, in every metrics record: restarts are told apart.
        self.run_id = secrets.token_hex(6)
        self.endpoint = self.wire.endpoint
        self.metrics = MetricsWriter(config.metrics_out, tags={"run": self.run_id})
        self.bearers = open_receivers(BearerSettings(pluto=config.pluto, max_payload_bytes=max_msg))
        # The demodulator's matched filter and the small reconstruct matmuls gain nothing from
        # BLAS threads on this workload and suffer from contention with torch's.
        threadpool_limits(1)
        self.sync = SyncMonitor(daemon_sync_config(config.gpsd, config.chrony_socket),
                                interval_s=config.sync_interval_s, logger=log)
        self.telemetry = open_telemetry("rx", config, ctx=ctx)
        self.handler = BatchHandler(bundle, self.receiver, self.bearers, self.sync.current,
                                    max_message_bytes=max_msg)

    @property
    def counters(self) -> Counter[str]:
        return self.handler.counters

    def close(self) -> None:
        for bearer in self.bearers.values():
            bearer.close()
        self.wire.close()
        self.metrics.close()
        self.telemetry.close()

    def monitor_status(self) -> dict[str, Any]:
        """RX's state for the monitor stream: adaptation settings and clock sync."""
        return {"endpoint": self.endpoint, "adapt": asdict(self.config.adapt), "dims": self.bundle.dims,
                "bundle": self.bundle.hash[:12], **sync_fields(self.sync.current()), "counters": dict(self.counters)}

    def run(self, stop: StopFlag) -> None:
        warm_s = self.receiver.warm_up()
        self.sync.refresh()
        start_monitor_thread(self.sync, lambda: bool(stop))
        log.info("rx_ready", run=self.run_id, curve=self.config.security.enabled,
                 warm_up_s=round(warm_s, 3), endpoint=self.endpoint, bundle=self.bundle.hash[:12],
                 dataset=self.bundle.meta.dataset, dims=self.bundle.dims,
                 adapt=self.config.adapt.mode.value, threads=self.config.threads)
        while not stop:
            self.telemetry.heartbeat(self.monitor_status)
            if not self.wire.poll(POLL_MS):
                continue
            peer, frames = self.wire.recv()
            received_ns = realtime_ns()  # t2 of a clock probe
            handled = self.handler.handle(frames, received_ns=received_ns,
                                          notify=functools.partial(self.wire.reply, peer))
            if handled.record is not None:
                self.metrics.write(handled.record)
                self.telemetry.record(handled.record, constellation=handled.constellation)
                # Every figure: one row on a TTY, all of it in JSON off one (common.log).
                log.info("batch", comm=handled.comm, **handled.record)
            if handled.error is not None:
                self.telemetry.event("rejected", code=handled.error.code, batch=handled.error.batch_id,
                                     detail=str(handled.error))
            elif handled.duplicate:
                self.telemetry.event("resend", detail="resent batch answered from the report cache")
            try:
                self.wire.reply(peer, handled.reply)
            except Unreachable:
                self.counters["reply_dropped"] += 1
                log.warning("reply_dropped", reason="peer gone or send queue full")
        log.info("rx_stopped", signal=stop.signal, counters=dict(self.counters), refused=self.wire.refused)
