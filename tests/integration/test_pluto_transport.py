"""Both daemons over the air: TX and RX drive PlutoRadio through a fake ``adi`` sharing one air.

The daemons run in threads of this process so the fake radio module can be injected; their
sockets, messages and radio code are the real ones.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from common.data.spec import load_dataset
from common.ml.bundle import Bundle
from common.radio.pluto import PlutoConfig
from common.runtime import StopFlag, free_tcp_port
from rx.config import RxConfig
from rx.daemon import RxDaemon
from tests.fakes.air import Air, AirModule
from tests.procs import metrics
from tx.config import TxConfig
from tx.daemon import TxDaemon

pytestmark = pytest.mark.slow

RADIO = PlutoConfig(uri="ip:fake-air", rx_buffer_size=16384, tx_buffer_size=16384)


def run_pair(bundle: Bundle, tmp_path: Path, air: Air, monkeypatch: pytest.MonkeyPatch, **tx_settings: object) -> tuple[int, list[dict[str, object]], AirModule]:
    module = AirModule(air)
    monkeypatch.setitem(sys.modules, "adi", module)
    data_ep, ctl_ep = f"tcp://127.0.0.1:{free_tcp_port()}", f"tcp://127.0.0.1:{free_tcp_port()}"
    rx = RxDaemon(RxConfig(bind=data_ep, pluto=RADIO, gpsd="off", metrics_out=str(tmp_path / "rx.jsonl")), bundle)
    tx_config = TxConfig(endpoint=data_ep, control=ctl_ep, transport="pluto", pluto=RADIO, max_inflight=1,
                         gpsd="off", metrics_out=str(tmp_path / "tx.jsonl"), **tx_settings)  # type: ignore[arg-type]
    tx = TxDaemon(tx_config, bundle, load_dataset("digits"))
    rx_stop, tx_stop = StopFlag(), StopFlag()
    codes: list[int] = []
    threads = [threading.Thread(target=rx.run, args=(rx_stop,), daemon=True),
               threading.Thread(target=lambda: codes.append(tx.run(tx_stop)), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        threads[1].join(180)
        assert not threads[1].is_alive(), "TX did not finish its batches"
    finally:
        tx_stop.set()
        rx_stop.set()
        threads[0].join(10)
        tx.close()
        rx.close()
    return codes[0], metrics(tmp_path / "tx.jsonl"), module


def test_batches_over_the_air_with_amc(digits_bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 33 dB is below 256QAM's AMC threshold (34 dB) and above 64QAM's (28 dB).
    air = Air(RADIO.sample_rate_hz, snr_db=33.0)
    code, records, module = run_pair(digits_bundle, tmp_path, air, monkeypatch,
                                     batches=3, modulation="256qam", link_policy="amc")
    assert code == 0
    assert [r["batch"] for r in records] == [0, 1, 2] and all(r["status"] == "ok" for r in records)
    assert all(abs(r["snr_db"] - 33.0) < 2.0 for r in records)
    assert records[0]["modulation"] == "256qam"
    for r in records[1:]:
        assert (r["modulation"], r["alpha"], r["frames_lost"], r["vectors_lost"]) == ("64qam", 30, 0, 0)
        assert r["accuracy"] > 0.8
    # Only the envelope rode ZeroMQ; every burst went over the air, buffer by buffer.
    assert all(r["wire_bytes"] == 0 for r in records)
    assert air.bursts >= 3 * 2
    assert len(module.devices) == 2


def test_air_ready_handshake_puts_every_burst_inside_the_capture(digits_bundle: Bundle, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """TX transmits only after RX said it captures, so at a clean SNR no frame is lost."""
    air = Air(RADIO.sample_rate_hz, snr_db=40.0)
    code, records, _ = run_pair(digits_bundle, tmp_path, air, monkeypatch, batches=2, modulation="64qam",
                                interval_s=0.3)
    assert code == 0
    assert [(r["frames_lost"], r["vectors_lost"]) for r in records] == [(0, 0), (0, 0)]
