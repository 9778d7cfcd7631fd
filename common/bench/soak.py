"""``semalign bench soak --batches N``: both daemons for N batches, RSS and fd growth per 1,000 batches.

RX and TX run as processes on loopback (CURVE on with ``--curve``); every second their
resident set (``VmRSS``) and open descriptors (``/proc/PID/fd``) are sampled beside TX's
count of acknowledged batches. Growth is the least-squares slope over the samples after
the warm-up fraction, per 1,000 batches (goal: < 1 MB).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.data.spec import DATASET_NAMES
from common.errors import BenchError
from common.runtime import free_tcp_port, spawn_cli, stop_process

#: Goal from the issue: resident set growth per 1,000 batches, each daemon.
GOAL_MB_PER_1000 = 1.0
SAMPLE_S = 1.0
#: The first part of the run (allocator and caches warming up) is left out of the slope.
WARMUP_FRACTION = 0.1
STOP_GRACE_S = 15.0
#: Seconds per batch allowed before the soak is given up (digits runs about 0.1 s per batch).
TIMEOUT_PER_BATCH_S = 2.0


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class _LineCounter:
    """Counts the lines of a growing file without re-reading what it has counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return self.lines
        self.offset += len(chunk)
        self.lines += chunk.count(b"\n")
        return self.lines


def _slope_per_1000(batches: list[int], values: list[float]) -> float:
    if len(batches) < 2 or max(batches) == min(batches):
        return float("nan")
    slope, _ = np.polyfit(np.asarray(batches, float), np.asarray(values, float), 1)
    return float(slope) * 1000.0


def _keys(workdir: Path) -> tuple[list[str], list[str]]:
    from common.transport.security import keygen

    for name in ("rx", "tx"):
        keygen(name, workdir / "keys" / name)
    allow = workdir / "keys" / "allow"
    allow.mkdir()
    (allow / "tx.key").write_bytes((workdir / "keys" / "tx" / "tx.key").read_bytes())
    k = workdir / "keys"
    rx = ["--security-key", str(k / "rx/rx.key_secret"), "--security-allow", str(allow)]
    # TX's control socket is a CURVE server too: it admits TX's own key (no operator here).
    ops = k / "ops"
    ops.mkdir()
    (ops / "tx.key").write_bytes((k / "tx" / "tx.key").read_bytes())
    tx = ["--security-key", str(k / "tx/tx.key_secret"), "--security-peer", str(k / "rx/rx.key"),
          "--security-allow", str(ops)]
    return rx, tx


def run_soak(dataset: str, bundle_dir: Path, batches: int, workdir: Path, *, curve: bool = False,
             data_dir: Path | None = None) -> dict[str, Any]:
    """Run the daemons for ``batches`` batches; samples and growth figures of both."""
    data_ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    ctl_ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    common = ["--dataset", dataset, "--bundle", str(bundle_dir), "--log-level", "warning", "--gpsd", "off"]
    if data_dir is not None:
        common += ["--data-dir", str(data_dir)]
    rx_keys, tx_keys = _keys(workdir) if curve else ([], [])
    tx_metrics = workdir / "tx-metrics.jsonl"
    rx = spawn_cli(["rx", *common, "--bind", data_ep, *rx_keys], workdir / "rx.log")
    tx = spawn_cli(["tx", *common, "--endpoint", data_ep, "--control", ctl_ep, "--batches", str(batches),
                    "--interval", "0", "--max-inflight", "2", "--metrics-out", str(tx_metrics), *tx_keys],
                   workdir / "tx.log")
    acked = _LineCounter(tx_metrics)
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120 + batches * TIMEOUT_PER_BATCH_S
    started = time.monotonic()
    try:
        while tx.poll() is None:
            if rx.poll() is not None:
                raise BenchError(f"rx exited with {rx.returncode}; see {workdir / 'rx.log'}")
            if time.monotonic() > deadline:
                raise BenchError(f"{acked.count()} of {batches} batches within the time allowed; see {workdir}")
            samples.append({"t_s": time.monotonic() - started, "batches": acked.count(),
                            "rx_rss_kb": _rss_kb(rx.pid), "tx_rss_kb": _rss_kb(tx.pid),
                            "rx_fds": _fds(rx.pid), "tx_fds": _fds(tx.pid)})
            time.sleep(SAMPLE_S)
        if tx.returncode != 0:
            raise BenchError(f"tx exited with {tx.returncode}; see {workdir / 'tx.log'}")
    finally:
        stop_process(tx, STOP_GRACE_S)
        stop_process(rx, STOP_GRACE_S)
    done = acked.count()
    steady = [s for s in samples if s["batches"] >= max(1, int(WARMUP_FRACTION * batches))
              and None not in (s["rx_rss_kb"], s["tx_rss_kb"], s["rx_fds"], s["tx_fds"])]
    out: dict[str, Any] = {"batches": done, "curve": curve, "seconds": time.monotonic() - started,
                           "samples": len(samples), "steady_samples": len(steady)}
    for role in ("rx", "tx"):
        xs = [s["batches"] for s in steady]
        rss = [s[f"{role}_rss_kb"] / 1024 for s in steady]
        fds = [s[f"{role}_fds"] for s in steady]
        out[role] = {
            "rss_start_mb": rss[0] if rss else float("nan"), "rss_end_mb": rss[-1] if rss else float("nan"),
            "rss_mb_per_1000": _slope_per_1000(xs, rss),
            "fds_start": fds[0] if fds else None, "fds_end": fds[-1] if fds else None,
            "fds_per_1000": _slope_per_1000(xs, [float(f) for f in fds]),
        }
    out["trace"] = samples
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semalign bench soak", description=__doc__)
    p.add_argument("--batches", type=int, default=2000, help="batches to run (default: 2000)")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--bundle", type=Path, help="bundle directory (default: cache dir; built if absent)")
    p.add_argument("--curve", action="store_true", help="run the link with CURVE keys")
    p.add_argument("--out", type=Path, help="write soak.json (with every sample) here")
    return p


def soak_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.batches < 10:
        raise BenchError(f"--batches: expected at least 10, got {args.batches}")
    from common.bench.report import machine, write_json
    from common.ml.bundle import default_bundle_dir
    from common.ml.pretrain import ensure_bundle

    bundle: Path = args.bundle or default_bundle_dir(args.dataset)
    ensure_bundle(args.dataset, out=bundle, data_dir=args.data_dir)
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="semalign-soak-") as tmp:
        result = run_soak(args.dataset, bundle, args.batches, Path(tmp), curve=args.curve, data_dir=args.data_dir)
    print(f"\nsoak: {result['batches']} batches of {args.dataset} in {result['seconds']:.0f} s "
          f"({'CURVE' if result['curve'] else 'plain'} link), slope over {result['steady_samples']} samples "
          f"after the first {WARMUP_FRACTION:.0%}")
    for role in ("rx", "tx"):
        r = result[role]
        ok = r["rss_mb_per_1000"] < GOAL_MB_PER_1000
        print(f"  {role.upper()}: RSS {r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f} MB, "
              f"{r['rss_mb_per_1000']:+.2f} MB per 1,000 batches ({'goal met' if ok else 'GOAL NOT MET'}, "
              f"goal < {GOAL_MB_PER_1000:g}); fds {r['fds_start']} -> {r['fds_end']}, "
              f"{r['fds_per_1000']:+.2f} per 1,000 batches", flush=True)
    if args.out:
        write_json(args.out, "soak.json", result)
    return 0
