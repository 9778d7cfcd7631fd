"""The Textual app against a fake monitor stream: widgets follow records; keys steer TX through a fake control."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("textual")
pytest.importorskip("textual_plotext")

from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from common.telemetry.stream import MonitorMessage, constellation_data
from common.tools.watch.app import WatchApp
from common.tools.watch.source import NOT_ALLOWED, FakeSource, Refusal

TX, RX, CTL = "tcp://127.0.0.1:5557", "tcp://127.0.0.1:5558", "tcp://127.0.0.1:5556"
PLAN_256 = {"modulation": "256qam", "alpha": 40, "b_max": 40000, "n_max": 193, "t": 50, "value_type": "float32"}
PLAN_64 = {"modulation": "64qam", "alpha": 30, "b_max": 30000, "n_max": 191, "t": 50, "value_type": "float32"}


class FakeTx:
    """TX's control socket: accepts modulations it knows, refuses an alpha beyond the bundle."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, endpoint: str, cmd: str, arg: Any) -> dict[str, Any]:
        self.calls.append((endpoint, cmd, arg))
        if cmd == "set-modulation" and arg == "64qam":
            return {"ok": True, "message": "set-modulation applied from batch 3", "effective_from_batch": 3,
                    "plan": PLAN_64}
        if cmd == "set-alpha":
            return {"ok": False, "error": f"alpha {arg} exceeds the bundle's 40 PCA dimensions", "plan": PLAN_256}
        return {"ok": True, "message": f"{cmd} ok", "plan": PLAN_256}


def status(seq: int, plan: dict[str, Any], paused: bool = False) -> MonitorMessage:
    return MonitorMessage("status", "tx", seq, 0, {"plan": plan, "policy": "proportional", "link_policy": "manual",
                                                   "paused": paused, "transport": "sim", "control": CTL,
                                                   "sync_source": "none", "sync_bound_s": None})


def record(seq: int, batch: int, plan: dict[str, Any], accuracy: float) -> MonitorMessage:
    return MonitorMessage("record", "tx", seq, 0, {
        "batch": batch, "status": "ok", "modulation": plan["modulation"], "alpha": plan["alpha"],
        "b_max": plan["b_max"], "n_max": plan["n_max"], "n_train": plan["n_max"], "accuracy": accuracy,
        "latency_comm_s": 0.2, "latency_finetune_s": 0.01, "latency_classify_s": 0.001, "snr_db": 30.0 + batch,
        "frames_lost": batch % 2, "comm_basis": "estimated", "latency_comm_bound_s": 0.002})


def text_of(app: WatchApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def events_of(app: WatchApp) -> str:
    """The event pane's text, its lines joined."""
    return " ".join(text_of(app, "#events").split())


async def until(pilot: Pilot[None], condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run(test: Callable[[WatchApp, Pilot[None]], Any], source: FakeSource,
        control: Callable[[str, str, Any], dict[str, Any]]) -> None:
    async def main() -> None:
        app = WatchApp(source, TX, RX, control=control)
        async with app.run_test(size=(160, 50)) as pilot:
            await test(app, pilot)

    asyncio.run(main())


def stream() -> FakeSource:
    source = FakeSource()
    source.push(status(1, PLAN_256))
    source.push(MonitorMessage("status", "rx", 1, 0, {"adapt": {"mode": "lora", "policy": "auto"},
                                                      "sync_source": "none"}))
    rng = np.random.default_rng(0)
    points = ((rng.integers(0, 2, 64) * 2 - 1) + 1j * (rng.integers(0, 2, 64) * 2 - 1)) / np.sqrt(2)
    source.push(MonitorMessage("constellation", "rx", 2, 0, constellation_data(2, "qpsk", points)))
    for batch in range(3):
        source.push(record(batch + 2, batch, PLAN_256, 0.9 + 0.01 * batch))
    return source


def test_records_update_header_table_and_plots() -> None:
    source, tx = stream(), FakeTx()

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.query_one("#batches", DataTable).row_count == 3, "three table rows")
        header = text_of(app, "#header")
        assert f"TX live at {TX}" in header and f"RX live at {RX}" in header
        for part in ("modulation: 256qam", "alpha: 40", "B_max: 40000", "N_max: 193", "value type: float32",
                     "alignment: lora/auto", "clock sync: TX none, RX none; B-A estimated"):
            assert part in header, part
        table = app.query_one("#batches", DataTable)
        assert [cells(table, i)[0] for i in range(3)] == ["2", "1", "0"]  # newest first
        assert cells(table, 0)[1] == "256qam" and cells(table, 0)[4] == "0.920"
        assert app.state.series("accuracy")[0] == [0, 1, 2]
        assert app.state.constellation is not None and app.state.constellation[1] == "qpsk"
        # A new status (the next plan) reaches the header.
        source.push(status(9, PLAN_64))
        await until(pilot, lambda: "modulation: 64qam" in text_of(app, "#header"), "the new plan in the header")

    run(check, source, tx)


def test_m_and_64qam_sends_the_request_and_shows_the_reply() -> None:
    source, tx = stream(), FakeTx()

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.state.control_endpoint() == CTL, "TX's control endpoint")
        await pilot.press("m")
        await pilot.pause(0.1)
        await pilot.press("up", "enter")  # from the current 256qam, one up is 64qam
        await until(pilot, lambda: "applied from batch 3" in events_of(app), "the reply in the event pane")
        assert tx.calls == [(CTL, "set-modulation", "64qam")]
        assert "ctl set-modulation 64qam: set-modulation applied from batch 3 (B_max=30000 alpha=30 N_max=191)" \
            in events_of(app)

    run(check, source, tx)


def test_a_refused_request_shows_its_error_and_changes_nothing() -> None:
    source, tx = stream(), FakeTx()

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.state.control_endpoint() == CTL, "TX's control endpoint")
        await pilot.press("a")
        await pilot.pause(0.1)
        await pilot.press("9", "9", "9", "enter")
        await until(pilot, lambda: "refused" in events_of(app), "the refusal in the event pane")
        assert tx.calls == [(CTL, "set-alpha", 999)]
        assert "ctl set-alpha 999 refused: alpha 999 exceeds the bundle's 40 PCA dimensions" in events_of(app)
        assert "alpha: 40" in text_of(app, "#header")

    run(check, source, tx)


@pytest.mark.parametrize(
    ("keys", "paused", "expected"),
    [(("p",), True, ("resume", None)),
     (("s", "i", "n", "v", "e", "r", "t", "enter"), False, ("set-shift", "invert")),
     (("s", "enter"), False, ("clear-shift", None))],
)
def test_steering_keys(keys: tuple[str, ...], paused: bool, expected: tuple[str, Any]) -> None:
    source, tx = FakeSource(), FakeTx()
    source.push(status(1, PLAN_256, paused=paused))

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.state.control_endpoint() == CTL, "TX's control endpoint")
        for key in keys:
            await pilot.press(key)
        await until(pilot, lambda: len(tx.calls) == 1, "one control request")
        assert tx.calls[0][1:] == expected

    run(check, source, tx)


def test_absent_tx_shows_waiting_and_keys_say_so() -> None:
    source, tx = FakeSource(), FakeTx()

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await pilot.pause(0.2)
        assert f"waiting for TX at {TX}" in text_of(app, "#header")
        assert f"waiting for RX at {RX}" in text_of(app, "#header")
        await pilot.press("p")
        await until(pilot, lambda: "not known yet" in events_of(app), "the endpoint notice")
        assert tx.calls == []
        source.push([b"record", b"garbage"])
        await pilot.pause(0.2)
        assert source.bad == 1

    run(check, source, tx)


def test_a_poll_tick_after_exit_draws_nothing_and_raises_nothing() -> None:
    # A tick of the poll timer can land while the app shuts down and its widgets are removed.
    source, tx = stream(), FakeTx()
    apps: list[WatchApp] = []

    async def main() -> None:
        app = WatchApp(source, TX, RX, control=tx)
        apps.append(app)
        async with app.run_test(size=(160, 50)) as pilot:
            await until(pilot, lambda: app.query_one("#batches", DataTable).row_count == 3, "three table rows")

    asyncio.run(main())
    app = apps[0]
    version = app.state.version
    source.push(record(9, 3, PLAN_256, 0.5))
    app._poll()
    assert app.state.version == version  # nothing applied, nothing drawn


# -- small terminals, radio panes, one line per key press, refusals (issue 16, defect 17 and 11) ------------


def screen_text(app: WatchApp) -> list[str]:
    """The screen as the terminal shows it, one string per row."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text().splitlines()[:height]


def aligned_stream(transport: str, batches: int = 14) -> FakeSource:
    source = FakeSource()
    message = status(1, PLAN_256)
    message.data["transport"] = transport
    source.push(message)
    for batch in range(batches):
        row = record(batch + 2, batch, PLAN_256, 0.8 + 0.01 * batch)
        row.data.update({"shift": "rotate:20+noise:0.1", "gate": -0.013, "align_action": "strong"})
        if transport == "zmq":
            row.data.update({"snr_db": None, "frames_lost": 0})
        source.push(row)
    return source


def run_sized(test: Callable[[WatchApp, Pilot[None]], Any], source: FakeSource, size: tuple[int, int],
              control: Callable[..., dict[str, Any]] | None = None) -> None:
    async def main() -> None:
        app = WatchApp(source, TX, RX, control=control or FakeTx())
        async with app.run_test(size=size) as pilot:
            await test(app, pilot)

    asyncio.run(main())


@pytest.mark.parametrize("transport", ["zmq", "sim"])
def test_80x24_is_a_compact_layout_with_readable_plots_and_the_alignment_columns(transport: str) -> None:
    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.query_one("#batches", DataTable).row_count == 12, "the table's rows")
        await pilot.pause(0.3)
        table = app.query_one("#batches", DataTable)
        headings = [str(c.label) for c in table.columns.values()]
        assert headings[-3:] == ["shift", "gate", "action"]
        assert table.virtual_size.width <= table.region.width  # no column cut off or scrolled away
        shown = [name for name in ("accuracy", "latency", "snr", "constellation") if app.query_one(f"#{name}").display]
        # zmq has no radio: its SNR and constellation panes would stay empty, so they are not there.
        assert shown == (["accuracy", "latency"] if transport == "zmq" else ["accuracy", "snr"])
        for name in shown:
            region = app.query_one(f"#{name}").region
            assert region.height >= 8 and region.width >= 38, (name, region)
        assert app.query_one("#events").region.height >= 3 and table.region.height >= 5
        rows = screen_text(app)
        text = "\n".join(rows)
        assert "accuracy per batch" in text
        assert ("comm / C / D per batch" in text) == (transport == "zmq")
        assert re.search(r"^\s*13\s+256qam\s+40\s+0\.930\s+200\.0\s+(43\.0\s+)?rotate:2…\s+-0\.013\s+strong", text, re.M)
        assert f"TX live at {TX}" in rows[0] and "mod: 256qam" in text and "transport: " + transport in text

    run_sized(check, aligned_stream(transport), (80, 24))


def test_a_wide_screen_shows_the_radio_panes_on_sim_only() -> None:
    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.query_one("#batches", DataTable).row_count == 12, "the table's rows")
        assert app.query_one("#snr").display and app.query_one("#constellation").display
        table = app.query_one("#batches", DataTable)
        headings = [str(c.label) for c in table.columns.values()]
        assert "SNR dB" in headings and headings[-4:] == ["shift", "gate", "action", "status"]
        assert table.virtual_size.width <= table.region.width

    run_sized(check, aligned_stream("sim"), (160, 50))


@pytest.mark.parametrize("echo_first", [True, False])
def test_a_key_press_is_one_event_line(echo_first: bool) -> None:
    source = stream()
    reply = {"v": 1, "ok": True, "message": "set-modulation applied from batch 3", "effective_from_batch": 3,
             "plan": PLAN_64}
    echo = MonitorMessage("event", "tx", 50, 0, {"name": "control", **reply})

    def control(endpoint: str, cmd: str, arg: Any) -> dict[str, Any]:
        if echo_first:  # TX's echo on the monitor stream reaches the screen before the reply
            source.push(echo)
            for _ in range(100):
                if not source.queue:
                    break
                time.sleep(0.02)
        return dict(reply)

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.state.control_endpoint() == CTL, "TX's control endpoint")
        await pilot.press("m")
        await pilot.pause(0.1)
        await pilot.press("up", "enter")
        await until(pilot, lambda: "applied from batch 3" in events_of(app), "the reply")
        if not echo_first:
            source.push(echo)
            await until(pilot, lambda: not source.queue, "the echo to be read")
        await pilot.pause(0.3)
        lines = [e.text for e in app.state.events]
        assert lines == ["ctl set-modulation 64qam: set-modulation applied from batch 3 "
                         "(B_max=30000 alpha=30 N_max=191)"]

    run(check, source, control)


def test_another_operators_control_change_still_shows() -> None:
    source = stream()
    source.push(MonitorMessage("event", "tx", 50, 0, {"name": "control", "v": 1, "ok": True,
                                                      "message": "set-alpha applied from batch 4", "plan": PLAN_64}))

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: "TX control: set-alpha applied from batch 4" in events_of(app), "the change")

    run(check, source, FakeTx())


def test_a_refusal_is_on_screen_until_the_daemon_admits_the_key() -> None:
    source = stream()
    source.refused[RX] = Refusal(NOT_ALLOWED, 4.0)

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        reason = f"refused by RX at {RX}: your key is not in its monitor allow-list (or wrong peer key)"
        await until(pilot, lambda: reason in " ".join(text_of(app, "#header").split()), "the refusal in the header")
        assert reason in events_of(app)
        source.refused.clear()
        await until(pilot, lambda: f"RX at {RX} admitted this watcher" in events_of(app), "the admission")
        await until(pilot, lambda: f"RX live at {RX}" in text_of(app, "#header") or
                    f"waiting for RX at {RX}" in text_of(app, "#header"), "the refusal gone from the header")

    run_sized(check, source, (80, 24))


# -- several receivers (issue 17): a receivers table, Tab or 1-9 select, the keys steer the selected one ---------

PLANS = {"a": PLAN_256, "b": PLAN_64, "c": {**PLAN_64, "modulation": "qpsk", "alpha": 10, "b_max": 10000,
                                          "n_max": 150, "value_type": "int8"}}


class FakeTxMany:
    """TX's control socket with three receivers: the reply is the named receiver's, as TX's is."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, str | None]] = []

    def __call__(self, endpoint: str, cmd: str, arg: Any, *, rx: str | None = None) -> dict[str, Any]:
        self.calls.append((endpoint, cmd, arg, rx))
        name = rx or "a"
        return {"ok": True, "message": f"{cmd} applied from batch 5", "plan": PLANS[name], "rx": name,
                "receivers": {name: {"ok": True, "message": f"{cmd} applied from batch 5", "plan": PLANS[name]}}}


def many_stream(transport: str = "zmq", batches: int = 4) -> FakeSource:
    source = FakeSource()
    receivers = {name: {"plan": plan, "acked": 10 + i, "lost": i, "accuracy": 0.5, "paused": False,
                        "shift": "none", "policy": "fixed", "link_policy": "manual", "transport": transport,
                        "given_up": None, "endpoint": f"tcp://10.0.0.{i}:5555"}
                 for i, (name, plan) in enumerate(PLANS.items())}
    message = status(1, PLAN_256)
    message.data.update({"transport": transport, "receivers": receivers})
    source.push(message)
    seq = 2
    for batch in range(batches):  # each link numbers its own batches: the same ids, three receivers
        for i, (name, plan) in enumerate(PLANS.items()):
            row = record(seq, batch, plan, 0.9 - 0.2 * i + 0.01 * batch)
            row.data.update({"rx": name, "shift": f"rotate:{10 * (i + 1)}", "gate": -0.01 * (i + 1),
                             "align_action": ("keep", "strong", "skip")[i]})
            source.push(row)
            seq += 1
    return source


def cells(table: DataTable[Any], row: int) -> list[str]:
    return [str(c) for c in table.get_row_at(row)]


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_three_receivers_show_one_row_each_and_the_selected_ones_batches(size: tuple[int, int]) -> None:
    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        receivers = app.query_one("#receivers", DataTable)
        await until(pilot, lambda: receivers.row_count == 3, "a row per receiver")
        await until(pilot, lambda: app.query_one("#batches", DataTable).row_count == 4, "a's batches")
        await pilot.pause(0.3)
        assert receivers.display and receivers.virtual_size.width <= receivers.region.width
        rows = [cells(receivers, i) for i in range(3)]
        if size == (80, 24):  # the mark before the name, short value types, gates of two decimals
            assert rows == [["▶a", "256qam", "40", "40000", "193", "f32", "10/0", "0.930", "rotate:10", "-0.01", "keep"],
                            [" b", "64qam", "30", "30000", "191", "f32", "11/1", "0.730", "rotate:20", "-0.02", "strong"],
                            [" c", "qpsk", "10", "10000", "150", "int8", "12/2", "0.530", "rotate:30", "-0.03", "skip"]]
        else:
            assert rows == [
                ["▶1", "a", "256qam", "40", "40000", "193", "float32", "10/0", "0.930", "rotate:10", "-0.010", "keep", ""],
                [" 2", "b", "64qam", "30", "30000", "191", "float32", "11/1", "0.730", "rotate:20", "-0.020", "strong", ""],
                [" 3", "c", "qpsk", "10", "10000", "150", "int8", "12/2", "0.530", "rotate:30", "-0.030", "skip", ""]]
        table = app.query_one("#batches", DataTable)
        assert table.virtual_size.width <= table.region.width
        assert [cells(table, i)[1] for i in range(4)] == ["256qam"] * 4  # a's batches only, not b's or c's
        await pilot.press("tab")
        await until(pilot, lambda: cells(table, 0)[1] == "64qam", "b's batches")
        assert cells(receivers, 1)[0] in ("▶2", "▶b") and receivers.cursor_row == 1
        assert [cells(table, i)[0] for i in range(4)] == ["3", "2", "1", "0"]
        assert " ".join(text_of(app, "#header").split()).count(": b") == 1
        await pilot.press("3")
        await until(pilot, lambda: cells(table, 0)[1] == "qpsk", "c's batches")
        assert app.state.series("accuracy")[1] == pytest.approx([0.5, 0.51, 0.52, 0.53])
        text = "\n".join(screen_text(app))
        assert "accuracy per batch: c" in text and "tab rx 1-9" in text and "q quit" in text
        assert "comm / C / D per batch (ms): c" in text  # zmq: the second plot is the latency one
        for name in ("accuracy", "events", "batches"):
            region = app.query_one(f"#{name}").region
            assert region.height >= (3 if name != "accuracy" else 5), (name, region)

    run_sized(check, many_stream(), size)


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_the_keys_steer_the_selected_receiver(size: tuple[int, int]) -> None:
    tx = FakeTxMany()

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.query_one("#receivers", DataTable).row_count == 3, "a row per receiver")
        await pilot.press("tab")
        await until(pilot, lambda: app.state.current() == "b", "b selected")
        await pilot.press("m")
        await pilot.pause(0.1)
        await pilot.press("down", "enter")  # from b's 64qam, one down is 256qam
        await until(pilot, lambda: len(tx.calls) == 1, "the request")
        assert tx.calls == [(CTL, "set-modulation", "256qam", "b")]
        await until(pilot, lambda: "ctl --rx b set-modulation 256qam: set-modulation applied from batch 5"
                    in events_of(app), "the reply, naming b")
        await pilot.press("3", "p")
        await until(pilot, lambda: len(tx.calls) == 2, "the pause")
        assert tx.calls[1] == (CTL, "pause", None, "c")
        await pilot.press("a")
        await pilot.pause(0.1)
        await pilot.press("2", "0", "enter")  # digits in the dialog are the alpha's, not a selection
        await until(pilot, lambda: len(tx.calls) == 3, "the alpha")
        assert tx.calls[2] == (CTL, "set-alpha", 20, "c") and app.state.current() == "c"

    run_sized(check, many_stream(), size, control=tx)


def test_one_receiver_named_rx_has_no_receivers_table_and_requests_name_none() -> None:
    source, tx = FakeSource(), FakeTx()
    message = status(1, PLAN_256)
    message.data.update({"rx": "rx", "receivers": {"rx": {"plan": PLAN_256, "acked": 3, "lost": 0}}})
    source.push(message)
    for batch in range(3):
        row = record(batch + 2, batch, PLAN_256, 0.9)
        row.data["rx"] = "rx"
        source.push(row)

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.query_one("#batches", DataTable).row_count == 3, "three table rows")
        assert not app.query_one("#receivers").display
        assert "modulation: 256qam" in text_of(app, "#header")
        text = "\n".join(screen_text(app))
        assert "rx 1-9" not in text and "accuracy per batch:" not in text
        await pilot.press("tab", "2", "p")  # no receiver to select: p pauses as before
        await until(pilot, lambda: len(tx.calls) == 1, "the request")
        assert tx.calls == [(CTL, "pause", None)]

    run(check, source, tx)


def test_markup_in_names_and_specs_from_the_stream_is_shown_as_it_is() -> None:
    """A receiver's name, shift spec or action is untrusted text: DataTable read it as markup, and
    "[/]" raised in the middle of a redraw."""
    source = many_stream()
    row = record(99, 7, PLAN_64, 0.5)
    row.data.update({"rx": "[/]", "shift": "[/]", "align_action": "[bold]x"})
    source.push(row)
    row = record(100, 8, PLAN_64, 0.5)
    row.data.update({"rx": "a", "shift": "[/]", "align_action": "[bold]x"})
    source.push(row)

    async def check(app: WatchApp, pilot: Pilot[None]) -> None:
        receivers = app.query_one("#receivers", DataTable)
        await until(pilot, lambda: receivers.row_count == 4, "a row per receiver, the odd one too")
        assert cells(receivers, 3)[1:2] == ["[/]"] and cells(receivers, 0)[-4:-1] == ["[/]", "-", "[bold]x"]
        assert cells(app.query_one("#batches", DataTable), 0)[-4:-1] == ["[/]", "-", "[bold]x"]

    run_sized(check, source, (160, 50))
