"""Monitoring with the real daemons on digits: /metrics counts match the metrics files, the monitor
stream carries records and events, and ``semalign watch`` in tmux shows and steers a live link."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from common.runtime import free_tcp_port
from common.telemetry.stream import MonitorMessage
from tests.procs import ROOT, Daemon, metrics, wait_for
from tx.control import ControlRequest
from tx.ctl import request

pytestmark = pytest.mark.slow


def ep() -> str:
    return f"tcp://127.0.0.1:{free_tcp_port()}"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def start_pair(bundle: Path, tmp: Path, *tx_extra: str) -> tuple[Daemon, Daemon, dict[str, str], dict[str, int]]:
    eps = {"data": ep(), "control": ep(), "tx_mon": ep(), "rx_mon": ep()}
    ports = {"tx": free_tcp_port(), "rx": free_tcp_port()}
    rx = Daemon("rx", ["--dataset", "digits", "--bundle", str(bundle), "--bind", eps["data"],
                       "--metrics-out", str(tmp / "rx.jsonl"), "--monitor", eps["rx_mon"],
                       "--prometheus-port", str(ports["rx"]), "--prometheus-addr", "127.0.0.1"], tmp / "rx.log")
    tx = Daemon("tx", ["--dataset", "digits", "--bundle", str(bundle), "--endpoint", eps["data"],
                       "--control", eps["control"], "--metrics-out", str(tmp / "tx.jsonl"),
                       "--monitor", eps["tx_mon"], "--prometheus-port", str(ports["tx"]),
                       "--prometheus-addr", "127.0.0.1", "--batches", "0", *tx_extra], tmp / "tx.log")
    return rx, tx, eps, ports


def test_metrics_scrape_and_monitor_stream_match_the_metrics_files(digits_bundle_dir: Path, tmp_path: Path) -> None:
    rx, tx, eps, ports = start_pair(digits_bundle_dir, tmp_path, "--interval", "0.1", "--max-inflight", "1")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(eps["tx_mon"])
    sub.connect(eps["rx_mon"])
    rogue = ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(eps["data"])
    seen: list[MonitorMessage] = []

    def drain() -> None:
        while sub.poll(0):
            seen.append(MonitorMessage.decode(sub.recv_multipart()))

    try:
        wait_for(lambda: drain() or len(metrics(tmp_path / "tx.jsonl")) >= 2, 60, "two acknowledged batches")
        assert not request(eps["control"], ControlRequest("set-modulation", "1024qam"))["ok"]
        switch = request(eps["control"], ControlRequest("set-modulation", "64qam"))["effective_from_batch"]
        rogue.send_multipart([msgpack.packb({"kind": "batch", "v": 1}), b"junk"])
        rogue.send(b"\xc1 not msgpack")
        wait_for(lambda: drain() or len(metrics(tmp_path / "tx.jsonl")) >= switch + 2, 60, "two batches at 64qam")
        request(eps["control"], ControlRequest("pause"))
        wait_for(lambda: request(eps["control"], ControlRequest("status"))["status"]["inflight"] == 0, 30,
                 "TX to settle")
        time.sleep(0.3)
        drain()
        tx_m, rx_m = scrape(ports["tx"]), scrape(ports["rx"])
    finally:
        tx.stop()
        rx.stop()
        sub.close(0)
        rogue.close(0)
        ctx.term()
    tx_rows, rx_rows = metrics(tmp_path / "tx.jsonl"), metrics(tmp_path / "rx.jsonl")
    n = len(tx_rows)
    assert n >= switch + 2 and all(r["status"] == "ok" for r in tx_rows) and len(rx_rows) == n
    for m in (tx_m, rx_m):
        assert m[("semalign_batches_total", (("status", "ok"),))] == n
        for name in ("comm", "finetune", "classify", "e2e"):
            assert m[(f"semalign_latency_{name}_seconds_count", ())] == n
        assert m[("semalign_latency_e2e_seconds_sum", ())] == pytest.approx(
            sum(r["latency_e2e_s"] for r in tx_rows), rel=1e-6)
        assert m[("semalign_resends_total", ())] == 0
        assert m[("semalign_frames_lost_total", ())] == 0 and m[("semalign_vectors_lost_total", ())] == 0
        assert (m[("semalign_bits_per_symbol", ())], m[("semalign_alpha", ())]) == (6, 30)
        assert m[("semalign_monitor_dropped_total", ())] == 0
    assert tx_m[("semalign_n_max", ())] == 191
    assert tx_m[("semalign_accuracy", ())] == tx_rows[-1]["accuracy"]
    assert tx_m[("semalign_control_total", (("result", "refused"),))] == 1
    assert tx_m[("semalign_control_total", (("result", "ok"),))] >= 3  # set-modulation, pause, status polls
    assert rx_m[("semalign_rejected_total", (("code", "envelope"),))] == 2
    bound = tx_rows[-1]["latency_comm_bound_s"]
    assert tx_m[("semalign_sync_bound_seconds", ())] == pytest.approx(bound)
    # The stream: every row as a record (instants left out), the control change and the rejections.
    records = {(m.role, m.data["batch"]) for m in seen if m.topic == "record"}
    assert {("tx", r["batch"]) for r in tx_rows} <= records and {("rx", r["batch"]) for r in rx_rows} <= records
    events = [(m.role, m.data) for m in seen if m.topic == "event"]
    assert any(role == "tx" and e["name"] == "control" and e.get("effective_from_batch") == switch
               for role, e in events)
    assert any(role == "tx" and e["name"] == "control" and not e["ok"] and "1024qam" in e["error"]
               for role, e in events)
    assert sum(1 for role, e in events if role == "rx" and e["name"] == "rejected") == 2
    assert {m.role for m in seen if m.topic == "status"} == {"tx", "rx"}


#: A tmux server of these tests' own, so no other server's options or sessions touch ours.
TMUX = ["tmux", "-L", f"semalign-test-{os.getpid()}", "-f", "/dev/null"]
#: Without COLUMNS and LINES: when the test runner has them (80x24), the pane inherits them and
#: the watcher believes them over the pane's real size.
TMUX_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


def tmux(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TMUX, *args], check=check, capture_output=True, text=True, timeout=10, env=TMUX_ENV)


def capture(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session, check=False).stdout


def batch_rows(screen: str, modulation: str) -> list[int]:
    """Batch numbers of the table rows showing ``modulation``."""
    return [int(m.group(1)) for m in re.finditer(rf"^\s*(\d+)\s+{modulation}\s+\d+\s+\d+\s+[\d.]+", screen, re.M)]


def showing(screen: str, modulation: str, rows: int) -> str | None:
    """The screen if its header shows ``modulation`` and its table at least ``rows`` batches of it."""
    ok = f"modulation: {modulation}" in screen and len(batch_rows(screen, modulation)) >= rows
    return screen if ok else None


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_watch_in_tmux_shows_the_link_and_a_key_changes_the_modulation(digits_bundle_dir: Path,
                                                                       tmp_path: Path) -> None:
    pytest.importorskip("textual")
    rx, tx, eps, _ = start_pair(digits_bundle_dir, tmp_path, "--interval", "0.25", "--max-inflight", "1")
    session = f"semalign-watch-{free_tcp_port()}"
    command = (f"cd {ROOT} && PYTHONPATH={ROOT} {sys.executable} -m common.cli watch "
               f"--tx {eps['tx_mon']} --rx {eps['rx_mon']}")
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "50", command)
    tmux("resize-window", "-t", session, "-x", "160", "-y", "50")  # pinned: window-size manual
    try:
        screen = wait_for(lambda: showing(capture(session), "256qam", 3), 60,
                          "the header and three batches at 256qam", interval=0.3)
        assert f"TX live at {eps['tx_mon']}" in screen and f"RX live at {eps['rx_mon']}" in screen
        assert "accuracy per batch" in screen and "comm / C / D per batch" in screen
        tmux("send-keys", "-t", session, "m")
        wait_for(lambda: "modulation for the next batch" in capture(session), 10, "the modulation picker")
        tmux("send-keys", "-t", session, "Up", "Enter")
        screen = wait_for(lambda: showing(capture(session), "64qam", 2), 60,
                          "the header and two batches at 64qam", interval=0.3)
        assert "applied from batch" in " ".join(screen.split())
        first_64 = min(batch_rows(screen, "64qam"))
        assert all(b < first_64 for b in batch_rows(screen, "256qam"))
        # Issue 16, defect 17: at 80x24 the compact layout keeps the plots, the table and its alignment columns.
        tmux("resize-window", "-t", session, "-x", "80", "-y", "24")
        small = wait_for(lambda: (s := capture(session)) and "mod: 64qam" in s and "action" in s and s, 20,
                         "the compact layout", interval=0.3)
        assert re.search(r"batch\s+mod\s+alpha\s+acc\s+comm ms\s+shift\s+gate\s+action", small)
        assert "accuracy per batch" in small and "comm / C / D per batch" in small
        assert re.search(r"^\s*\d+\s+64qam\s+30\s+[\d.]+", small, re.M)
        assert all(len(line) <= 80 for line in small.splitlines())
        tmux("send-keys", "-t", session, "q")
        wait_for(lambda: tmux("has-session", "-t", session, check=False).returncode != 0, 15, "watch to quit on q")
    finally:
        tmux("kill-server", check=False)
        tx.stop()
        rx.stop()
    rows = metrics(tmp_path / "tx.jsonl")
    assert any(r["modulation"] == "64qam" for r in rows) and rows[0]["modulation"] == "256qam"


def test_tx_says_on_its_stream_when_rx_is_unreachable_and_when_it_stops(digits_bundle_dir: Path,
                                                                        tmp_path: Path) -> None:
    """Issue 16, defect 17: both were only in TX's log, never on the watcher's screen."""
    data, tx_mon = ep(), ep()  # nothing listens at ``data``: no RX
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"event")
    sub.connect(tx_mon)
    tx = Daemon("tx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--endpoint", data,
                       "--control", ep(), "--monitor", tx_mon, "--hello-timeout", "8"], tmp_path / "tx.log")
    # TX says rx_unreachable at once and every 5 s: the first may go before this subscriber has
    # joined (a PUB keeps nothing for late joiners), the one at 5 s cannot.
    events: list[dict[str, object]] = []

    def drain() -> bool:
        while sub.poll(0):
            events.append(MonitorMessage.decode(sub.recv_multipart()).data)
        return any(e["name"] == "stopped" for e in events)

    try:
        wait_for(drain, 60, "TX's stopped event")
    finally:
        tx.stop()
        sub.close(0)
        ctx.term()
    unreachable = [e for e in events if e["name"] == "rx_unreachable"]
    assert unreachable and unreachable[0]["endpoint"] == data
    (stopped,) = [e for e in events if e["name"] == "stopped"]
    assert "no receiver answered" in str(stopped["fatal"]) and stopped["finished"] is False


def test_watch_steers_the_selected_one_of_two_receivers(digits_bundle_dir: Path, tmp_path: Path) -> None:
    """Issue 17: watch shows a row per receiver of a real TX, and its keys steer only the selected one."""
    pytest.importorskip("textual")
    import asyncio

    from textual.widgets import DataTable

    from common.tools.watch.app import WatchApp, default_control
    from common.tools.watch.source import MonitorSource
    from tests.integration.test_daemons import start_rx

    eps = {name: ep() for name in "ab"}
    ctl_ep, tx_mon = ep(), ep()
    rxs = [start_rx(digits_bundle_dir, data, tmp_path, name=name) for name, data in eps.items()]
    tx = Daemon("tx", ["--dataset", "digits", "--bundle", str(digits_bundle_dir), "--control", ctl_ep,
                       "--receivers", *(f"{name}={data}" for name, data in eps.items()), "--modulation", "256qam",
                       "--batches", "0", "--interval", "0.2", "--max-inflight", "1", "--monitor", tx_mon,
                       "--metrics-out", str(tmp_path / "tx.jsonl")], tmp_path / "tx.log")

    def plans() -> dict[str, str]:
        reply = request(ctl_ep, ControlRequest("status"))
        return {name: each["plan"]["modulation"] for name, each in reply["receivers"].items()}

    async def watch() -> list[str]:
        app = WatchApp(MonitorSource([tx_mon]), tx_mon, control=default_control)
        async with app.run_test(size=(80, 24)) as pilot:
            receivers = app.query_one("#receivers", DataTable)

            async def until(condition: Any, what: str, timeout_s: float = 60.0) -> None:
                for _ in range(int(timeout_s / 0.1)):
                    if condition():
                        return
                    await pilot.pause(0.1)
                raise AssertionError(f"timed out waiting for {what}: {[e.text for e in app.state.events]}")

            await until(lambda: receivers.row_count == 2 and app.state.control_endpoint() == ctl_ep,
                        "a row per receiver and TX's control endpoint")
            await pilot.press("tab")
            await until(lambda: app.state.current() == "b", "b selected")
            await pilot.press("m")
            await pilot.pause(0.2)
            await pilot.press("up", "enter")  # from b's 256qam, one up is 64qam
            await until(lambda: any("ctl --rx b set-modulation 64qam: " in e.text and "applied" in e.text
                                    for e in app.state.events), "TX's reply to the request for b")
            await until(lambda: [str(receivers.get_row_at(i)[1]) for i in range(2)] == ["256qam", "64qam"],
                        "b's new plan in its row, a's unchanged")
            return [e.text for e in app.state.events]

    try:
        wait_for(lambda: len(metrics(tmp_path / "tx.jsonl")) >= 2, 90, "batches flowing")
        asyncio.run(watch())
        assert plans() == {"a": "256qam", "b": "64qam"}
    finally:
        tx.stop()
        for rx in rxs:
            rx.stop()
