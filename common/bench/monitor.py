"""``semalign bench monitor``: the monitor stream never slows TX, even when a subscriber stops reading.

TX's sustained batch rate (real daemons on loopback, digits) with the monitor off, with a
monitor nobody subscribes to, and with a subscriber that connects and never reads; cases
interleaved over rounds, read from TX's own Prometheus counters, with the drops it counted.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common.errors import BenchError
from common.runtime import free_tcp_port, spawn_cli, stop_process

CASES = ("off", "no-subscriber", "stalled-subscriber")
#: Batches TX must have acknowledged before the measured window opens.
WARM_BATCHES = 5
START_TIMEOUT_S = 120.0


def _scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


def _acked(m: dict[str, float]) -> float:
    return m.get("semalign_batches_total{status=ok}", 0.0)


def run_case(case: str, bundle: Path, workdir: Path, *, seconds: float, hwm: int) -> dict[str, Any]:
    """One measurement: fresh RX and TX, ``seconds`` of streaming after a warm-up."""
    import zmq

    data, ctl, mon = (f"tcp://127.0.0.1:{free_tcp_port()}" for _ in range(3))
    prom = free_tcp_port()
    common = ["--dataset", "digits", "--bundle", str(bundle)]
    monitor = [] if case == "off" else ["--monitor", mon, "--monitor-hwm", str(hwm)]
    rx = spawn_cli(["rx", *common, "--bind", data, "--log-level", "warning"], workdir / f"rx-{case}.log")
    tx = spawn_cli(["tx", *common, "--endpoint", data, "--control", ctl, "--batches", "0", "--interval", "0",
                    "--max-inflight", "2", "--log-level", "warning", "--prometheus-port", str(prom),
                    "--prometheus-addr", "127.0.0.1", *monitor], workdir / f"tx-{case}.log")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = None
    try:
        if case == "stalled-subscriber":
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, 1)
            sub.setsockopt(zmq.RCVBUF, 4096)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(mon)  # and never reads
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if tx.poll() is not None or rx.poll() is not None:
                raise BenchError(f"a daemon exited early; see {workdir}")
            try:
                if _acked(_scrape(prom)) >= WARM_BATCHES:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"TX acknowledged fewer than {WARM_BATCHES} batches in {START_TIMEOUT_S:g} s")
            time.sleep(0.2)
        t0, m0 = time.monotonic(), _scrape(prom)
        time.sleep(seconds)
        t1, m1 = time.monotonic(), _scrape(prom)
    finally:
        if sub is not None:
            sub.close(0)
        ctx.term()
        stop_process(tx)
        stop_process(rx)
    return {"case": case, "batches": _acked(m1) - _acked(m0), "seconds": t1 - t0,
            "rate": (_acked(m1) - _acked(m0)) / (t1 - t0),
            "dropped": m1.get("semalign_monitor_dropped_total", 0.0),
            "dropped_in_window": m1.get("semalign_monitor_dropped_total", 0.0)
            - m0.get("semalign_monitor_dropped_total", 0.0)}


#: A TX metrics row as the daemon writes it (digits, 256QAM), for the per-record cost.
SAMPLE_RECORD: dict[str, Any] = {
    "batch": 3, "modulation": "256qam", "alpha": 40, "b_max": 40000, "n_max": 193, "value_type": "float32",
    "shift": "none", "n_test": 50, "n_train": 193, "payload_bytes": 39860, "transport": "zmq",
    "wire_bytes": 39860, "accuracy": 0.96, "attempts": 1, "encode_s": 0.0069, "status": "ok",
    "n_test_delivered": 50, "vectors_lost": 0, "frames_lost": 0, "snr_db": None, "latency_comm_s": 0.0077,
    "latency_comm_raw_s": 0.0081, "latency_comm_bound_s": 0.0016, "comm_basis": "estimated",
    "comm_gps_grade": False, "comm_flags": ["tx_unsynchronised", "rx_unsynchronised"], "sync_tx": "none",
    "sync_rx": "none", "latency_finetune_s": 0.0013, "latency_classify_s": 0.0003, "latency_e2e_s": 0.0094,
    "adapt": "lora", "policy": "auto", "gate": -0.013, "align_action": "skip", "train_loss": float("nan"),
    "rtt_s": 0.0164, "t_a_ns": 1_764_000_000_000_000_000, "t_b_ns": 1_764_000_000_008_000_000,
}


def per_record_cost(count: int = 20000) -> list[tuple[str, float]]:
    """Seconds per ``Telemetry.record`` call: off (the baseline), memory twin, XPUB, XPUB + exporter."""
    import zmq

    from common.telemetry import MemoryPublisher, Telemetry
    from common.telemetry.prometheus import Exporter
    from common.telemetry.publisher import ZmqPublisher

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    setups: list[tuple[str, Any, Any]] = [
        ("off", None, None), ("memory twin", MemoryPublisher(capacity=0), None),
        ("xpub, no subscriber", ZmqPublisher(ctx, "tcp://127.0.0.1:*"), None),
        ("xpub + prometheus", ZmqPublisher(ctx, "tcp://127.0.0.1:*"), Exporter()),
    ]
    out = []
    for name, publisher, exporter in setups:
        telemetry = Telemetry("tx", publisher, exporter)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(count):
                telemetry.record(SAMPLE_RECORD)
            best = min(best, (time.perf_counter() - start) / count)
        telemetry.close()
        out.append((name, best))
    ctx.term()
    return out


def monitor_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="semalign bench monitor", description=__doc__)
    p.add_argument("--seconds", type=float, default=15.0, help="measured window per case and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the cases are interleaved in each")
    p.add_argument("--hwm", type=int, default=100, help="monitor_hwm of the monitor cases")
    p.add_argument("--bundle", type=Path, help="digits bundle (default: built and cached on first use)")
    p.add_argument("--workdir", type=Path, help="keep the daemons' logs here")
    p.add_argument("--micro-only", action="store_true", help="only the per-record cost (no daemons)")
    args = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every case's finally stops its daemons.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from common.ml.bundle import default_bundle_dir
    from common.ml.pretrain import ensure_bundle

    if args.micro_only:
        for name, seconds in per_record_cost():
            print(f"{name:>20}: {seconds * 1e6:7.1f} us per record")
        return 0
    bundle = args.bundle or default_bundle_dir("digits")
    ensure_bundle("digits", out=bundle)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="semalign-bench-monitor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    for round_ in range(args.rounds):
        # Rotate the order so drift (thermal, other load) does not favour one case.
        for case in CASES[round_ % 3:] + CASES[:round_ % 3]:
            r = run_case(case, bundle, workdir, seconds=args.seconds, hwm=args.hwm)
            results[case].append(r)
            print(f"round {round_ + 1} {case:>18}: {r['batches']:.0f} batches in {r['seconds']:.1f} s = "
                  f"{r['rate']:.1f} batches/s, monitor drops {r['dropped']:.0f}", flush=True)
    base = statistics.median(r["rate"] for r in results["off"])
    print(f"\nTX batch rate, {args.rounds} rounds x {args.seconds:g} s, monitor_hwm {args.hwm}, digits, loopback")
    print(f"{'case':>18} {'median b/s':>10} {'min':>7} {'max':>7} {'ratio':>6} {'drops (last)':>12}")
    for case in CASES:
        rates = [r["rate"] for r in results[case]]
        median = statistics.median(rates)
        print(f"{case:>18} {median:>10.1f} {min(rates):>7.1f} {max(rates):>7.1f} {median / base:>6.3f} "
              f"{results[case][-1]['dropped']:>12.0f}")
    spread = max(r["rate"] for r in results["off"]) / min(r["rate"] for r in results["off"]) - 1
    print(f"round-to-round spread of the baseline: {spread * 100:.1f} %")
    print("\nper Telemetry.record call, in this process (best of 3 x 20000):")
    costs = per_record_cost()
    for name, seconds in costs:
        print(f"{name:>20}: {seconds * 1e6:7.1f} us = {seconds * base * 100:.2f} % of a batch period at {base:.1f} b/s")
    return 0


if __name__ == "__main__":
    sys.exit(monitor_main(sys.argv[1:]))
