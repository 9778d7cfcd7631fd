"""``semalign bench system``: micro and macro benchmarks of every hot path, with baselines.

Payload build/parse vs a numpy copy, our ZeroMQ envelope path vs raw PUSH/PULL between two
processes, RX's per-batch breakdown and fine-tune throughput, and the real daemons' peak
memory and sustained batch rate.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from common.clock import NS_PER_S, monotonic_ns
from common.data.spec import DATASET_NAMES
from common.errors import ConfigError, TransportError
from common.link.budget import byte_budget, dataset_link, n_max
from common.metrics import read_metrics
from common.modulation import Modulation
from common.runtime import free_tcp_port, spawn_cli, stop_process
from common.wire import messages
from common.wire import payload as wire

SECTIONS = ("payload", "transport", "curve", "rx", "daemons")
#: Goals from the issue.
GOAL_PAYLOAD_RATIO = 0.5
GOAL_TRANSPORT_RATIO = 0.8
GOAL_RX_PEAK_MB = 600.0
#: How long to wait for the transport peer or the daemons before giving up.
PEER_TIMEOUT_S = 60.0
DAEMON_TIMEOUT_S = 600.0
STOP_GRACE_S = 15.0


# -- timing helpers ----------------------------------------------------------------------


def best_of(fn: Callable[[], object], *, rounds: int, min_time_s: float = 0.05) -> float:
    """Seconds per call: the median over ``rounds`` of the mean of a loop of >= ``min_time_s``."""
    fn()
    loops = 1
    while True:
        start = monotonic_ns()
        for _ in range(loops):
            fn()
        if (monotonic_ns() - start) / NS_PER_S >= min_time_s or loops >= 1 << 16:
            break
        loops *= 2
    samples = []
    for _ in range(rounds):
        start = monotonic_ns()
        for _ in range(loops):
            fn()
        samples.append((monotonic_ns() - start) / NS_PER_S / loops)
    return statistics.median(samples)


def mb_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


# -- payload -----------------------------------------------------------------------------


def bench_payload(alphas: tuple[int, ...], b_max: int, t: int, rounds: int) -> list[dict[str, Any]]:
    """Build and parse throughput of full-budget payloads vs ``ndarray.copy`` of their bytes."""
    rng = np.random.default_rng(0)
    out = []
    for alpha in alphas:
        n = n_max(b_max, t, alpha)
        test = rng.standard_normal((t, alpha), dtype=np.float32)
        train = rng.standard_normal((n, alpha), dtype=np.float32)
        labels = rng.integers(0, 10, n)
        buf = wire.build(test, train, labels)
        raw = np.frombuffer(buf, dtype=np.uint8)
        copy_s = best_of(raw.copy, rounds=rounds)
        build_s = best_of(lambda: wire.build(test, train, labels), rounds=rounds)  # noqa: B023
        parse_s = best_of(lambda: wire.parse(buf, max_alpha=alpha, num_classes=10), rounds=rounds)  # noqa: B023
        size = len(buf)
        out.append({
            "alpha": alpha, "n": n, "bytes": size,
            "copy_mb_s": mb_s(size, copy_s), "build_mb_s": mb_s(size, build_s), "parse_mb_s": mb_s(size, parse_s),
            "build_ratio": copy_s / build_s, "parse_ratio": copy_s / parse_s,
            "build_us": build_s * 1e6, "parse_us": parse_s * 1e6, "copy_us": copy_s * 1e6,
        })
    return out


# -- transport ---------------------------------------------------------------------------


def _peer(conn: Connection) -> None:
    """The receiving process: PULL (raw baseline) and ROUTER (our path) on tcp loopback."""
    import zmq

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    router = ctx.socket(zmq.ROUTER)
    for s in (pull, router):
        s.setsockopt(zmq.LINGER, 0)
    pull.bind("tcp://127.0.0.1:*")
    router.bind("tcp://127.0.0.1:*")
    conn.send((pull.getsockopt_string(zmq.LAST_ENDPOINT), router.getsockopt_string(zmq.LAST_ENDPOINT)))
    try:
        while True:
            cmd = conn.recv()
            if cmd is None:
                return
            mode, count = cmd
            received = 0
            for _ in range(count):
                if mode == "raw":
                    received += len(pull.recv(copy=False).buffer)
                else:
                    frames = router.recv_multipart(copy=False)
                    # What rx.daemon does with a batch message before it parses the payload.
                    messages.Envelope.decode(messages.unpack(frames[1].buffer))
                    received += len(frames[2].buffer)
            conn.send(received)
    finally:
        pull.close(0)
        router.close(0)
        ctx.term()


def bench_transport(size: int, count: int, rounds: int) -> dict[str, Any]:
    """Goodput of ``count`` messages of ``size`` bytes: our envelope+payload DEALER->ROUTER path
    vs raw PUSH/PULL, between the same two processes, rounds interleaved."""
    import zmq

    mpctx = mp.get_context("spawn")
    parent, child = mpctx.Pipe()
    proc = mpctx.Process(target=_peer, args=(child,), daemon=True)
    proc.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    dealer = ctx.socket(zmq.DEALER)
    try:
        if not parent.poll(PEER_TIMEOUT_S):
            raise TransportError("transport benchmark peer did not start")
        raw_ep, router_ep = parent.recv()
        for s, ep in ((push, raw_ep), (dealer, router_ep)):
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep)
        body = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
        env = messages.Envelope(batch_id=0, attempt=0, modulation="64qam", b_max=size, alpha=150,
                                bundle="0" * 64, t_a_ns=0)

        def raw() -> None:
            for _ in range(count):
                push.send(body, copy=False)

        def ours() -> None:
            for i in range(count):
                dealer.send_multipart([replace(env, batch_id=i).encode(), body], copy=False)

        def timed(mode: str, send: Callable[[], None]) -> float:
            parent.send((mode, count))
            start = monotonic_ns()
            send()
            if not parent.poll(PEER_TIMEOUT_S):
                raise TransportError(f"transport peer did not confirm the {mode} round")
            got = parent.recv()
            elapsed = (monotonic_ns() - start) / NS_PER_S
            if got != size * count:
                raise TransportError(f"peer received {got} bytes, expected {size * count}")
            return elapsed

        timed("raw", raw)  # connect and warm both paths
        timed("env", ours)
        raw_s, ours_s = [], []
        for i in range(rounds):
            # Paired rounds, alternating which path goes first, so load drifting on a shared
            # machine hits both paths alike; the ratio is the median of the per-round ratios.
            first, second = (("raw", raw), ("env", ours)) if i % 2 == 0 else (("env", ours), ("raw", raw))
            got = {first[0]: timed(*first), second[0]: timed(*second)}
            raw_s.append(got["raw"])
            ours_s.append(got["env"])
        parent.send(None)
    finally:
        push.close(0)
        dealer.close(0)
        ctx.term()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    total = size * count
    ratios = [r / o for r, o in zip(raw_s, ours_s, strict=True)]
    return {"size": size, "count": count, "rounds": rounds,
            "raw_mb_s": mb_s(total, statistics.median(raw_s)), "ours_mb_s": mb_s(total, statistics.median(ours_s)),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


# -- CURVE -------------------------------------------------------------------------------


#: A digits batch's size on the wire (t = 50 test and ~190 training vectors at alpha 40),
#: for the request/reply rate; the reply stands for a report.
CURVE_BATCH_BYTES = 40_000
CURVE_REPLY_BYTES = 200


def _curve_peer(conn: Connection, keys: str) -> None:
    """The receiving process: one plain and one CURVE ROUTER (``RouterWire``, as RX builds it)."""
    import zmq

    from common.transport.security import SecurityConfig
    from common.transport.zmq import RouterWire

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    wires = {"plain": RouterWire(ctx, "tcp://127.0.0.1:*"),
             "curve": RouterWire(ctx, "tcp://127.0.0.1:*",
                                 security=SecurityConfig(key=f"{keys}/rx/rx.key_secret", allow=f"{keys}/allow"))}
    conn.send({mode: w.endpoint for mode, w in wires.items()})
    reply = bytes(CURVE_REPLY_BYTES)
    try:
        while (cmd := conn.recv()) is not None:
            kind, mode, count = cmd
            sock = wires[mode].socket
            received = 0
            for _ in range(count):
                frames = sock.recv_multipart(copy=False)
                messages.Envelope.decode(messages.unpack(frames[1].buffer))
                received += len(frames[2].buffer)
                if kind == "echo":
                    sock.send_multipart([frames[0].bytes, reply])
            conn.send(received)
    finally:
        for w in wires.values():
            w.close()
        ctx.term()


def bench_curve(size: int, count: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """CURVE's cost against the plain link, between the same two processes, rounds paired:
    goodput of ``count`` messages of ``size`` bytes, and the rate of batch-sized request/replies."""
    import zmq

    from common.transport.security import SecurityConfig, keygen, secure_client

    for name in ("rx", "tx"):
        keygen(name, workdir / name)
    (workdir / "allow").mkdir()
    (workdir / "allow" / "tx.key").write_bytes((workdir / "tx" / "tx.key").read_bytes())
    mpctx = mp.get_context("spawn")
    parent, child = mpctx.Pipe()
    proc = mpctx.Process(target=_curve_peer, args=(child, str(workdir)), daemon=True)
    proc.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks: dict[str, zmq.Socket[bytes]] = {}
    try:
        if not parent.poll(PEER_TIMEOUT_S):
            raise TransportError("CURVE benchmark peer did not start")
        endpoints = parent.recv()
        client = SecurityConfig(key=str(workdir / "tx/tx.key_secret"), peer=str(workdir / "rx/rx.key"))
        for mode, ep in endpoints.items():
            sock = socks[mode] = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if mode == "curve":
                secure_client(sock, client, endpoint=ep)
            sock.connect(ep)
        env = messages.Envelope(batch_id=0, attempt=0, modulation="64qam", b_max=size, alpha=150,
                                bundle="0" * 64, t_a_ns=0)
        rng = np.random.default_rng(0)
        body = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        batch = rng.integers(0, 256, CURVE_BATCH_BYTES, dtype=np.uint8).tobytes()

        def stream(mode: str) -> float:
            parent.send(("stream", mode, count))
            start = monotonic_ns()
            for i in range(count):
                socks[mode].send_multipart([replace(env, batch_id=i).encode(), body], copy=False)
            if not parent.poll(PEER_TIMEOUT_S) or parent.recv() != size * count:
                raise TransportError(f"CURVE peer did not receive the {mode} round whole")
            return (monotonic_ns() - start) / NS_PER_S

        def echo(mode: str) -> float:
            parent.send(("echo", mode, count))
            start = monotonic_ns()
            for i in range(count):
                socks[mode].send_multipart([replace(env, batch_id=i).encode(), batch], copy=False)
                if not socks[mode].poll(int(PEER_TIMEOUT_S * 1000)):
                    raise TransportError(f"no {mode} reply")
                socks[mode].recv()
            elapsed = (monotonic_ns() - start) / NS_PER_S
            if not parent.poll(PEER_TIMEOUT_S):
                raise TransportError(f"CURVE peer did not finish the {mode} round")
            parent.recv()
            return elapsed

        for fn in (stream, echo):  # connect, hand-shake and warm both paths
            fn("plain")
            fn("curve")
        times: dict[tuple[str, str], list[float]] = {(k, m): [] for k in ("stream", "echo") for m in endpoints}
        for i in range(rounds):
            order = ("plain", "curve") if i % 2 == 0 else ("curve", "plain")
            for kind, fn in (("stream", stream), ("echo", echo)):
                for mode in order:
                    times[kind, mode].append(fn(mode))
        parent.send(None)
    finally:
        for sock in socks.values():
            sock.close(0)
        ctx.term()
        proc.join(10)
        if proc.is_alive():
            proc.kill()

    def ratios(kind: str) -> list[float]:
        return [p / c for p, c in zip(times[kind, "plain"], times[kind, "curve"], strict=True)]

    med = {key: statistics.median(v) for key, v in times.items()}
    return {
        "size": size, "count": count, "rounds": rounds, "batch_bytes": CURVE_BATCH_BYTES,
        "plain_mb_s": mb_s(size * count, med["stream", "plain"]), "curve_mb_s": mb_s(size * count, med["stream", "curve"]),
        "goodput_ratio": statistics.median(ratios("stream")),
        "goodput_ratio_min": min(ratios("stream")), "goodput_ratio_max": max(ratios("stream")),
        "plain_batches_s": count / med["echo", "plain"], "curve_batches_s": count / med["echo", "curve"],
        "rate_ratio": statistics.median(ratios("echo")),
        "rate_ratio_min": min(ratios("echo")), "rate_ratio_max": max(ratios("echo")),
    }


# -- RX pipeline -------------------------------------------------------------------------


def bench_rx(
    dataset_name: str, data_dir: Path | None, bundle_dir: Path, alphas: tuple[int, ...], b_max: int,
    t: int, batches: int, threads: tuple[int, ...],
) -> list[dict[str, Any]]:
    """Median per-batch parse / reconstruct / fine-tune / classify of ``rx.pipeline.Receiver``."""
    import torch

    from common.data.spec import load_dataset
    from common.ml.adapt import AdaptConfig
    from common.ml.bundle import load_bundle
    from rx.pipeline import Receiver

    bundle = load_bundle(bundle_dir)
    ds = load_dataset(dataset_name, data_dir)
    out = []
    for n_threads in threads:
        for alpha in alphas:
            receiver = Receiver(bundle, AdaptConfig(), threads=n_threads)
            receiver.warm_up()
            n = min(n_max(b_max, t, alpha), len(ds.pool.y))
            rng = np.random.default_rng(alpha)
            per: dict[str, list[float]] = {k: [] for k in ("parse_s", "reconstruct_s", "finetune_s", "classify_s")}
            for _ in range(batches):
                test_idx = rng.choice(len(ds.test.y), t, replace=False)
                train_idx = rng.choice(len(ds.pool.y), n, replace=False)
                coeffs = bundle.codec.encode(np.concatenate([ds.test.x[test_idx], ds.pool.x[train_idx]]), alpha)
                buf = wire.build(coeffs[:t], coeffs[t:], ds.pool.y[train_idx])
                o = receiver.process(buf)
                per["parse_s"].append(o.parse_s)
                per["reconstruct_s"].append(o.reconstruct_s)
                per["finetune_s"].append(o.fit.seconds)
                per["classify_s"].append(o.classify_s)
            med = {k: statistics.median(v) for k, v in per.items()}
            cfg = receiver.adapt
            out.append({"threads": n_threads, "torch_threads": torch.get_num_threads(), "alpha": alpha,
                        "n": n, "epochs": cfg.epochs, **med,
                        "total_s": sum(med.values()),
                        "finetune_samples_s": n * cfg.epochs / med["finetune_s"]})
    return out


# -- RX's per-batch floor ----------------------------------------------------------------

#: Goal from the issue: RX's compute per batch within this many times its floor.
GOAL_FLOOR_RATIO = 2.0
#: RX's per-batch figures, in the order they happen (C is gate + fit, D is classify).
FLOOR_PARTS = ("parse_s", "reconstruct_s", "fold_s", "gate_s", "fit_s", "classify_s")


def bench_floor(dataset_name: str, data_dir: Path | None, bundle_dir: Path, modulation: str,
                batches: int) -> dict[str, Any]:
    """RX's per-batch breakdown beside its floor, in one process, batch by batch interleaved.

    The batches are TX's at ``modulation`` (its default plan: alpha, t, N_max); the receiver
    is the daemon's (``rx.pipeline.Receiver``, adapt defaults, 1 thread). The floor of a batch
    is parse + one forward pass of the bundle's model over all its received vectors (as
    float32 coefficients through the folded first layer, folds cached): what any receiver of
    these bytes must do to classify them. Both are timed on the wall clock and on this
    thread's CPU clock (torch runs on this thread); the CPU ratio is the one a shared host's
    load does not move, as time spent waiting for a core is not counted.
    """
    import torch

    from common.data.spec import load_dataset
    from common.link.plan import LinkState, make_plan
    from common.ml.adapt import AdaptConfig
    from common.ml.bundle import load_bundle
    from common.ml.fold import Basis, forward
    from common.ml.model import load_model
    from rx.pipeline import Receiver

    bundle = load_bundle(bundle_dir)
    ds = load_dataset(dataset_name, data_dir)
    plan = make_plan(LinkState(Modulation.parse(modulation)), bundle.dims, dataset_link(dataset_name),
                     wire.ValueType.FLOAT32)
    receiver = Receiver(bundle, AdaptConfig(), threads=1)
    receiver.warm_up()
    model, basis = load_model(bundle), Basis(bundle.codec)
    t, n = plan.t, min(plan.n_max, len(ds.pool.y))
    rng = np.random.default_rng(plan.alpha)

    def floor(buf: bytes) -> tuple[float, float]:
        start, cpu = monotonic_ns(), time.thread_time_ns()
        parsed = receiver.parse(buf)
        with torch.inference_mode():
            forward(model, basis.coefficients(parsed.values)).argmax(dim=1)
        return (monotonic_ns() - start) / NS_PER_S, (time.thread_time_ns() - cpu) / NS_PER_S

    per: dict[str, list[float]] = {k: [] for k in (*FLOOR_PARTS, "total_s", "floor_s", "total_cpu_s", "floor_cpu_s")}
    actions: dict[str, int] = {}
    for i in range(batches + 1):  # the first batch warms the folds and is not counted
        test_idx = rng.choice(len(ds.test.y), t, replace=False)
        train_idx = rng.choice(len(ds.pool.y), n, replace=False)
        coeffs = bundle.codec.encode(np.concatenate([ds.test.x[test_idx], ds.pool.x[train_idx]]), plan.alpha)
        buf = wire.build(coeffs[:t], coeffs[t:], ds.pool.y[train_idx])
        floor_s, floor_cpu_s = floor(buf)
        cpu = time.thread_time_ns()
        o = receiver.process(buf, seed=i, batch=i)
        total_cpu_s = (time.thread_time_ns() - cpu) / NS_PER_S
        if i == 0:
            continue
        row = {"parse_s": o.parse_s, "reconstruct_s": o.reconstruct_s, "fold_s": o.fold_s, "gate_s": o.fit.gate_s,
               "fit_s": o.fit.seconds - o.fit.gate_s, "classify_s": o.classify_s}
        row["total_s"] = o.parse_s + o.reconstruct_s + o.fit.seconds + o.classify_s
        row["floor_s"] = floor_s
        row["total_cpu_s"], row["floor_cpu_s"] = total_cpu_s, floor_cpu_s
        for k, v in row.items():
            per[k].append(v)
        actions[o.fit.action] = actions.get(o.fit.action, 0) + 1
    med = {k: statistics.median(v) for k, v in per.items()}
    ratios = [c / f for c, f in zip(per["total_s"], per["floor_s"], strict=True)]
    cpu_ratios = [c / f for c, f in zip(per["total_cpu_s"], per["floor_cpu_s"], strict=True) if f > 0]
    return {"modulation": modulation, "alpha": plan.alpha, "t": t, "n": n, "batches": batches,
            "policy": receiver.policy, "actions": actions, **med, "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "cpu_ratio": statistics.median(cpu_ratios) if cpu_ratios else float("nan")}


# -- the real daemons --------------------------------------------------------------------


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def bench_daemons(
    dataset_name: str, data_dir: Path | None, bundle_dir: Path, modulation: str, batches: int,
    threads: int, workdir: Path,
) -> dict[str, Any]:
    """Run ``semalign rx`` and ``semalign tx`` as processes; peak RSS (VmHWM) and batch rate."""
    data_ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    ctl_ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    rx_metrics, tx_metrics = workdir / "rx-metrics.jsonl", workdir / "tx-metrics.jsonl"
    for p in (rx_metrics, tx_metrics):
        p.unlink(missing_ok=True)
    common = ["--dataset", dataset_name, "--bundle", str(bundle_dir), "--log-level", "warning"]
    if data_dir is not None:
        common += ["--data-dir", str(data_dir)]
    rx = spawn_cli(["rx", *common, "--bind", data_ep, "--threads", str(threads),
                 "--metrics-out", str(rx_metrics)], workdir / "rx.log")
    tx = spawn_cli(["tx", *common, "--endpoint", data_ep, "--control", ctl_ep, "--modulation", modulation,
                 "--batches", "0", "--interval", "0", "--max-inflight", "2",
                 "--metrics-out", str(tx_metrics)], workdir / "tx.log")
    deadline = time.monotonic() + DAEMON_TIMEOUT_S
    records: list[dict[str, Any]] = []
    cpu_first: dict[str, float | None] = {}
    try:
        while len(records) < batches:
            for proc, name in ((rx, "rx"), (tx, "tx")):
                if proc.poll() is not None:
                    raise TransportError(f"{name} daemon exited with {proc.returncode}; see {workdir / (name + '.log')}")
            if time.monotonic() > deadline:
                raise TransportError(f"daemons served {len(records)} of {batches} batches in {DAEMON_TIMEOUT_S:g} s")
            time.sleep(0.2)
            records = read_metrics(rx_metrics) if rx_metrics.exists() else []
            if records and not cpu_first:
                # CPU from here on is per-batch work, not start-up (imports, bundle, warm-up).
                cpu_first = {"rx": _cpu_s(rx.pid), "tx": _cpu_s(tx.pid)}
                first_batches = len(records)
        cpu_last = {"rx": _cpu_s(rx.pid), "tx": _cpu_s(tx.pid)}
        last_batches = len(read_metrics(rx_metrics))
        # VmHWM is the peak resident set since start; read it while both still run.
        peak = {name: _status_kb(proc.pid, "VmHWM") for proc, name in ((rx, "rx"), (tx, "tx"))}
        rss = {name: _status_kb(proc.pid, "VmRSS") for proc, name in ((rx, "rx"), (tx, "tx"))}
    finally:
        stop_process(tx, STOP_GRACE_S)
        stop_process(rx, STOP_GRACE_S)
    done = sorted(r["rx_done_ns"] for r in records[:batches])
    # The first batch waits for TX's start-up; the rate is taken over the batches after it.
    span_s = (done[-1] - done[0]) / NS_PER_S
    rate = (len(done) - 1) / span_s if span_s > 0 else float("nan")
    med = {k: statistics.median(r[k] for r in records[:batches])
           for k in ("latency_finetune_s", "latency_comm_s", "latency_classify_s", "parse_s", "reconstruct_s",
                     "gate_s", "fold_s", "images_s")}
    cpu_ms = {}
    for name in ("rx", "tx"):
        before, after = cpu_first.get(name), cpu_last[name]
        counted = last_batches - first_batches
        cpu_ms[f"{name}_cpu_ms_per_batch"] = (
            (after - before) * 1e3 / counted if before is not None and after is not None and counted > 0 else None)
    return {
        "modulation": modulation, "batches": len(done), "threads": threads,
        "alpha": records[0]["alpha"], "n_train": records[0]["n_train"],
        "batches_per_s": rate, "rx_peak_mb": (peak["rx"] or 0) / 1024, "tx_peak_mb": (peak["tx"] or 0) / 1024,
        "rx_rss_mb": (rss["rx"] or 0) / 1024, "tx_rss_mb": (rss["tx"] or 0) / 1024, **med, **cpu_ms,
    }


# -- command line ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semalign bench system", description=__doc__)
    p.add_argument("--dataset", default="mnist", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--bundle", type=Path, help="bundle directory (default: cache dir; built if absent)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--modulation", default="64qam")
    p.add_argument("--alphas", default="150,40", help="alphas of the payload and RX benchmarks")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--payload-mb", type=float, default=1.0, help="message size of the transport benchmark")
    p.add_argument("--messages", type=int, default=100, help="messages per transport round")
    p.add_argument("--rx-batches", type=int, default=5, help="batches per RX breakdown point (median)")
    p.add_argument("--threads", default="1,2", help="torch thread counts of the RX benchmark")
    p.add_argument("--daemon-batches", type=int, default=20)
    p.add_argument("--daemon-threads", type=int, default=1, help="RX daemon --threads")
    p.add_argument("--floor-batches", type=int, default=50,
                   help="batches of the in-process RX breakdown beside its floor (daemons section; 0: skip)")
    p.add_argument("--out", type=Path, help="write system.json here")
    return p


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{name}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"--{name}: expected at least one integer")
    return values


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _goal(ok: bool) -> str:
    return "goal met" if ok else "GOAL NOT MET"


def system_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    import torch

    from common.bench.report import machine, write_json

    torch.set_num_threads(1)  # the RX section sets its own counts per measurement

    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ConfigError(f"--only: expected a subset of {','.join(SECTIONS)}, got {bad}")
    alphas = _ints(args.alphas, "alphas")
    threads = _ints(args.threads, "threads")
    link = dataset_link(args.dataset)
    b_max = byte_budget(Modulation.parse(args.modulation), link.symbols_per_window, link.code_rate)
    result: dict[str, Any] = {"machine": machine(), "b_max": b_max, "t": link.t}
    print(f"machine: {result['machine']}; {args.modulation} B_max={b_max} t={link.t}", flush=True)
    if "payload" in sections:
        rows = bench_payload(alphas, b_max, link.t, args.rounds)
        result["payload"] = rows
        print("\npayload build/parse vs numpy copy of the same bytes (goal: ratio >= 0.5)")
        for r in rows:
            print(f"  alpha {r['alpha']:>3} n {r['n']:>5} {r['bytes']:>8} B: copy {r['copy_mb_s']:8.0f} MB/s | "
                  f"build {r['build_mb_s']:7.0f} MB/s ({r['build_us']:.0f} us) ratio {r['build_ratio']:.2f} "
                  f"{_goal(r['build_ratio'] >= GOAL_PAYLOAD_RATIO)} | parse {r['parse_mb_s']:7.0f} MB/s "
                  f"({r['parse_us']:.0f} us) ratio {r['parse_ratio']:.2f} {_goal(r['parse_ratio'] >= GOAL_PAYLOAD_RATIO)}",
                  flush=True)
    if "transport" in sections:
        tr = bench_transport(int(args.payload_mb * 1_000_000), args.messages, args.rounds)
        result["transport"] = tr
        print(f"\nZeroMQ goodput, {tr['count']} x {tr['size']} B, two processes, median of {tr['rounds']} paired rounds "
              f"(goal: ratio >= 0.8)\n  raw PUSH/PULL {tr['raw_mb_s']:.0f} MB/s | envelope+payload DEALER->ROUTER "
              f"{tr['ours_mb_s']:.0f} MB/s | ratio {tr['ratio']:.2f} (rounds {tr['ratio_min']:.2f}..{tr['ratio_max']:.2f}) "
              f"{_goal(tr['ratio'] >= GOAL_TRANSPORT_RATIO)}",
              flush=True)
    if "curve" in sections:
        with tempfile.TemporaryDirectory(prefix="semalign-bench-curve-") as tmp:
            cv = bench_curve(int(args.payload_mb * 1_000_000), args.messages, args.rounds, Path(tmp))
        result["curve"] = cv
        print(f"\nCURVE vs plain ZeroMQ, same two processes, median of {cv['rounds']} paired rounds "
              f"(ratio = plain time / CURVE time; 1.0 = free)\n"
              f"  goodput {cv['count']} x {cv['size']} B: plain {cv['plain_mb_s']:.0f} MB/s | CURVE "
              f"{cv['curve_mb_s']:.0f} MB/s | ratio {cv['goodput_ratio']:.2f} "
              f"(rounds {cv['goodput_ratio_min']:.2f}..{cv['goodput_ratio_max']:.2f})\n"
              f"  request/reply of {cv['batch_bytes']} B batches: plain {cv['plain_batches_s']:.0f}/s | CURVE "
              f"{cv['curve_batches_s']:.0f}/s | ratio {cv['rate_ratio']:.2f} "
              f"(rounds {cv['rate_ratio_min']:.2f}..{cv['rate_ratio_max']:.2f})", flush=True)
    bundle_dir = _bundle_dir(args) if {"rx", "daemons"} & set(sections) else Path()
    if "rx" in sections:
        rows = bench_rx(args.dataset, args.data_dir, bundle_dir, alphas, b_max, link.t, args.rx_batches, threads)
        result["rx"] = rows
        print(f"\nRX per-batch breakdown (median of {args.rx_batches} batches, LoRA defaults)")
        for r in rows:
            print(f"  threads {r['threads']} alpha {r['alpha']:>3} n {r['n']:>5}: parse {r['parse_s'] * 1e3:7.2f} ms "
                  f"reconstruct {r['reconstruct_s'] * 1e3:7.2f} ms fine-tune {r['finetune_s'] * 1e3:8.1f} ms "
                  f"classify {r['classify_s'] * 1e3:6.2f} ms | fine-tune {r['finetune_samples_s']:8.0f} samples/s",
                  flush=True)
    if "daemons" in sections:
        with tempfile.TemporaryDirectory(prefix="semalign-bench-") as tmp:
            d = bench_daemons(args.dataset, args.data_dir, bundle_dir, args.modulation, args.daemon_batches,
                              args.daemon_threads, Path(tmp))
        result["daemons"] = d
        print(f"\nreal daemons, {d['modulation']} alpha {d['alpha']} N {d['n_train']}, {d['batches']} batches, "
              f"RX --threads {d['threads']}:\n  peak RSS (VmHWM) RX {d['rx_peak_mb']:.0f} MB "
              f"{_goal(d['rx_peak_mb'] < GOAL_RX_PEAK_MB)} (goal < {GOAL_RX_PEAK_MB:.0f} MB), TX {d['tx_peak_mb']:.0f} MB\n"
              f"  sustained rate {d['batches_per_s']:.2f} batches/s; median fine-tune {d['latency_finetune_s'] * 1e3:.1f} ms "
              f"(gate {d['gate_s'] * 1e3:.2f}, images {d['images_s'] * 1e3:.2f}), comm {d['latency_comm_s'] * 1e3:.1f} ms, "
              f"classify {d['latency_classify_s'] * 1e3:.2f} ms; parse {d['parse_s'] * 1e3:.2f} ms, coefficients "
              f"{d['reconstruct_s'] * 1e3:.2f} ms, folds {d['fold_s'] * 1e3:.2f} ms\n"
              f"  CPU per batch: RX {_ms(d['rx_cpu_ms_per_batch'])}, TX {_ms(d['tx_cpu_ms_per_batch'])}", flush=True)
        if args.floor_batches > 0:
            f = bench_floor(args.dataset, args.data_dir, bundle_dir, args.modulation, args.floor_batches)
            result["floor"] = f
            parts = ", ".join(f"{k.removesuffix('_s')} {f[k] * 1e3:.2f}" for k in FLOOR_PARTS)
            print(f"\nRX per batch beside its floor, in this process ({f['modulation']} alpha {f['alpha']}, t {f['t']} "
                  f"n {f['n']}, policy {f['policy']}, medians of {f['batches']} batches; actions {f['actions']}):\n"
                  f"  wall ms: {parts} (fold is part of gate and classify; C = gate + fit)\n"
                  f"  per batch, wall: RX {f['total_s'] * 1e3:.2f} ms, floor (parse + one forward pass over the "
                  f"{f['t'] + f['n']} received vectors) {f['floor_s'] * 1e3:.2f} ms, ratio {f['ratio']:.2f} "
                  f"(batches {f['ratio_min']:.2f}..{f['ratio_max']:.2f})\n"
                  f"  per batch, this thread's CPU: RX {f['total_cpu_s'] * 1e3:.2f} ms, floor {f['floor_cpu_s'] * 1e3:.2f} ms, "
                  f"ratio {f['cpu_ratio']:.2f} {_goal(f['cpu_ratio'] <= GOAL_FLOOR_RATIO)} (goal <= {GOAL_FLOOR_RATIO:g})",
                  flush=True)
    if args.out:
        write_json(args.out, "system.json", result)
    return 0


def _bundle_dir(args: argparse.Namespace) -> Path:
    from common.ml.bundle import default_bundle_dir
    from common.ml.pretrain import ensure_bundle

    bundle: Path = args.bundle or default_bundle_dir(args.dataset)
    ensure_bundle(args.dataset, out=bundle, data_dir=args.data_dir)
    return bundle


if __name__ == "__main__":
    sys.exit(system_main(sys.argv[1:]))
