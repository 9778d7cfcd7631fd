"""``semalign bench many``: one TX serving 1, 2, 4 ... RX processes on loopback, and one killed.

For each receiver count: aggregate and per-receiver batches/s over the window where every
receiver is running, TX CPU per batch, TX and RX memory, and the aggregate against N times
the one-receiver rate of the same run. ``--kill-one S`` kills one of four receivers for S
seconds and compares the other three's rate during the outage with their rate before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.bench.soak import _LineCounter
from common.bench.system import STOP_GRACE_S, _bundle_dir, _cpu_s, _goal, _ints, _status_kb
from common.clock import NS_PER_S, realtime_ns
from common.data.spec import DATASET_NAMES
from common.errors import BenchError, ConfigError
from common.metrics import read_metrics
from common.runtime import free_tcp_port, spawn_cli, stop_process

#: Goals from the issue: the aggregate against N x one receiver's rate (up to saturation),
#: and the other receivers' rate while one is down against before.
GOAL_SCALE_RATIO = 0.8
GOAL_ISOLATION_RATIO = 0.9
#: Our processes' CPU over the window, in cores, from which the host counts as saturated.
SATURATED_FRACTION = 0.9
#: Batches each receiver serves before the window opens (start-up and warm-up left out).
WARM_BATCHES = 3
POLL_S = 0.2
#: How long the receivers may take to start and warm up before the run is given up.
START_TIMEOUT_S = 300.0
#: A fixed-batches run is given up after this long past the window's opening.
RUN_TIMEOUT_S = 600.0
#: After the killed receiver is back, the run goes on until it has served this many batches.
BACK_BATCHES = 20


@dataclass
class Fleet:
    """One TX and its receivers as processes, each RX writing its own metrics file."""

    workdir: Path
    common: list[str]
    names: list[str]
    #: TX's own flags (its modulation).
    tx_extra: list[str] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    rx: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    counters: dict[str, _LineCounter] = field(default_factory=dict)
    metrics_files: dict[str, list[Path]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    #: Each process's CPU seconds when last read while it ran: one that has just exited reads
    #: as its last figure, not as none (a window may close as TX finishes).
    cpu_seen: dict[str, float] = field(default_factory=dict)
    tx: subprocess.Popen[bytes] | None = None

    @property
    def tx_metrics(self) -> Path:
        return self.workdir / "tx.jsonl"

    def start_rx(self, name: str, generation: int = 0) -> None:
        """Start (or restart, ``generation`` > 0, on the same endpoint) receiver ``name``."""
        ep = self.endpoints.setdefault(name, f"tcp://127.0.0.1:{free_tcp_port()}")
        out = self.workdir / f"{name}.{generation}.jsonl"
        self.metrics_files.setdefault(name, []).append(out)
        self.counters[name] = _LineCounter(out)
        self.logs[name] = self.workdir / f"{name}.{generation}.log"
        # Info level for its one ``rx_ready`` line (RX logs nothing per batch at info).
        self.rx[name] = spawn_cli(["rx", *self.common, "--log-level", "info", "--bind", ep, "--threads", "1",
                                   "--metrics-out", str(out)], self.logs[name])

    def ready(self, name: str) -> bool:
        """Receiver ``name`` has loaded its bundle and warmed up (its ``rx_ready`` line)."""
        try:
            return b"rx_ready" in self.logs[name].read_bytes()
        except OSError:
            return False

    def start_tx(self, batches: int, interval_s: float, max_inflight: int) -> None:
        receivers = [f"{name}={self.endpoints[name]}" for name in self.names]
        self.tx = spawn_cli(["tx", *self.common, "--receivers", *receivers,
                             "--control", f"tcp://127.0.0.1:{free_tcp_port()}", "--batches", str(batches),
                             "--interval", str(interval_s), "--max-inflight", str(max_inflight),
                             "--metrics-out", str(self.tx_metrics), *self.tx_extra],
                            self.workdir / "tx.log")

    def served(self) -> dict[str, int]:
        """Batches each receiver's current process has served so far."""
        return {name: counter.count() for name, counter in self.counters.items()}

    def check(self, *, except_: str | None = None) -> None:
        for name, proc in self.rx.items():
            if name != except_ and proc.poll() is not None:
                raise BenchError(f"RX {name} exited with {proc.returncode}; see {self.workdir}")

    def cpu(self) -> dict[str, float]:
        procs = {"tx": self.tx, **self.rx}
        for name, proc in procs.items():
            if proc is not None and (now := _cpu_s(proc.pid)) is not None:
                self.cpu_seen[name] = now
        return dict(self.cpu_seen)

    def stop(self) -> None:
        if self.tx is not None:
            stop_process(self.tx, STOP_GRACE_S)
        for proc in self.rx.values():
            stop_process(proc, STOP_GRACE_S)

    def done_ns(self, name: str) -> list[int]:
        """When each batch was done at receiver ``name`` (every process it ran as)."""
        return [int(r["rx_done_ns"]) for path in self.metrics_files[name] if path.exists()
                for r in read_metrics(path)]

    def memory_mb(self) -> dict[str, Any]:
        """TX's and the receivers' resident set now and peak (VmHWM), MB."""
        def mb(pid: int, key: str) -> float:
            return (_status_kb(pid, key) or 0) / 1024

        assert self.tx is not None
        rx_rss = [mb(p.pid, "VmRSS") for p in self.rx.values()]
        rx_peak = [mb(p.pid, "VmHWM") for p in self.rx.values()]
        return {"tx_rss_mb": mb(self.tx.pid, "VmRSS"), "tx_peak_mb": mb(self.tx.pid, "VmHWM"),
                "rx_rss_mb_median": statistics.median(rx_rss), "rx_rss_mb_max": max(rx_rss),
                "rx_peak_mb_max": max(rx_peak), "rss_mb_total": mb(self.tx.pid, "VmRSS") + sum(rx_rss)}


def delivery(tx_metrics: Path, names: list[str]) -> dict[str, dict[str, int]]:
    """Per receiver from TX's rows: acknowledged, lost (TX's verdict) and gaps (ids below the
    highest scored one with no row: in flight when TX was stopped, or never accounted for)."""
    rows = read_metrics(tx_metrics) if tx_metrics.exists() else []
    out: dict[str, dict[str, int]] = {}
    for name in names:
        # A TX with one receiver does not label its rows.
        mine = [r for r in rows if r.get("rx", names[0]) == name]
        ids = {int(r["batch"]) for r in mine}
        out[name] = {"acked": sum(r["status"] == "ok" for r in mine),
                     "lost": sum(r["status"] == "lost" for r in mine),
                     "gaps": (max(ids) + 1 - len(ids)) if ids else 0}
    return out


def host_cpu_s() -> float | None:
    """CPU seconds every core of the host has spent busy (not idle, not waiting on I/O) since
    boot (/proc/stat): other jobs' too, so a shared host's saturation shows."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _rate(done: list[int], start_ns: int, end_ns: int) -> float:
    span = (end_ns - start_ns) / NS_PER_S
    return sum(start_ns <= d < end_ns for d in done) / span if span > 0 else float("nan")


def _wait(fleet: Fleet, until: Any, timeout_s: float, what: str, *, except_: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        fleet.check(except_=except_)
        fleet.cpu()
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not within {timeout_s:g} s; served {fleet.served()}; see {fleet.workdir}")
        time.sleep(POLL_S)


def _start(fleet: Fleet, batches: int, interval_s: float, max_inflight: int) -> None:
    for name in fleet.names:
        fleet.start_rx(name)
    # TX starts once every receiver is up, so no receiver has a head start on the others.
    _wait(fleet, lambda: all(fleet.ready(name) for name in fleet.names), START_TIMEOUT_S, "every receiver ready")
    fleet.start_tx(batches, interval_s, max_inflight)
    _wait(fleet, lambda: min(fleet.served().values()) >= WARM_BATCHES, START_TIMEOUT_S,
          f"{WARM_BATCHES} batches at every receiver")


def run_scale(common: list[str], tx_extra: list[str], n: int, *, batches: int, seconds: float, interval_s: float, max_inflight: int,
              workdir: Path) -> dict[str, Any]:
    """One TX, ``n`` receivers: rates over the window where all are running, CPU, memory, delivery.

    With ``batches`` > 0 each receiver gets that many and the window closes when the first is
    done; else the window is ``seconds`` long and TX is stopped after it.
    """
    fleet = Fleet(workdir, common, [f"r{i}" for i in range(n)], tx_extra)
    try:
        _start(fleet, batches, interval_s, max_inflight)
        start_ns, cpu0, memory0, host0 = realtime_ns(), fleet.cpu(), fleet.memory_mb(), host_cpu_s()
        t0 = time.monotonic()
        if batches > 0:
            _wait(fleet, lambda: max(fleet.served().values()) >= batches, RUN_TIMEOUT_S, "the first receiver done")
        else:
            _wait(fleet, lambda: time.monotonic() - t0 >= seconds, seconds + 60, "the window")
        end_ns, cpu1, wall_s, host1 = realtime_ns(), fleet.cpu(), time.monotonic() - t0, host_cpu_s()
        # A process that has just exited reads as 0: keep the larger of the two readings.
        memory = {k: max(v, memory0[k]) for k, v in fleet.memory_mb().items()}
        assert fleet.tx is not None
        if batches > 0:
            _wait(fleet, lambda: fleet.tx is not None and fleet.tx.poll() is not None, RUN_TIMEOUT_S, "TX to finish")
        exit_code = stop_process(fleet.tx, STOP_GRACE_S)
    finally:
        fleet.stop()
    rates = [_rate(fleet.done_ns(name), start_ns, end_ns) for name in fleet.names]
    window_batches = sum(r * (end_ns - start_ns) / NS_PER_S for r in rates)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    served = delivery(fleet.tx_metrics, fleet.names)
    return {
        "receivers": n, "window_s": (end_ns - start_ns) / NS_PER_S, "aggregate_batches_s": sum(rates),
        "per_receiver_batches_s": {"min": min(rates), "median": statistics.median(rates), "max": max(rates)},
        "tx_cpu_ms_per_batch": cpu["tx"] * 1e3 / window_batches if window_batches else None,
        "rx_cpu_ms_per_batch": sum(v for k, v in cpu.items() if k != "tx") * 1e3 / window_batches
        if window_batches else None,
        "cores_busy": sum(cpu.values()) / wall_s if wall_s > 0 else None,
        "host_cores_busy": (host1 - host0) / wall_s if host0 is not None and host1 is not None and wall_s > 0 else None,
        **memory,
        "acked": sum(d["acked"] for d in served.values()), "lost": sum(d["lost"] for d in served.values()),
        "gaps": sum(d["gaps"] for d in served.values()), "tx_exit": exit_code,
        "load_avg_1m": os.getloadavg()[0],
    }


def run_kill_one(common: list[str], tx_extra: list[str], outage_s: float, *, before_s: float, interval_s: float, max_inflight: int,
                 workdir: Path, receivers: int = 4) -> dict[str, Any]:
    """Four receivers streaming; one killed for ``outage_s`` and restarted on its endpoint."""
    fleet = Fleet(workdir, common, [f"r{i}" for i in range(receivers)], tx_extra)
    victim, others = fleet.names[-1], fleet.names[:-1]
    try:
        _start(fleet, 0, interval_s, max_inflight)
        t_before = realtime_ns()
        time.sleep(before_s)
        fleet.check()
        fleet.rx[victim].kill()
        fleet.rx[victim].wait()
        t_kill = realtime_ns()
        t0 = time.monotonic()
        _wait(fleet, lambda: time.monotonic() - t0 >= outage_s, outage_s + 60, "the outage", except_=victim)
        t_back = realtime_ns()
        fleet.start_rx(victim, generation=1)
        _wait(fleet, lambda: fleet.served()[victim] >= BACK_BATCHES, START_TIMEOUT_S,
              f"{BACK_BATCHES} batches at the restarted {victim}")
        t_end = realtime_ns()
        exit_code = stop_process(fleet.tx, STOP_GRACE_S) if fleet.tx is not None else None
    finally:
        fleet.stop()
    per: dict[str, dict[str, float]] = {}
    for name in others:
        done = fleet.done_ns(name)
        before, during = _rate(done, t_before, t_kill), _rate(done, t_kill, t_back)
        per[name] = {"before_batches_s": before, "during_batches_s": during, "after_batches_s": _rate(done, t_back, t_end),
                     "ratio": during / before if before > 0 else float("nan")}
    served = delivery(fleet.tx_metrics, fleet.names)
    return {"receivers": receivers, "killed": victim, "outage_s": (t_back - t_kill) / NS_PER_S,
            "before_s": (t_kill - t_before) / NS_PER_S, "others": per,
            "min_ratio": min(p["ratio"] for p in per.values()), "delivery": served,
            "lost": sum(d["lost"] + d["gaps"] for d in served.values()), "tx_exit": exit_code,
            "load_avg_1m": os.getloadavg()[0]}


def saturation(rows: list[dict[str, Any]], cores: int) -> int | None:
    """The smallest receiver count with the host's cores busy (by these processes and any other
    job), None: none."""
    for r in rows:
        if r.get("host_cores_busy") is not None and r["host_cores_busy"] >= SATURATED_FRACTION * cores:
            return int(r["receivers"])
    return None


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's aggregate against N x the one-receiver rate of the same run."""
    one = next((r["aggregate_batches_s"] for r in rows if r["receivers"] == 1), None)
    for r in rows:
        r["scale_ratio"] = r["aggregate_batches_s"] / (r["receivers"] * one) if one else None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semalign bench many", description=__doc__)
    p.add_argument("--receivers", default="1,2,4,8,16", help="receiver counts, comma-separated (1 is the baseline)")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--bundle", type=Path, help="bundle directory (default: cache dir; built if absent)")
    p.add_argument("--modulation", default="64qam")
    p.add_argument("--batches", type=int, default=0,
                   help="batches per receiver; 0: a window of --seconds, then TX is stopped")
    p.add_argument("--seconds", type=float, default=15.0, help="measured window per count (with --batches 0)")
    p.add_argument("--interval", type=float, default=0.0, help="TX --interval: seconds between a receiver's batches")
    p.add_argument("--max-inflight", type=int, default=2)
    p.add_argument("--kill-one", type=float, metavar="SECONDS",
                   help="instead: four receivers, one killed for SECONDS mid-run and restarted")
    p.add_argument("--out", type=Path, help="write many.json here")
    return p


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _print_scale(rows: list[dict[str, Any]], cores: int, saturated: int | None) -> None:
    print(f"\none TX, N receivers on loopback ({cores} cores); rates over the window where all N run")
    for r in rows:
        per = r["per_receiver_batches_s"]
        ratio = "n/a" if r["scale_ratio"] is None else f"{r['scale_ratio']:.2f}"
        print(f"  N {r['receivers']:>2}: aggregate {r['aggregate_batches_s']:7.1f}/s, ratio {ratio} | per receiver "
              f"{per['min']:.1f}/{per['median']:.1f}/{per['max']:.1f} (min/median/max) | TX CPU "
              f"{_num(r['tx_cpu_ms_per_batch'])} ms/batch, RX {_num(r['rx_cpu_ms_per_batch'])} | "
              f"cores busy {_num(r['cores_busy'])} (host {_num(r['host_cores_busy'])}) | RSS TX {r['tx_rss_mb']:.0f} MB, RX median "
              f"{r['rx_rss_mb_median']:.0f} max {r['rx_rss_mb_max']:.0f} MB | lost {r['lost']} gaps {r['gaps']} | "
              f"load {r['load_avg_1m']:.1f}", flush=True)
    upto = [r for r in rows if r["receivers"] > 1 and (saturated is None or r["receivers"] <= saturated)]
    ok = all(r["scale_ratio"] is not None and r["scale_ratio"] >= GOAL_SCALE_RATIO for r in upto)
    where = "none of these counts" if saturated is None else f"N = {saturated}"
    verdict = _goal(ok) if upto else "not testable (no count above 1 before saturation)"
    print(f"  cores saturated (host busy >= {SATURATED_FRACTION:g} x {cores}) from {where}; "
          f"ratio >= {GOAL_SCALE_RATIO} up to there: {verdict}", flush=True)


def many_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from common.bench.report import machine, write_json

    common = ["--dataset", args.dataset, "--bundle", str(_bundle_dir(args)), "--log-level", "warning",
              "--gpsd", "off"]
    if args.data_dir is not None:
        common += ["--data-dir", str(args.data_dir)]
    tx_extra = ["--modulation", args.modulation]
    cores = os.cpu_count() or 1
    result: dict[str, Any] = {"machine": machine(), "dataset": args.dataset, "modulation": args.modulation,
                              "interval_s": args.interval, "max_inflight": args.max_inflight,
                              "command": "semalign bench many " + " ".join(argv)}
    if args.kill_one is not None:
        if args.kill_one <= 0:
            raise ConfigError(f"--kill-one: expected seconds > 0, got {args.kill_one}")
        with tempfile.TemporaryDirectory(prefix="semalign-bench-many-") as tmp:
            k = run_kill_one(common, tx_extra, args.kill_one, before_s=args.seconds, interval_s=args.interval,
                             max_inflight=args.max_inflight, workdir=Path(tmp))
        result["kill_one"] = k
        print(f"\n{k['receivers']} receivers, {k['killed']} killed for {k['outage_s']:.1f} s after {k['before_s']:.1f} s:")
        for name, p in k["others"].items():
            print(f"  {name}: before {p['before_batches_s']:.1f}/s, during {p['during_batches_s']:.1f}/s, "
                  f"after {p['after_batches_s']:.1f}/s, during/before {p['ratio']:.2f}")
        print(f"  delivery: {json.dumps(k['delivery'])}\n  min ratio {k['min_ratio']:.2f} "
              f"{_goal(k['min_ratio'] >= GOAL_ISOLATION_RATIO)} (goal >= {GOAL_ISOLATION_RATIO}); lost {k['lost']} "
              f"{_goal(k['lost'] == 0)}", flush=True)
    else:
        counts = sorted(set(_ints(args.receivers, "receivers")) | {1})
        if min(counts) < 1:
            raise ConfigError(f"--receivers: expected counts >= 1, got {args.receivers}")
        rows = []
        for n in counts:
            with tempfile.TemporaryDirectory(prefix="semalign-bench-many-") as tmp:
                rows.append(run_scale(common, tx_extra, n, batches=args.batches, seconds=args.seconds, interval_s=args.interval,
                                      max_inflight=args.max_inflight, workdir=Path(tmp)))
            print(f"  N {n}: {rows[-1]['aggregate_batches_s']:.1f} batches/s", flush=True)
            add_ratios(rows)
            result["scale"], result["saturated_at"] = rows, saturation(rows, cores)
            if args.out:
                # What is measured so far survives a run cut short.
                write_json(args.out, "many.json", result)
        _print_scale(rows, cores, result["saturated_at"])
    if args.out:
        write_json(args.out, "many.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(many_main(sys.argv[1:]))
