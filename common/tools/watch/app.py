"""The Textual application of ``semalign watch``: header, live plots, batch table, events, steering keys.

It polls its ``Source`` ten times a second (never blocking), redraws what changed, and sends
control requests to TX from a worker thread so a slow or absent TX never freezes the screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
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

#: A control request: (TX's control endpoint, command, argument) -> TX's decoded reply.
Control = Callable[[str, str, "str | int | None"], dict[str, Any]]

POLL_S = 0.1
#: Plots are redrawn at most this often.
REDRAW_S = 0.25
#: Rows of the batch table.
TABLE_ROWS = 12
#: Events drawn in the pane (newest first).
EVENT_LINES = 30
MODULATIONS = tuple(m.value for m in Modulation)
_LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}


def default_control(endpoint: str, cmd: str, arg: str | int | None, *,
                    security: SecurityConfig | None = None) -> dict[str, Any]:
    """A control request as ``semalign ctl`` sends it (CURVE with ``security``'s keys)."""
    from tx.control import ControlRequest
    from tx.ctl import request

    return request(endpoint, ControlRequest(cmd, arg), timeout_s=2.0, tries=2, security=security)


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
    """Both daemons at a glance; m/a/s/p steer TX, q quits."""

    TITLE = "semalign watch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "modulation", "modulation"),
        Binding("a", "alpha", "alpha"),
        Binding("s", "shift", "shift"),
        Binding("p", "pause", "pause/resume"),
        Binding("q", "quit", "quit"),
    ]
    DEFAULT_CSS = """
    #header { height: auto; padding: 0 1; background: $boost; }
    .plots { height: 1fr; }
    .plots PlotextPlot { width: 1fr; }
    #bottom { height: 16; }
    #batches { width: 3fr; }
    #events { width: 2fr; height: 100%; border-left: solid $accent; padding: 0 1; overflow: hidden; }
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

    # -- layout ----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with Horizontal(classes="plots"):
            yield PlotextPlot(id="accuracy")
            yield PlotextPlot(id="latency")
        with Horizontal(classes="plots"):
            yield PlotextPlot(id="snr")
            yield PlotextPlot(id="constellation")
        with Horizontal(id="bottom"):
            yield DataTable(id="batches", zebra_stripes=True, cursor_type="none")
            yield Static(id="events")
        yield Footer()

    def on_mount(self) -> None:
        # Bound once: while the app shuts down the screen's widgets are being removed, and a
        # query from a poll tick that lands meanwhile would find none of them.
        self._header = self.query_one("#header", Static)
        self._events = self.query_one("#events", Static)
        self._table = self.query_one("#batches", DataTable)
        self._plots = {name: self.query_one(f"#{name}", PlotextPlot)
                       for name in ("accuracy", "latency", "snr", "constellation")}
        table = self._table
        table.add_columns("batch", "mod", "alpha", "N", "acc", "comm ms", "C ms", "D ms", "SNR dB", "fr.lost", "status")
        self._draw(force=True)
        self.set_interval(POLL_S, self._poll)
        if self._shot_at is not None:
            self.set_timer(self._shot_at[1], self._shoot)

    # -- input -----------------------------------------------------------------------
    def _poll(self) -> None:
        if not self._header.is_attached:
            return  # the app is exiting: nothing left to draw into
        now = self.clock()
        for message in self.source.poll():
            self.state.apply(message, now)
        stale = self.state.tick(now)
        if self.state.version != self._drawn or stale:
            self._draw()

    # -- drawing ---------------------------------------------------------------------
    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        self._draw_header(now)
        self._draw_events()
        if self.state.version != self._drawn or force:
            self._draw_table()
        if force or now - self._last_draw >= REDRAW_S:
            self._draw_plots()
            self._last_draw = now
            self._drawn = self.state.version

    def _draw_header(self, now: float) -> None:
        state = self.state
        peers = [state.tx] + ([state.rx] if state.rx is not None else [])
        text = Text()
        for i, peer in enumerate(peers):
            style = "bold green" if peer.alive(now) else "bold yellow"
            text.append(("" if i == 0 else "   ") + peer.describe(now), style=style)
        text.append("\n")
        for i, (key, value) in enumerate(state.header().items()):
            text.append(f"{key}: ", style="dim")
            text.append(value, style="bold")
            text.append("\n" if i in (4, 8) else "   ")
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
        rows = list(self.state.batches.items())[-TABLE_ROWS:]
        for batch, row in reversed(rows):
            rx_row = self.state.rx_batches.get(batch, {})
            snr = number(row.get("snr_db"))
            snr = snr if snr is not None else number(rx_row.get("snr_db"))
            table.add_row(
                str(batch), str(row.get("modulation", "-")), str(row.get("alpha", "-")),
                str(row.get("n_train", "-")), _num(row.get("accuracy"), ".3f"),
                _ms(row.get("latency_comm_s")), _ms(row.get("latency_finetune_s")),
                _ms(row.get("latency_classify_s")), "-" if snr is None else f"{snr:.1f}",
                str(row.get("frames_lost", "-")), str(row.get("status", "-")),
            )

    def _draw_plots(self) -> None:
        state = self.state
        acc = self._plots["accuracy"].plt
        acc.clear_data()
        acc.clear_figure()
        xs, ys = state.series("accuracy")
        acc.title("accuracy per batch")
        if xs:
            acc.plot(xs, ys, marker="dot")
            acc.ylim(0, 1)
        self._plots["accuracy"].refresh()

        lat = self._plots["latency"].plt
        lat.clear_data()
        lat.clear_figure()
        lat.title("comm / C / D per batch (ms)")
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
            snr.title("SNR (dB) and frames lost")
            snr.plot(sx, sy, label="SNR dB", marker="dot")
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
        endpoint = self._endpoint()
        what = f"ctl {cmd}" + ("" if arg is None else f" {arg}")
        if endpoint is None:
            self._event(Event(f"{what}: TX's control endpoint is not known yet (no status from TX)", "warning"))
            return
        self._event(Event(f"{what} -> {endpoint}"))

        def send() -> None:
            try:
                reply: dict[str, Any] | str = self.control(endpoint, cmd, arg)
            except SemalignError as exc:
                reply = str(exc)
            self.call_from_thread(self._on_reply, what, reply)

        self.run_worker(send, thread=True, group="control", exclusive=False)

    def _on_reply(self, what: str, reply: dict[str, Any] | str) -> None:
        if isinstance(reply, str):
            self._event(Event(f"{what} failed: {reply}", "error"))
        elif reply.get("ok"):
            plan = reply["plan"] if isinstance(reply.get("plan"), dict) else {}
            self._event(Event(f"{what}: {reply.get('message', 'ok')} "
                              f"(B_max={plan.get('b_max')} alpha={plan.get('alpha')} N_max={plan.get('n_max')})"))
        else:
            self._event(Event(f"{what} refused: {reply.get('error')}", "error"))

    def _event(self, event: Event) -> None:
        self.state.add(event.text, event.level)
        self._draw_events()

    def action_modulation(self) -> None:
        current = self.state.header()["modulation"]

        def chosen(name: str | None) -> None:
            if name:
                self._request("set-modulation", name)

        self.push_screen(ModulationScreen(current), chosen)

    def action_alpha(self) -> None:
        def chosen(text: str | None) -> None:
            if text is None or not text.strip():
                return
            text = text.strip()
            if text.lower() == "proportional":
                self._request("set-policy", "proportional")
            elif text.isdigit():
                self._request("set-alpha", int(text))
            else:
                self._event(Event(f"alpha: expected an integer or 'proportional', got {text!r}", "error"))

        self.push_screen(AskScreen("alpha (fixed policy), or 'proportional'", "e.g. 20"), chosen)

    def action_shift(self) -> None:
        def chosen(text: str | None) -> None:
            if text is None:
                return
            if text.strip():
                self._request("set-shift", text.strip())
            else:
                self._request("clear-shift", None)

        self.push_screen(AskScreen("sensor shift (empty clears)", "e.g. rotate:20+noise:0.1"), chosen)

    def action_pause(self) -> None:
        self._request("resume" if self.state.paused() else "pause", None)

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


def _num(value: Any, spec: str) -> str:
    n = number(value)
    return "-" if n is None else format(n, spec)


def _ms(value: Any) -> str:
    n = number(value)
    return "-" if n is None else f"{n * 1e3:.1f}"
