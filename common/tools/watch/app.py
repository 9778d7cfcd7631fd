"""The Textual application of ``semalign watch``: header, live plots, batch table, events, steering keys.

It polls its ``Source`` ten times a second (never blocking), redraws what changed, and sends
control requests to TX from a worker thread so a slow or absent TX never freezes the screen.
Below ``COMPACT_COLS`` x ``COMPACT_ROWS`` (an 80x24 terminal) it switches to a compact layout:
one row of plots, the table's short columns, the events under the table. A TX with several
receivers adds a receivers table; Tab or 1-9 select the one the plots, batch table and keys follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from common.errors import SemalignError
from common.modulation import Modulation
from common.telemetry.stream import number
from common.tools.watch.source import Source
from common.tools.watch.state import Event, WatchState
from common.transport.security import SecurityConfig
from tx.control import Cmd


class Control(Protocol):
    """A control request: (TX's control endpoint, command, argument) -> TX's decoded reply.

    ``rx`` (the receiver it is for) is passed only when TX has several: a one-receiver TX is
    asked exactly as before.
    """

    def __call__(self, endpoint: str, cmd: str, arg: str | int | None, *, rx: str = ...) -> dict[str, Any]: ...


POLL_S = 0.1
#: Plots are redrawn at most this often.
REDRAW_S = 0.25
#: Rows of the batch table.
TABLE_ROWS = 12
#: Below this many columns or rows the screen takes the compact layout.
COMPACT_COLS = 120
COMPACT_ROWS = 40
#: The batch table's columns: (heading, what fills it), wide and compact; SNR and frames lost
#: only on a radio transport. The alignment columns (shift, gate, action) are in both.
WIDE_COLUMNS = ("batch", "mod", "alpha", "N", "acc", "comm ms", "C ms", "D ms", "shift", "gate", "action", "status")
#: On a radio transport SNR and frames lost take the place of C and D (those stay in their plot).
WIDE_RADIO_COLUMNS = ("batch", "mod", "alpha", "N", "acc", "comm ms", "SNR dB", "fr.lost", "shift", "gate", "action",
                      "status")
#: Compact has no status column: a lost batch says "lost" in its accuracy cell.
COMPACT_COLUMNS = ("batch", "mod", "alpha", "acc", "comm ms", "shift", "gate", "action")
COMPACT_RADIO_COLUMNS = ("batch", "mod", "alpha", "acc", "comm ms", "SNR", "shift", "gate", "action")
#: Characters of a shift spec or an alignment action in the table (compact, wide).
COMPACT_TEXT = 9
WIDE_TEXT = 16
#: Header lines (groups of ``WatchState.header`` keys), and the compact header's shorter labels.
WIDE_HEADER = (("modulation", "alpha", "B_max", "N_max", "value type"),
               ("alpha policy", "alignment", "shift", "link"), ("transport", "clock sync"))
COMPACT_HEADER = (("modulation", "alpha", "B_max", "N_max", "value type"),
                  ("alpha policy", "alignment", "link", "transport"), ("shift", "clock sync"))
COMPACT_LABELS = {"modulation": "mod", "value type": "type", "alpha policy": "policy", "alignment": "align",
                  "clock sync": "sync", "receiver": "rx"}
#: With several receivers the receivers table shows each one's plan: the header names the followed one.
WIDE_MULTI_HEADER = (("receiver", "alpha policy", "alignment", "shift", "link"), ("transport", "clock sync"))
COMPACT_MULTI_HEADER = (("receiver", "alpha policy", "alignment", "link", "transport"), ("shift", "clock sync"))
#: The receivers table (several receivers): (heading, ``WatchState.receiver_rows`` key), wide and compact.
WIDE_RECEIVERS = (("#", ""), ("rx", "rx"), ("mod", "modulation"), ("alpha", "alpha"), ("B_max", "B_max"),
                  ("N_max", "N_max"), ("type", "value type"), ("acked/lost", "acked/lost"), ("acc", "accuracy"),
                  ("shift", "shift"), ("gate", "gate"), ("action", "action"), ("state", "state"))
#: Compact fits 80 columns: no number column (the mark sits before the name), no state column,
#: shorter names, shifts and value types, a gate of two decimals.
COMPACT_RECEIVERS = (("rx", "rx"), ("mod", "modulation"), ("α", "alpha"), ("B_max", "B_max"), ("N", "N_max"),
                     ("type", "value type"), ("ack/lost", "acked/lost"), ("acc", "accuracy"), ("shift", "shift"),
                     ("gate", "gate"), ("action", "action"))
#: Characters of a receiver's name in its table (compact, wide), and of a shift or an action (compact).
COMPACT_NAME = 4
WIDE_NAME = 16
COMPACT_RECEIVER_TEXT = 9
#: Events drawn in the pane (newest first).
EVENT_LINES = 30
MODULATIONS = tuple(m.value for m in Modulation)
_LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}


def default_control(endpoint: str, cmd: str, arg: str | int | None, *, rx: str | None = None,
                    security: SecurityConfig | None = None) -> dict[str, Any]:
    """A control request as ``semalign ctl`` sends it (CURVE with ``security``'s keys), for
    receiver ``rx`` (None: as ``ctl`` without ``--rx``)."""
    from tx.control import ControlRequest
    from tx.ctl import request

    return request(endpoint, ControlRequest(cmd, arg, rx), timeout_s=2.0, tries=2, security=security)


class ModulationScreen(ModalScreen[str | None]):
    """Pick a modulation (enter), or escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "cancel")]
    DEFAULT_CSS = """
    ModulationScreen { align: center middle; }
    #choose { width: 40; height: auto; border: round $accent; padding: 0 1; }
    """

    def __init__(self, current: str | None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="choose"):
            yield Label("modulation for the next batch")
            yield OptionList(*(Option(m, id=m) for m in MODULATIONS), id="modulations")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in MODULATIONS:
            options.highlighted = MODULATIONS.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class AskScreen(ModalScreen[str | None]):
    """One line of input (enter), or escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "cancel")]
    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    #ask { width: 70; height: auto; border: round $accent; padding: 0 1; }
    """

    def __init__(self, prompt: str, placeholder: str = "") -> None:
        super().__init__()
        self.prompt = prompt
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="ask"):
            yield Label(self.prompt)
            yield Input(placeholder=self.placeholder, id="answer")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class WatchApp(App[None]):
    """Both daemons at a glance; m/a/s/p steer TX (the selected receiver: Tab, 1-9), q quits."""

    TITLE = "semalign watch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "modulation", "modulation"),
        Binding("a", "alpha", "alpha"),
        Binding("s", "shift", "shift"),
        Binding("p", "pause", "pause/resume"),
        Binding("q", "quit", "quit"),
        # Priority: the screen's own Tab (focus) would take it first; shown with several receivers only.
        Binding("tab", "next_receiver", "rx 1-9", priority=True),
        *(Binding(str(n), f"receiver({n})", f"receiver {n}", show=False) for n in range(1, 10)),
    ]
    # The main screen's classes pick the layout: -compact (a small terminal) and -radio (a
    # transport with SNR and a constellation; on zmq their panes would stay empty).
    DEFAULT_CSS = """
    #header { height: auto; padding: 0 1; background: $boost; }
    #plots { height: 1fr; grid-size: 2 1; }
    #plots PlotextPlot { height: 1fr; }
    #snr, #constellation { display: none; }
    Screen.-radio #plots { grid-size: 2 2; }
    Screen.-radio #snr, Screen.-radio #constellation { display: block; }
    #bottom { height: 16; grid-size: 2 1; grid-columns: 1fr 44; }
    #events { height: 100%; border-left: solid $accent; padding: 0 1; overflow: hidden; }
    Screen.-compact #plots { height: 9; grid-size: 2 1; }
    Screen.-compact.-radio #latency, Screen.-compact.-radio #constellation { display: none; }
    Screen.-compact #bottom { height: 1fr; grid-size: 1 2; grid-columns: 1fr; grid-rows: 1fr 4; }
    Screen.-compact #batches { overflow-y: hidden; }
    Screen.-compact #events { border-left: none; border-top: solid $accent; padding: 0 1; }
    #receivers { display: none; height: auto; max-height: 12; }
    Screen.-multi #receivers { display: block; }
    Screen.-compact #receivers { max-height: 6; }
    Screen.-compact.-multi #plots { height: 7; }
    """

    def __init__(self, source: Source, tx_endpoint: str, rx_endpoint: str | None = None, *,
                 control_endpoint: str | None = None, control: Control = default_control,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.source = source
        self.state = WatchState(tx_endpoint, rx_endpoint)
        self.control_override = control_endpoint
        self.control = control
        self.clock = clock
        self._drawn = -1
        self._shot_at: tuple[Path, float] | None = None
        self._last_draw = 0.0
        #: (compact, radio, several receivers) as last laid out; None before the first layout.
        self._layout: tuple[bool, bool, bool] | None = None

    # -- layout ----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield DataTable(id="receivers", cursor_type="row")
        with Grid(id="plots"):
            yield PlotextPlot(id="accuracy")
            yield PlotextPlot(id="latency")
            yield PlotextPlot(id="snr")
            yield PlotextPlot(id="constellation")
        with Grid(id="bottom"):
            yield DataTable(id="batches", zebra_stripes=True, cursor_type="none")
            yield Static(id="events")
        yield Footer()

    def on_mount(self) -> None:
        # Bound once: while the app shuts down the screen's widgets are being removed, and a
        # query from a poll tick that lands meanwhile would find none of them.
        self._main = self.screen
        self._header = self.query_one("#header", Static)
        self._events = self.query_one("#events", Static)
        self._table = self.query_one("#batches", DataTable)
        self._receivers = self.query_one("#receivers", DataTable)
        # Tab and 1-9 select a receiver: arrow keys on this table's cursor would only seem to.
        self._receivers.can_focus = False
        self._plots = {name: self.query_one(f"#{name}", PlotextPlot)
                       for name in ("accuracy", "latency", "snr", "constellation")}
        self._lay_out()
        self._draw(force=True)
        self.set_interval(POLL_S, self._poll)
        if self._shot_at is not None:
            self.set_timer(self._shot_at[1], self._shoot)

    @property
    def compact(self) -> bool:
        return self.size.width < COMPACT_COLS or self.size.height < COMPACT_ROWS

    def on_resize(self, event: events.Resize) -> None:
        if self._layout is not None and self._header.is_attached:
            self._lay_out()
            self._draw(force=True)

    def _lay_out(self) -> bool:
        """Fit the panes to the terminal and the transport; whether anything changed."""
        layout = (self.compact, self.state.radio(), self.state.multi())
        if layout == self._layout:
            return False
        multi_changed = self._layout is None or self._layout[2] != layout[2]
        self._layout = layout
        compact, radio, multi = layout
        self._main.set_class(compact, "-compact")
        self._main.set_class(radio, "-radio")
        self._main.set_class(multi, "-multi")
        self._receivers.clear(columns=True)
        self._receivers.add_columns(*(heading for heading, _ in (COMPACT_RECEIVERS if compact else WIDE_RECEIVERS)))
        if multi_changed:
            self.refresh_bindings()  # the footer's "rx 1-9" comes and goes with the receivers table
        columns: tuple[str, ...]
        if compact:
            columns = COMPACT_RADIO_COLUMNS if radio else COMPACT_COLUMNS
        else:
            columns = WIDE_RADIO_COLUMNS if radio else WIDE_COLUMNS
        self._table.clear(columns=True)
        self._table.add_columns(*columns)
        return True

    # -- input -----------------------------------------------------------------------
    def _poll(self) -> None:
        if not self._header.is_attached:
            return  # the app is exiting: nothing left to draw into
        now = self.clock()
        for message in self.source.poll():
            self.state.apply(message, now)
        self.state.refused(self.source.refusals(), now)
        stale = self.state.tick(now)
        if self._lay_out():
            self._draw(force=True)
        elif self.state.version != self._drawn or stale:
            self._draw()

    # -- drawing ---------------------------------------------------------------------
    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        self._draw_header(now)
        self._draw_events()
        if self.state.version != self._drawn or force:
            self._draw_table()
            self._draw_receivers()
        if force or now - self._last_draw >= REDRAW_S:
            self._draw_plots()
            self._last_draw = now
            self._drawn = self.state.version

    def _draw_header(self, now: float) -> None:
        state = self.state
        peers = [state.tx] + ([state.rx] if state.rx is not None else [])
        text = Text()
        for i, peer in enumerate(peers):
            style = "bold red" if peer.refusal is not None else "bold green" if peer.alive(now) else "bold yellow"
            if i:
                text.append("\n" if peer.refusal or peers[0].refusal else "   ")
            text.append(peer.describe(now), style=style)
        compact = self.compact
        header = state.header()
        lines: tuple[tuple[str, ...], ...]
        if state.multi():
            header["receiver"] = state.current()
            lines = COMPACT_MULTI_HEADER if compact else WIDE_MULTI_HEADER
        else:
            lines = COMPACT_HEADER if compact else WIDE_HEADER
        for line in lines:
            text.append("\n")
            for i, key in enumerate(line):
                label = COMPACT_LABELS.get(key, key) if compact else key
                if i:
                    text.append("  " if compact else "   ")
                text.append(f"{label}: ", style="dim")
                text.append(header[key], style="bold")
        self._header.update(text)

    def _draw_events(self) -> None:
        """The newest events first (the oldest fall off the bottom of the pane)."""
        text = Text()
        for event in list(self.state.events)[::-1][:EVENT_LINES]:
            text.append(event.text + "\n", style=_LEVEL_STYLE.get(event.level, ""))
        self._events.update(text)

    def _draw_table(self) -> None:
        table = self._table
        table.clear()
        compact, radio, _ = self._layout or (False, False, False)
        rows = list(self.state.batches.items())[-TABLE_ROWS:]
        for batch, row in reversed(rows):
            rx_row = self.state.rx_row(batch)
            snr = number(row.get("snr_db"))
            snr = snr if snr is not None else number(rx_row.get("snr_db"))
            frames_lost = row.get("frames_lost", rx_row.get("frames_lost"))
            shift, action = _text(row.get("shift")), _text(row.get("align_action", rx_row.get("align_action")))
            gate = row.get("gate", rx_row.get("gate"))
            status = _text(row.get("status"))
            snr_cell = "-" if snr is None else f"{snr:.1f}"
            if compact:
                accuracy = "lost" if status == "lost" else _num(row.get("accuracy"), ".3f")
                cells = [str(batch), _text(row.get("modulation")), _text(row.get("alpha")), accuracy,
                         _ms(row.get("latency_comm_s")), *([snr_cell] if radio else []),
                         _cut(shift, COMPACT_TEXT), _num(gate, "+.3f"), _cut(action, COMPACT_TEXT)]
            else:
                cells = [str(batch), _text(row.get("modulation")), _text(row.get("alpha")), _text(row.get("n_train")),
                         _num(row.get("accuracy"), ".3f"), _ms(row.get("latency_comm_s")),
                         *([snr_cell, _text(frames_lost)] if radio else
                           [_ms(row.get("latency_finetune_s")), _ms(row.get("latency_classify_s"))]),
                         _cut(shift, WIDE_TEXT), _num(gate, "+.3f"), _cut(action, WIDE_TEXT), status]
            table.add_row(*_plain(cells))

    def _draw_receivers(self) -> None:
        """One row per receiver (several only); the followed one marked and under the cursor."""
        table = self._receivers
        table.clear()
        if not self.state.multi():
            return
        compact = self._layout is not None and self._layout[0]
        chosen = self.state.receivers().index(self.state.current())
        for i, row in enumerate(self.state.receiver_rows("+.2f" if compact else "+.3f")):
            mark = "▶" if i == chosen else " "
            if compact:
                cells = {**row, "rx": mark + _cut(row["rx"], COMPACT_NAME),
                         "value type": row["value type"].replace("float", "f"),
                         "shift": _cut(row["shift"], COMPACT_RECEIVER_TEXT),
                         "action": _cut(row["action"], COMPACT_RECEIVER_TEXT)}
                table.add_row(*_plain(cells[key] for _, key in COMPACT_RECEIVERS))
            else:
                cells = {**row, "": mark + (str(i + 1) if i < 9 else " "), "rx": _cut(row["rx"], WIDE_NAME),
                         "shift": _cut(row["shift"], WIDE_TEXT), "action": _cut(row["action"], WIDE_TEXT)}
                table.add_row(*_plain(cells[key] for _, key in WIDE_RECEIVERS))
        table.move_cursor(row=chosen, animate=False)

    def _draw_plots(self) -> None:
        state = self.state
        acc = self._plots["accuracy"].plt
        acc.clear_data()
        acc.clear_figure()
        xs, ys = state.series("accuracy")
        # With several receivers the plots are the selected one's: their titles name it.
        whose = f": {state.current()}" if state.multi() else ""
        acc.title("accuracy per batch" + whose)
        if xs:
            acc.plot(xs, ys, marker="dot")
            acc.xticks(_batch_ticks(xs))
            acc.ylim(0, 1)
        self._plots["accuracy"].refresh()

        lat = self._plots["latency"].plt
        lat.clear_data()
        lat.clear_figure()
        lat.title("comm / C / D per batch (ms)" + whose)
        rows = [(b, r) for b, r in state.batches.items() if r.get("status") == "ok"][-30:]
        if rows:
            parts = [[max(0.0, (number(r.get(k)) or 0.0) * 1e3) for _, r in rows]
                     for k in ("latency_comm_s", "latency_finetune_s", "latency_classify_s")]
            # plotext's keyword is ``labels`` (the bundled stub says ``label``).
            lat.stacked_bar([str(b) for b, _ in rows], parts, labels=["comm", "C", "D"])  # type: ignore[call-arg]
        self._plots["latency"].refresh()

        snr = self._plots["snr"].plt
        snr.clear_data()
        snr.clear_figure()
        sx, sy = state.series("snr_db", rx_fallback=True)
        fx, fy = state.series("frames_lost", rx_fallback=True)
        if sx:
            snr.title("SNR (dB) and frames lost" + whose)
            snr.plot(sx, sy, label="SNR dB", marker="dot")
            snr.xticks(_batch_ticks(sx))
            if fx:
                snr.bar(fx, fy, label="frames lost", yside="right")
        else:
            snr.title("SNR: none reported (zmq transport)" if state.batches else "SNR and frames lost")
        self._plots["snr"].refresh()

        con = self._plots["constellation"].plt
        con.clear_data()
        con.clear_figure()
        if state.constellation is not None:
            batch, modulation, points = state.constellation
            con.title(f"equalised symbols, batch {batch} ({modulation or '?'})")
            con.scatter(points.real.tolist(), points.imag.tolist(), marker="dot")
        else:
            con.title("constellation: from RX on the sim and pluto transports")
        self._plots["constellation"].refresh()

    # -- steering --------------------------------------------------------------------
    def _endpoint(self) -> str | None:
        return self.control_override or self.state.control_endpoint()

    def _request(self, cmd: str, arg: str | int | None) -> None:
        """One key press, one event line: "sent", then the reply in its place (TX's echo of it
        on the monitor stream is not shown again). With several receivers, for the selected one."""
        endpoint = self._endpoint()
        rx = self.state.target()
        target = {} if rx is None else {"rx": rx}
        what = "ctl" + ("" if rx is None else f" --rx {rx}") + f" {cmd}" + ("" if arg is None else f" {arg}")
        if endpoint is None:
            self._event(Event(f"{what}: TX's control endpoint is not known yet (no status from TX)", "warning"))
            return
        line = self.state.add(f"{what} -> {endpoint}: sent")
        self._draw_events()

        def send() -> None:
            try:
                reply: dict[str, Any] | str = self.control(endpoint, cmd, arg, **target)
            except SemalignError as exc:
                reply = str(exc)
            self.call_from_thread(self._on_reply, line, what, reply)

        self.run_worker(send, thread=True, group="control", exclusive=False)

    def _on_reply(self, line: int, what: str, reply: dict[str, Any] | str) -> None:
        if isinstance(reply, str):
            self.state.replace(line, f"{what} failed: {reply}", "error")
        else:
            self.state.own_reply(reply)
            if reply.get("ok"):
                plan = reply["plan"] if isinstance(reply.get("plan"), dict) else {}
                self.state.replace(line, f"{what}: {reply.get('message', 'ok')} (B_max={plan.get('b_max')} "
                                   f"alpha={plan.get('alpha')} N_max={plan.get('n_max')})")
            else:
                self.state.replace(line, f"{what} refused: {reply.get('error')}", "error")
        self._draw_events()

    def _event(self, event: Event) -> None:
        self.state.add(event.text, event.level)
        self._draw_events()

    def action_modulation(self) -> None:
        current = self.state.header()["modulation"]

        def chosen(name: str | None) -> None:
            if name:
                self._request(Cmd.SET_MODULATION, name)

        self.push_screen(ModulationScreen(current), chosen)

    def action_alpha(self) -> None:
        def chosen(text: str | None) -> None:
            if text is None or not text.strip():
                return
            text = text.strip()
            if text.lower() == "proportional":
                self._request(Cmd.SET_POLICY, "proportional")
            elif text.isdigit():
                self._request(Cmd.SET_ALPHA, int(text))
            else:
                self._event(Event(f"alpha: expected an integer or 'proportional', got {text!r}", "error"))

        self.push_screen(AskScreen("alpha (fixed policy), or 'proportional'", "e.g. 20"), chosen)

    def action_shift(self) -> None:
        def chosen(text: str | None) -> None:
            if text is None:
                return
            if text.strip():
                self._request(Cmd.SET_SHIFT, text.strip())
            else:
                self._request(Cmd.CLEAR_SHIFT, None)

        self.push_screen(AskScreen("sensor shift (empty clears)", "e.g. rotate:20+noise:0.1"), chosen)

    def action_next_receiver(self) -> None:
        self.state.select_next()
        self._draw(force=True)

    def action_receiver(self, number: int) -> None:
        names = self.state.receivers()
        if 1 <= number <= len(names):
            self.state.select(names[number - 1])
            self._draw(force=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Selecting is for several receivers, on the main screen (a dialog keeps its keys).
        if action in ("next_receiver", "receiver"):
            return self.state.multi() and self.screen is getattr(self, "_main", None)
        return True

    def action_pause(self) -> None:
        self._request(Cmd.RESUME if self.state.paused() else Cmd.PAUSE, None)

    def screenshot_to(self, path: Path, *, after_s: float) -> None:
        """Once mounted, save the screen as SVG at ``path`` after ``after_s`` seconds, then exit."""

        self._shot_at = (path, after_s)

    def _shoot(self) -> None:
        if self._shot_at is not None:
            path, _ = self._shot_at
            self.save_screenshot(filename=path.name, path=str(path.parent))
        self.exit()

    def on_unmount(self) -> None:
        self.source.close()


def _batch_ticks(batches: list[int], most: int = 6) -> list[float]:
    """Whole batch numbers for an x axis (plotext would label 0.0, 3.5, 7.0 ...)."""
    step = max(1, -(-(batches[-1] - batches[0]) // (most - 1)))
    return [float(b) for b in range(batches[0], batches[-1] + 1, step)]


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _plain(cells: Iterable[str]) -> list[Text]:
    """Cells as plain text: DataTable reads a str as markup, and a name or shift spec from the
    stream such as "[/]" would raise in the middle of a redraw."""
    return [Text(cell) for cell in cells]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _num(value: Any, spec: str) -> str:
    n = number(value)
    return "-" if n is None else format(n, spec)


def _ms(value: Any) -> str:
    n = number(value)
    return "-" if n is None else f"{n * 1e3:.1f}"
