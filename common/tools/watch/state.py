"""What the watcher knows: the link header, per-batch histories, events and liveness of TX and RX.

Fed one ``MonitorMessage`` at a time; every field read from a message is untrusted and
checked (a wrong type shows as "-", never as an exception). TX's rows are kept per receiver
(each link numbers its own batches); the header, plots and table follow the selected one.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from common.errors import MonitorError
from common.telemetry.stream import MonitorMessage, number

if TYPE_CHECKING:
    from common.tools.watch.source import Refusal

#: Batches kept for the plots and the table.
HISTORY = 60
#: Event lines kept.
EVENTS = 200
#: A daemon silent this long is shown as absent (it sends a status every second).
STALE_S = 3.5
#: Control replies remembered to tell TX's echo of this watcher's own request from another operator's.
OWN_REPLIES = 16
#: Transports with a radio (real or simulated): only these report SNR, frames lost and a constellation.
RADIO_TRANSPORTS = ("sim", "pluto")
#: Receivers kept apart at most (names beyond are counted as bad messages), and a name's length.
MAX_RECEIVERS = 32
MAX_RX_CHARS = 64


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass
class Peer:
    """One daemon's monitor stream as seen from here."""

    role: str
    endpoint: str
    last_seen_s: float | None = None
    last_seq: int = 0
    restarts: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    #: Why the daemon refused this watcher's handshake (None: it did not), and when that was seen.
    refusal: Refusal | None = None
    refused_at_s: float = 0.0

    def alive(self, now_s: float) -> bool:
        return self.last_seen_s is not None and now_s - self.last_seen_s < STALE_S

    def describe(self, now_s: float) -> str:
        name = self.role.upper()
        if self.refusal is not None:
            retry = self.refusal.retry_s
            when = ("" if retry is None
                    else f"; trying again in {max(0.0, retry - (now_s - self.refused_at_s)):.0f} s")
            return f"refused by {name} at {self.endpoint}: {self.refusal.reason}{when}"
        if self.last_seen_s is None:
            return f"waiting for {name} at {self.endpoint}"
        if not self.alive(now_s):
            return f"waiting for {name} at {self.endpoint} (silent for {now_s - self.last_seen_s:.0f} s)"
        return f"{name} live at {self.endpoint}"


@dataclass(frozen=True)
class Event:
    """One line of the event pane; ``level`` is info, warning or error."""

    text: str
    level: str = "info"
    #: Which line this is, so a request's line can take its reply's text in place.
    ident: int = 0


class WatchState:
    def __init__(self, tx_endpoint: str, rx_endpoint: str | None = None) -> None:
        self.tx = Peer("tx", tx_endpoint)
        self.rx = Peer("rx", rx_endpoint) if rx_endpoint else None
        #: TX's metrics rows by receiver, then by batch (the last ``HISTORY`` of each); "" holds
        #: the rows of a TX that does not name its receiver.
        self.tables: dict[str, collections.OrderedDict[int, dict[str, Any]]] = {}
        #: The receiver the screen follows and the keys steer (None: the first one).
        self.selected: str | None = None
        #: RX's rows by batch (SNR and frames lost when TX's row lacks them).
        self.rx_batches: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self.events: collections.deque[Event] = collections.deque(maxlen=EVENTS)
        self.constellation: tuple[int, str | None, npt.NDArray[np.complex64]] | None = None
        self.bad_messages = 0
        self.version = 0  # bumped on every change the screen should show
        self._next_ident = 0
        #: Replies to this watcher's requests, kept until TX's echo of each on the stream is met;
        #: and the lines of echoes shown before the reply came (then taken back).
        self._own: collections.deque[str] = collections.deque(maxlen=OWN_REPLIES)
        self._echoes: collections.OrderedDict[str, int] = collections.OrderedDict()

    # -- input -----------------------------------------------------------------------
    def apply(self, msg: MonitorMessage, now_s: float) -> None:
        peer = self.tx if msg.role == "tx" else self.rx
        if peer is None:
            return
        if peer.last_seen_s is not None and msg.seq < peer.last_seq:
            peer.restarts += 1
            self.add(f"{peer.role.upper()} restarted", "warning")
        elif peer.last_seen_s is not None and not peer.alive(now_s):
            self.add(f"{peer.role.upper()} back at {peer.endpoint}")
        peer.last_seen_s, peer.last_seq = now_s, msg.seq
        self.version += 1
        if msg.topic == "status":
            peer.status = msg.data
        elif msg.topic == "record":
            self._record(msg.role, msg.data)
        elif msg.topic == "event":
            self._event(msg.role, msg.data)
        elif msg.topic == "constellation":
            try:
                points = msg.symbols()
            except MonitorError:
                self.bad_messages += 1
                return
            batch = msg.data.get("batch")
            modulation = msg.data.get("modulation")
            self.constellation = (batch if isinstance(batch, int) else -1,
                                  modulation if isinstance(modulation, str) else None, points)

    def tick(self, now_s: float) -> bool:
        """Whether time changed the picture (a daemon went silent, a refusal's retry counts down)."""
        return any(p is not None and ((p.last_seen_s is not None and not p.alive(now_s)) or p.refusal is not None)
                   for p in (self.tx, self.rx))

    def refused(self, refusals: Mapping[str, Refusal], now_s: float) -> None:
        """The source's refusals by endpoint: a new reason is an event, an admission too."""
        for peer in (self.tx, self.rx):
            if peer is None:
                continue
            refusal = refusals.get(peer.endpoint)
            if refusal == peer.refusal:
                continue
            name = peer.role.upper()
            if refusal is None:
                self.add(f"{name} at {peer.endpoint} admitted this watcher")
            elif peer.refusal is None or refusal.reason != peer.refusal.reason:
                self.add(f"refused by {name} at {peer.endpoint}: {refusal.reason}", "error")
            peer.refusal, peer.refused_at_s = refusal, now_s
            self.version += 1

    def _record(self, role: str, data: dict[str, Any]) -> None:
        batch = data.get("batch")
        if not isinstance(batch, int):
            self.bad_messages += 1
            return
        if role == "tx":
            name = _rx_name(data)
            if name not in self.tables and len(self.tables) >= MAX_RECEIVERS:
                self.bad_messages += 1
                return
            table = self.tables.setdefault(name, collections.OrderedDict())
        else:
            table = self.rx_batches
        table[batch] = data
        table.move_to_end(batch)
        while len(table) > HISTORY:
            table.popitem(last=False)
        if role == "tx" and data.get("status") == "lost":
            self.add(f"batch {batch}{self._to(data)} lost: {_text(data.get('reason'))}", "error")

    def _to(self, data: Mapping[str, Any]) -> str:
        """" to NAME" for a line about one receiver when TX has several ("" with one)."""
        name = _rx_name(data)
        return f" to {name}" if name and self.multi() else ""

    def _event(self, role: str, data: Mapping[str, Any]) -> None:
        name = data.get("name")
        who = role.upper() + (self._to(data) if role == "tx" else "")
        if name == "control":
            echo = _fingerprint(data)
            if echo in self._own:
                self._own.remove(echo)  # this watcher's own request: its line is already there
                return
            if data.get("ok"):
                plan = _map(data.get("plan"))
                self.add(f"{who} control: {_text(data.get('message'))}" + _plan_text(plan))
            else:
                self.add(f"{who} control refused: {_text(data.get('error'))}", "warning")
            self._echoes[echo] = self.events[-1].ident
            while len(self._echoes) > OWN_REPLIES:
                self._echoes.popitem(last=False)
        elif name == "resend":
            what = f"batch {data['batch']} attempt {_text(data.get('attempt'))}" if "batch" in data else _text(data.get("detail"))
            self.add(f"{who} resend: {what}", "warning")
        elif name == "rejected":
            self.add(f"{who} rejected [{_text(data.get('code'))}] batch {_text(data.get('batch'))}: "
                     f"{_text(data.get('detail'))}", "error")
        elif name == "amc":
            plan = _map(data.get("plan"))
            self.add(f"{who} AMC: SNR {_fmt(number(data.get('snr_db')), '.1f')} dB after batch "
                     f"{_text(data.get('after_batch'))}: {_text(data.get('was'))} -> {_text(plan.get('modulation'))} "
                     f"from batch {_text(data.get('from_batch'))}" + _plan_text(plan))
        elif name == "rx_unreachable":
            self.add(f"{who}: RX unreachable at {_text(data.get('endpoint'))} "
                     f"({_text(data.get('unacknowledged'))} batches unacknowledged)", "warning")
        elif name == "stopped":
            counts = (f"{_text(data.get('acked'))} batches acknowledged, {_text(data.get('lost'))} lost, "
                      f"{_text(data.get('unacknowledged'))} unacknowledged")
            if data.get("fatal"):
                self.add(f"{who} stopped: {_text(data.get('fatal'))} ({counts})", "error")
            elif data.get("finished"):
                self.add(f"{who} finished: {counts}")
            else:
                signal = data.get("signal")
                self.add(f"{who} stopped" + ("" if signal is None else f" (signal {_text(signal)})") + f": {counts}",
                         "warning")
        else:
            self.add(f"{who} {_text(name)}: " + ", ".join(f"{k}={_text(v)}" for k, v in data.items() if k != "name"))

    def add(self, text: str, level: str = "info") -> int:
        """Append an event line; returns its ident (for ``replace``)."""
        self._next_ident += 1
        self.events.append(Event(text, level, self._next_ident))
        self.version += 1
        return self._next_ident

    def replace(self, ident: int, text: str, level: str = "info") -> None:
        """Give line ``ident`` a new text (a request's line its reply); appended if it fell off."""
        for i, event in enumerate(self.events):
            if event.ident == ident:
                self.events[i] = replace(event, text=text, level=level)
                self.version += 1
                return
        self.add(text, level)

    def own_reply(self, reply: Mapping[str, Any]) -> None:
        """This watcher's request was answered: TX's echo of it on the stream adds no second line."""
        echo = _fingerprint(reply)
        shown = self._echoes.pop(echo, None)
        if shown is not None:  # the echo came first: its line goes, the request's line says it
            self.events = collections.deque((e for e in self.events if e.ident != shown), maxlen=EVENTS)
            self.version += 1
        else:
            self._own.append(echo)

    # -- receivers ---------------------------------------------------------------------
    def receivers(self) -> list[str]:
        """TX's receivers by name: those its status lists, in its order, then those only rows named."""
        names = [k for k in _map(self.tx.status.get("receivers")) if isinstance(k, str)][:MAX_RECEIVERS]
        return names + [k for k in self.tables if k not in names]

    def multi(self) -> bool:
        """Whether TX serves several receivers (then the screen has a receivers table)."""
        return len(self.receivers()) > 1

    def current(self) -> str:
        """The receiver the screen follows: the selected one, else the first ("" if none is known)."""
        names = self.receivers()
        if self.selected in names:
            return self.selected
        return names[0] if names else ""

    def select(self, name: str) -> None:
        if name != self.current():
            self.selected = name
            self.version += 1

    def select_next(self, step: int = 1) -> None:
        names = self.receivers()
        if names:
            self.select(names[(names.index(self.current()) + step) % len(names)])

    def target(self) -> str | None:
        """The ``rx`` a steering request names: the selected receiver with several, None with one."""
        return self.current() if self.multi() else None

    def receiver_status(self, name: str) -> Mapping[str, Any]:
        """One receiver's figures and plan from TX's status (its ``receivers`` map)."""
        return _map(_map(self.tx.status.get("receivers")).get(name))

    def receiver_rows(self, gate_spec: str = "+.3f") -> list[dict[str, str]]:
        """One row per receiver: its plan, counts, last accuracy and its last batch's alignment."""
        rows = []
        for name in self.receivers():
            status = self.receiver_status(name)
            plan = _map(status.get("plan"))
            table = self.tables.get(name)
            last = next(reversed(table.values()), {}) if table else {}
            accuracy = number(last.get("accuracy"))
            accuracy = number(status.get("accuracy")) if accuracy is None else accuracy
            gate = number(last.get("gate"))
            rows.append({
                "rx": name or "-", "modulation": _text(plan.get("modulation", last.get("modulation"))),
                "alpha": _text(plan.get("alpha", last.get("alpha"))), "B_max": _text(plan.get("b_max", last.get("b_max"))),
                "N_max": _text(plan.get("n_max", last.get("n_max"))),
                "value type": _text(plan.get("value_type", last.get("value_type"))),
                "acked/lost": f"{_text(status.get('acked'))}/{_text(status.get('lost'))}",
                "accuracy": "lost" if last.get("status") == "lost" else _fmt(accuracy, ".3f"),
                "shift": _text(last.get("shift", status.get("shift"))), "gate": _fmt(gate, gate_spec),
                "action": _text(last.get("align_action")),
                "state": "given up" if status.get("given_up") else "paused" if status.get("paused") is True else "",
            })
        return rows

    @property
    def batches(self) -> collections.OrderedDict[int, dict[str, Any]]:
        """TX's rows of the receiver the screen follows, by batch."""
        return self.tables.get(self.current(), collections.OrderedDict())

    def rx_row(self, batch: int) -> Mapping[str, Any]:
        """RX's row of ``batch``; none with several receivers (which one the watched RX is, is not said)."""
        return {} if self.multi() else self.rx_batches.get(batch, {})

    def _link_status(self) -> Mapping[str, Any]:
        """TX's status, with several receivers overlaid by the followed one's own figures and plan."""
        if not self.multi():
            return self.tx.status
        return {**self.tx.status, **self.receiver_status(self.current())}

    # -- output ----------------------------------------------------------------------
    def header(self) -> dict[str, str]:
        """The link as the header shows it (the latest of TX's status and rows, RX's status)."""
        status = self._link_status()
        plan = _map(status.get("plan"))
        last = next(reversed(self.batches.values()), {}) if self.batches else {}
        rx_status = self.rx.status if self.rx is not None else {}
        adapt = _map(rx_status.get("adapt"))
        rx_last = next(reversed(self.rx_batches.values()), {}) if self.rx_batches else {}
        policy = adapt.get("policy") or last.get("policy") or rx_last.get("policy")
        mode = adapt.get("mode") or last.get("adapt")
        bound = number(last.get("latency_comm_bound_s"))
        basis = last.get("comm_basis")
        sync = f"TX {_text(status.get('sync_source'))}"
        if rx_status:
            sync += f", RX {_text(rx_status.get('sync_source'))}"
        if basis is not None:
            sync += f"; B-A {basis}" + (f" ± {bound * 1e3:.2f} ms" if bound is not None else ", no bound")
        return {
            "modulation": _text(plan.get("modulation", last.get("modulation"))),
            "alpha": _text(plan.get("alpha", last.get("alpha"))),
            "B_max": _text(plan.get("b_max", last.get("b_max"))),
            "N_max": _text(plan.get("n_max", last.get("n_max"))),
            "value type": _text(plan.get("value_type", last.get("value_type"))),
            "alpha policy": _text(status.get("policy")),
            "alignment": f"{_text(mode)}/{_text(policy)}" if policy else _text(mode),
            "shift": _text(status.get("shift", last.get("shift"))),
            "link": _text(status.get("link_policy")) + (" (paused)" if status.get("paused") else ""),
            "transport": _text(status.get("transport", last.get("transport"))),
            "clock sync": sync,
        }

    def series(self, key: str, *, rx_fallback: bool = False) -> tuple[list[int], list[float]]:
        """(batches, values) of a numeric record field over the history, gaps left out."""
        xs, ys = [], []
        for batch, row in self.batches.items():
            value = number(row.get(key))
            if value is None and rx_fallback:
                value = number(self.rx_row(batch).get(key))
            if value is not None:
                xs.append(batch)
                ys.append(value)
        return xs, ys

    def radio(self) -> bool:
        """Whether the link has a radio: SNR, frames lost and a constellation are to be expected."""
        transport = self.tx.status.get("transport")
        if transport is None and self.batches:
            transport = next(reversed(self.batches.values())).get("transport")
        return transport in RADIO_TRANSPORTS or self.constellation is not None

    def paused(self) -> bool:
        return bool(self._link_status().get("paused"))

    def control_endpoint(self) -> str | None:
        """TX's control endpoint as announced, its wildcard host replaced by the monitor's host."""
        announced = self.tx.status.get("control")
        if not isinstance(announced, str):
            return None
        scheme, _, rest = announced.partition("://")
        host, _, port = rest.rpartition(":")
        if scheme == "tcp" and host in ("0.0.0.0", "*", "[::]", "::"):
            mon_host = self.tx.endpoint.partition("://")[2].rpartition(":")[0]
            return f"tcp://{mon_host}:{port}"
        return announced


def _fingerprint(reply: Mapping[str, Any]) -> str:
    """A control reply as a comparable string (the stream's echo carries the reply plus its name)."""
    return json.dumps({k: v for k, v in reply.items() if k != "name"}, sort_keys=True, default=str)


def _rx_name(data: Mapping[str, Any]) -> str:
    """The receiver a row or event names ("" if none, or not a name)."""
    name = data.get("rx")
    return name if isinstance(name, str) and 0 < len(name) <= MAX_RX_CHARS else ""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _plan_text(plan: Mapping[str, Any]) -> str:
    if not plan:
        return ""
    return (f" (B_max={_text(plan.get('b_max'))} alpha={_text(plan.get('alpha'))} "
            f"N_max={_text(plan.get('n_max'))})")
