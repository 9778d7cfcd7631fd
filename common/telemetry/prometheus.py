"""The Prometheus exporter: every metric a daemon serves on ``/metrics``, fed by its telemetry.

``METRICS`` is the one list of exported names (the Grafana dashboard's queries are checked
against it). Each daemon has its own registry, so tests can run several in one process. A TX
with ``receivers:`` labels every per-batch metric with the receiver's name (``rx``, from the
record's field); a TX with one ``endpoint`` and RX export them unlabelled, as they always have.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import prometheus_client as prom

from common.modulation import Modulation
from common.telemetry.metrics_server import MetricsServer
from common.telemetry.stream import number

#: Latency histogram buckets (seconds), 0.5 ms to 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: The record fields behind each latency histogram.
HISTOGRAMS = {
    "semalign_latency_comm_seconds": ("latency_comm_s", "Communication latency B - A per batch"),
    "semalign_latency_finetune_seconds": ("latency_finetune_s", "Fine-tuning time C per batch"),
    "semalign_latency_classify_seconds": ("latency_classify_s", "Classification time D per batch"),
    "semalign_latency_e2e_seconds": ("latency_e2e_s", "End-to-end latency (B - A) + C + D per batch"),
}
#: Gauges: name -> help.
GAUGES = {
    "semalign_bits_per_symbol": "Bits per symbol of the last batch's modulation",
    "semalign_alpha": "PCA coefficients per vector of the last batch",
    "semalign_n_max": "Training vectors that fit in B_max for the last batch (TX)",
    "semalign_snr_db": "RX's Es/N0 estimate of the last batch (sim and pluto transports)",
    "semalign_sync_bound_seconds": "Error bound of the last batch's comm latency (NaN: unsynchronised)",
    "semalign_adapter_bank_entry": "Alpha of the adapter bank entry RX started from (NaN: none)",
    "semalign_accuracy": "Accuracy of the last scored batch (TX)",
}
#: Counters: name (without the _total the exposition adds) -> (help, labels).
COUNTERS = {
    "semalign_batches": ("Batches by outcome (ok, lost)", ("status",)),
    "semalign_rejected": ("Messages rejected, by error code", ("code",)),
    "semalign_resends": ("Batches sent again (TX) or answered again from the cache (RX)", ()),
    "semalign_frames_lost": ("Radio frames without a CRC-good copy", ()),
    "semalign_vectors_lost": ("Vectors lost with those frames", ()),
    "semalign_control": ("Control requests, by result (ok, refused)", ("result",)),
    "semalign_monitor_dropped": ("Monitor stream messages dropped at the high-water mark", ()),
    "semalign_refused": ("Peers refused by an allow-list, by socket (data, control, monitor)", ("domain",)),
}
#: Counters of one receiver's batches (labelled ``rx`` per receiver); the rest are the daemon's.
PER_RECEIVER = ("semalign_batches", "semalign_rejected", "semalign_resends", "semalign_frames_lost",
                "semalign_vectors_lost")
_BITS: dict[str, float] = {m.value: float(m.bits_per_symbol) for m in Modulation}
#: Every metric family name as the exposition shows it.
METRICS = (
    *(f"{name}_total" for name in COUNTERS),
    *HISTOGRAMS,
    *GAUGES,
)


class Exporter:
    """The metrics of one daemon, updated from its records and events."""

    def __init__(self, registry: prom.CollectorRegistry | None = None, *, per_receiver: bool = False) -> None:
        self.registry = registry or prom.CollectorRegistry()
        #: Label per receiver (``rx``), or none.
        self._rx: tuple[str, ...] = ("rx",) if per_receiver else ()
        self.counters = {
            name: prom.Counter(name, help_, labelnames=labels + (self._rx if name in PER_RECEIVER else ()),
                               registry=self.registry)
            for name, (help_, labels) in COUNTERS.items()
        }
        self.histograms = {
            name: prom.Histogram(name, help_, labelnames=self._rx, buckets=LATENCY_BUCKETS, registry=self.registry)
            for name, (_, help_) in HISTOGRAMS.items()
        }
        self.gauges = {name: prom.Gauge(name, help_, labelnames=self._rx, registry=self.registry)
                       for name, help_ in GAUGES.items()}
        #: The receivers whose gauges exist (each starts NaN: nothing known yet).
        self._receivers: set[str] = set()
        if not per_receiver:
            for gauge in self.gauges.values():
                gauge.set(float("nan"))
        self._server: MetricsServer | None = None
        self._dropped = 0
        self._refused: dict[str, int] = {}
        #: The port ``serve`` bound (useful with port 0).
        self.port: int | None = None

    def _labels(self, fields: Mapping[str, Any]) -> dict[str, str]:
        """The ``rx`` label of a record or event (none when not per receiver)."""
        if not self._rx:
            return {}
        rx = str(fields.get("rx", ""))
        if rx not in self._receivers:
            self._receivers.add(rx)
            for gauge in self.gauges.values():
                gauge.labels(rx=rx).set(float("nan"))
        return {"rx": rx}

    def _gauge(self, name: str, rx: Mapping[str, str]) -> Any:
        return self.gauges[name].labels(**rx) if rx else self.gauges[name]

    def observe_record(self, record: Mapping[str, Any]) -> None:
        rx = self._labels(record)
        status = str(record.get("status", "ok"))
        self.counters["semalign_batches"].labels(status=status, **rx).inc()
        if status != "ok":
            return
        for key, counter in (("frames_lost", "semalign_frames_lost"), ("vectors_lost", "semalign_vectors_lost")):
            value = number(record.get(key))
            if value and value > 0:
                (self.counters[counter].labels(**rx) if rx else self.counters[counter]).inc(value)
        for name, (key, _) in HISTOGRAMS.items():
            value = number(record.get(key))
            if value is not None:
                (self.histograms[name].labels(**rx) if rx else self.histograms[name]).observe(value)
        bits = _BITS.get(str(record.get("modulation")))
        bound = record.get("latency_comm_bound_s")
        bank = record.get("bank_entry", record.get("bank_alpha"))
        for name, value in (
            ("semalign_bits_per_symbol", bits),
            ("semalign_alpha", number(record.get("alpha"))),
            ("semalign_n_max", number(record.get("n_max"))),
            ("semalign_snr_db", number(record.get("snr_db"))),
            ("semalign_accuracy", number(record.get("accuracy"))),
        ):
            if value is not None:
                self._gauge(name, rx).set(value)
        self._gauge("semalign_sync_bound_seconds", rx).set(_or_nan(number(bound)))
        if "bank_entry" in record or "bank_alpha" in record:
            self._gauge("semalign_adapter_bank_entry", rx).set(_or_nan(number(bank)))

    def observe_event(self, name: str, fields: Mapping[str, Any]) -> None:
        if name == "rejected":
            self.counters["semalign_rejected"].labels(code=str(fields.get("code", "error")), **self._labels(fields)).inc()
        elif name == "resend":
            rx = self._labels(fields)
            (self.counters["semalign_resends"].labels(**rx) if rx else self.counters["semalign_resends"]).inc()
        elif name == "control":
            self.counters["semalign_control"].labels(result="ok" if fields.get("ok") else "refused").inc()

    def observe_status(self, status: Mapping[str, Any]) -> None:
        """Gauges a status knows before any batch: the plan's figures."""
        refused = status.get("refused")
        if isinstance(refused, Mapping):
            self.set_refused({str(k): int(v) for k, v in refused.items() if isinstance(v, int)})
        receivers = status.get("receivers")
        if self._rx and isinstance(receivers, Mapping):
            plans = [(self._labels({"rx": name}), each.get("plan")) for name, each in receivers.items()
                     if isinstance(each, Mapping)]
        else:
            plans = [({}, status.get("plan"))]
        for rx, plan in plans:
            if not isinstance(plan, Mapping):
                continue
            for key, gauge in (("alpha", "semalign_alpha"), ("n_max", "semalign_n_max")):
                value = number(plan.get(key))
                if value is not None:
                    self._gauge(gauge, rx).set(value)

    def set_dropped(self, dropped: int) -> None:
        if dropped > self._dropped:
            self.counters["semalign_monitor_dropped"].inc(dropped - self._dropped)
            self._dropped = dropped

    def serve(self, port: int, addr: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None,
              max_connections: int = 8) -> int:
        """Serve ``/metrics`` on ``addr:port`` (HTTPS with ``tls``); returns the bound port.

        A bounded server (``metrics_server``): at most ``max_connections`` at a time, each with a deadline.
        """
        self._server = MetricsServer(self.registry, addr, port, max_connections=max_connections, tls=tls)
        self.port = self._server.port
        return self.port

    def set_refused(self, refused: Mapping[str, int]) -> None:
        """Peers the allow-lists turned away so far, by domain (data, control, monitor)."""
        for domain, count in refused.items():
            seen = self._refused.get(domain, 0)
            if count > seen:
                self.counters["semalign_refused"].labels(domain=domain).inc(count - seen)
                self._refused[domain] = count

    def exposition(self) -> str:
        return prom.generate_latest(self.registry).decode()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value
