"""The watcher's model: header, histories, events and liveness from monitor messages (no terminal)."""

from __future__ import annotations

import numpy as np
import pytest

from common.telemetry.stream import MonitorMessage, constellation_data
from common.tools.watch.source import NOT_ALLOWED, Refusal
from common.tools.watch.state import HISTORY, MAX_RECEIVERS, STALE_S, WatchState

TX, RX = "tcp://10.0.0.1:5557", "tcp://10.0.0.2:5558"


def msg(topic: str, data: dict[str, object], *, role: str = "tx", seq: int = 1) -> MonitorMessage:
    return MonitorMessage(topic, role, seq, 0, data)


STATUS = {"plan": {"modulation": "256qam", "alpha": 40, "b_max": 40000, "n_max": 193, "value_type": "float32"},
          "policy": "proportional", "link_policy": "manual", "paused": False, "transport": "zmq",
          "control": "tcp://0.0.0.0:5556", "sync_source": "gps_pps", "sync_bound_s": 1e-6}


def test_header_from_status_and_rows() -> None:
    state = WatchState(TX, RX)
    state.apply(msg("status", STATUS), 0.0)
    state.apply(msg("status", {"adapt": {"mode": "lora", "policy": "auto"}, "sync_source": "chrony"}, role="rx"), 0.0)
    state.apply(msg("record", {"batch": 0, "status": "ok", "shift": "rotate:20", "comm_basis": "synchronised",
                               "latency_comm_bound_s": 2e-6}, seq=2), 0.0)
    header = state.header()
    assert (header["modulation"], header["alpha"], header["B_max"], header["N_max"]) == ("256qam", "40", "40000", "193")
    assert header["value type"] == "float32" and header["alignment"] == "lora/auto"
    assert header["shift"] == "rotate:20"
    assert header["clock sync"] == "TX gps_pps, RX chrony; B-A synchronised ± 0.00 ms"
    # A wildcard bind is reached at the monitor's host.
    assert state.control_endpoint() == "tcp://10.0.0.1:5556"


@pytest.mark.parametrize(
    ("data", "text", "level"),
    [
        ({"name": "control", "ok": True, "message": "set-modulation applied from batch 4",
          "plan": {"b_max": 30000, "alpha": 30, "n_max": 191}},
         "TX control: set-modulation applied from batch 4 (B_max=30000 alpha=30 N_max=191)", "info"),
        ({"name": "control", "ok": False, "error": "unknown modulation '1024qam'"},
         "TX control refused: unknown modulation '1024qam'", "warning"),
        ({"name": "resend", "batch": 7, "attempt": 1}, "TX resend: batch 7 attempt 1", "warning"),
        ({"name": "rejected", "code": "bad_magic", "batch": 3, "detail": "magic b'XX'"},
         "TX rejected [bad_magic] batch 3: magic b'XX'", "error"),
        ({"name": "amc", "snr_db": 29.94, "after_batch": 4, "was": "256qam", "from_batch": 5,
          "plan": {"modulation": "64qam", "b_max": 30000, "alpha": 30, "n_max": 191}},
         "TX AMC: SNR 29.9 dB after batch 4: 256qam -> 64qam from batch 5 (B_max=30000 alpha=30 N_max=191)", "info"),
        ({"name": "something", "x": 1}, "TX something: x=1", "info"),
        ({"name": "rx_unreachable", "endpoint": "tcp://10.0.0.2:5555", "unacknowledged": 2},
         "TX: RX unreachable at tcp://10.0.0.2:5555 (2 batches unacknowledged)", "warning"),
        ({"name": "stopped", "finished": True, "fatal": None, "signal": None, "acked": 8, "lost": 0,
          "unacknowledged": 0}, "TX finished: 8 batches acknowledged, 0 lost, 0 unacknowledged", "info"),
        ({"name": "stopped", "finished": False, "fatal": "no receiver answered", "acked": 0, "lost": 0,
          "unacknowledged": 1},
         "TX stopped: no receiver answered (0 batches acknowledged, 0 lost, 1 unacknowledged)", "error"),
        ({"name": "stopped", "finished": False, "fatal": None, "signal": 15, "acked": 3, "lost": 0,
          "unacknowledged": 1}, "TX stopped (signal 15): 3 batches acknowledged, 0 lost, 1 unacknowledged", "warning"),
    ],
)
def test_events_are_described(data: dict[str, object], text: str, level: str) -> None:
    state = WatchState(TX)
    state.apply(msg("event", data), 0.0)
    (event,) = state.events
    assert (event.text, event.level) == (text, level)


def test_liveness_waiting_silent_back_and_restarted() -> None:
    state = WatchState(TX, RX)
    assert state.tx.describe(0.0) == f"waiting for TX at {TX}"
    state.apply(msg("status", STATUS, seq=5), 1.0)
    assert state.tx.describe(1.5) == f"TX live at {TX}"
    assert state.tx.describe(1.0 + STALE_S + 1).startswith(f"waiting for TX at {TX} (silent for")
    assert state.tick(1.0 + STALE_S + 1)
    state.apply(msg("status", STATUS, seq=6), 20.0)
    assert state.events[-1].text == f"TX back at {TX}"
    state.apply(msg("status", STATUS, seq=1), 21.0)
    assert state.events[-1].text == "TX restarted" and state.tx.restarts == 1


def test_history_is_bounded_and_series_skip_gaps() -> None:
    state = WatchState(TX, RX)
    for batch in range(HISTORY + 10):
        state.apply(msg("record", {"batch": batch, "status": "ok", "accuracy": None if batch % 2 else 0.5},
                        seq=batch + 1), 0.0)
        state.apply(msg("record", {"batch": batch, "snr_db": 30.0}, role="rx", seq=batch + 1), 0.0)
    assert len(state.batches) == HISTORY and next(iter(state.batches)) == 10
    xs, ys = state.series("accuracy")
    assert xs == list(range(10, HISTORY + 10, 2)) and set(ys) == {0.5}
    assert state.series("snr_db")[0] == []
    assert len(state.series("snr_db", rx_fallback=True)[0]) == HISTORY


def test_untrusted_fields_never_raise() -> None:
    state = WatchState(TX)
    state.apply(msg("record", {"batch": "seven"}), 0.0)
    state.apply(msg("status", {"plan": "not a map", "control": 5}), 0.0)
    state.apply(msg("event", {"name": "amc", "plan": [1], "snr_db": "loud"}), 0.0)
    assert state.bad_messages == 1 and not state.batches
    assert state.header()["modulation"] == "-" and state.control_endpoint() is None


def test_constellation_is_kept() -> None:
    state = WatchState(TX, RX)
    points = np.array([0.7 + 0.7j, -0.7 - 0.7j], np.complex64)
    state.apply(msg("constellation", constellation_data(9, "qpsk", points), role="rx"), 0.0)
    assert state.constellation is not None
    batch, modulation, got = state.constellation
    assert (batch, modulation) == (9, "qpsk")
    np.testing.assert_array_equal(got, points)


def test_a_refusal_is_described_counted_down_and_its_end_said() -> None:
    state = WatchState(TX, RX)
    state.refused({RX: Refusal(NOT_ALLOWED, 4.0)}, 10.0)
    assert state.rx is not None
    assert state.rx.describe(11.0) == f"refused by RX at {RX}: {NOT_ALLOWED}; trying again in 3 s"
    assert state.tick(11.0)  # the count-down redraws
    assert [(e.text, e.level) for e in state.events] == [(f"refused by RX at {RX}: {NOT_ALLOWED}", "error")]
    state.refused({RX: Refusal(NOT_ALLOWED, 8.0, count=2)}, 14.0)  # refused again: the same reason, no new line
    assert len(state.events) == 1 and state.rx.describe(14.0).endswith("trying again in 8 s")
    state.refused({}, 20.0)
    assert state.events[-1].text == f"RX at {RX} admitted this watcher"
    assert state.rx.describe(20.0) == f"waiting for RX at {RX}"


def test_a_request_line_takes_its_reply_and_the_echo_is_not_shown_twice() -> None:
    state = WatchState(TX)
    reply = {"v": 1, "ok": False, "error": "alpha 999 exceeds the bundle's 40 PCA dimensions"}
    line = state.add("ctl set-alpha 999 -> tcp://10.0.0.1:5556: sent")
    state.replace(line, "ctl set-alpha 999 refused: alpha 999 exceeds ...", "error")
    state.own_reply(reply)
    state.apply(msg("event", {"name": "control", **reply}), 0.0)
    assert [e.text for e in state.events] == ["ctl set-alpha 999 refused: alpha 999 exceeds ..."]
    state.apply(msg("event", {"name": "control", **reply}, seq=2), 0.0)  # another operator, the same request
    assert len(state.events) == 2


@pytest.mark.parametrize(("transport", "radio"), [("zmq", False), ("sim", True), ("pluto", True), (None, False)])
def test_radio_follows_the_transport(transport: str | None, radio: bool) -> None:
    state = WatchState(TX)
    state.apply(msg("status", {**STATUS, "transport": transport}), 0.0)
    assert state.radio() is radio


# -- several receivers (issue 17): rows kept per receiver, the screen follows the selected one ----------------


def plan(modulation: str, alpha: int) -> dict[str, object]:
    return {"modulation": modulation, "alpha": alpha, "b_max": alpha * 1000, "n_max": 190 + alpha // 10,
            "value_type": "float32"}


def many_status(paused: str | None = None) -> dict[str, object]:
    receivers = {name: {"plan": plan(mod, alpha), "acked": acked, "lost": lost, "accuracy": 0.5, "paused": name == paused,
                        "shift": "none", "policy": "fixed", "link_policy": "manual", "given_up": None}
                 for name, mod, alpha, acked, lost in (("a", "256qam", 40, 7, 0), ("b", "64qam", 30, 5, 1),
                                                       ("c", "qpsk", 10, 2, 3))}
    return {**STATUS, "receivers": receivers}


def test_rows_of_several_receivers_are_kept_apart_and_the_selected_one_is_followed() -> None:
    state = WatchState(TX)
    state.apply(msg("status", many_status()), 0.0)
    for name, accuracy in (("a", 0.9), ("b", 0.7), ("c", 0.4)):  # each link numbers its own batches from 0
        state.apply(msg("record", {"batch": 0, "status": "ok", "rx": name, "accuracy": accuracy, "gate": -0.01,
                                   "align_action": f"act-{name}", "shift": f"rotate:{len(name)}"}), 0.0)
    assert state.multi() and state.receivers() == ["a", "b", "c"] and state.current() == "a"
    assert state.series("accuracy") == ([0], [0.9])
    assert state.header()["modulation"] == "256qam" and state.target() == "a"
    state.select_next()
    assert state.current() == "b" and state.series("accuracy") == ([0], [0.7])
    assert (state.header()["modulation"], state.header()["alpha"], state.header()["B_max"]) == ("64qam", "30", "30000")
    state.select("c")
    state.select_next()
    assert state.current() == "a"  # Tab wraps round
    rows = state.receiver_rows()
    assert [(r["rx"], r["modulation"], r["alpha"], r["acked/lost"], r["accuracy"], r["gate"], r["action"])
            for r in rows] == [("a", "256qam", "40", "7/0", "0.900", "-0.010", "act-a"),
                               ("b", "64qam", "30", "5/1", "0.700", "-0.010", "act-b"),
                               ("c", "qpsk", "10", "2/3", "0.400", "-0.010", "act-c")]


def test_pause_follows_the_selected_receiver() -> None:
    state = WatchState(TX)
    state.apply(msg("status", many_status(paused="b")), 0.0)
    assert not state.paused()
    state.select("b")
    assert state.paused()


def test_with_several_receivers_lines_name_the_receiver_and_rx_rows_are_not_merged() -> None:
    state = WatchState(TX, RX)
    state.apply(msg("status", many_status()), 0.0)
    state.apply(msg("event", {"name": "resend", "batch": 7, "attempt": 1, "rx": "b"}), 0.0)
    state.apply(msg("record", {"batch": 3, "status": "lost", "reason": "no acknowledgement", "rx": "c"}), 0.0)
    assert [e.text for e in state.events] == ["TX to b resend: batch 7 attempt 1",
                                              "batch 3 to c lost: no acknowledgement"]
    # Which of TX's receivers the watched RX is, nobody says: its rows fill no receiver's gaps.
    state.apply(msg("record", {"batch": 0, "status": "ok", "rx": "a"}), 0.0)
    state.apply(msg("record", {"batch": 0, "snr_db": 30.0}, role="rx"), 0.0)
    assert state.series("snr_db", rx_fallback=True)[0] == []


def test_one_receiver_named_rx_looks_as_before() -> None:
    state = WatchState(TX, RX)
    state.apply(msg("status", {**STATUS, "rx": "rx", "receivers": {"rx": {"plan": plan("64qam", 30)}}}), 0.0)
    state.apply(msg("event", {"name": "resend", "batch": 7, "attempt": 1, "rx": "rx"}), 0.0)
    state.apply(msg("record", {"batch": 0, "status": "ok", "rx": "rx"}), 0.0)
    state.apply(msg("record", {"batch": 0, "snr_db": 30.0}, role="rx"), 0.0)
    assert not state.multi() and state.target() is None
    assert state.events[-1].text == "TX resend: batch 7 attempt 1"
    assert state.header()["modulation"] == "256qam"  # TX's own status, as before
    assert state.series("snr_db", rx_fallback=True)[0] == [0]


def test_receiver_names_are_bounded() -> None:
    state = WatchState(TX)
    for i in range(MAX_RECEIVERS + 5):
        state.apply(msg("record", {"batch": 0, "status": "ok", "rx": f"r{i}"}, seq=i + 1), 0.0)
    state.apply(msg("record", {"batch": 1, "status": "ok", "rx": "x" * 1000}, seq=99), 0.0)
    # The overlong name is no name (it would go to the unnamed table): refused like the others past the cap.
    assert len(state.tables) == MAX_RECEIVERS and state.bad_messages == 6 and "" not in state.tables
