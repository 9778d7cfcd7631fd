"""``semalign demo``: RX and TX as separate processes on loopback, with a live modulation change.

It builds (or reuses) the default bundle, starts both daemons, switches 256QAM -> 64QAM
through TX's control socket halfway through, then sets a sensor shift (``--shift``) that RX's
alignment policy has to recover from, prints a per-batch table (with C, the shift and the
gate figure) and exits. With
``--transport sim`` a channel process sits between them and TX's AMC follows the SNR profile;
``--transport pluto --emulate`` puts two emulated Plutos (``semalign pluto-emu``) between them.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common.data.spec import DATASET_NAMES, get_spec
from common.errors import TransportError
from common.log import Progress
from common.metrics import format_header, format_row, read_metrics
from common.ml.bundle import default_bundle_dir
from common.runtime import free_tcp_port, spawn_cli, stop_process


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="semalign demo", description=__doc__)
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--switch-to", default="64qam", help="modulation to switch to halfway (zmq transport)")
    p.add_argument("--transport", default="zmq", choices=("zmq", "sim", "pluto"),
                   help="sim: baseband samples through a channel process, modulation chosen by AMC; "
                        "pluto: over the air (needs --emulate on one machine)")
    p.add_argument("--emulate", action="store_true",
                   help="with --transport pluto: two emulated Plutos on loopback (semalign pluto-emu), "
                        "driven through libiio")
    p.add_argument("--snr-profile", default="37 dB, drop 7 dB at batch 4",
                   help="Es/N0 by batch for --transport sim (see semalign channel --help)")
    p.add_argument("--fading", default="none", choices=("none", "rayleigh", "rician"))
    p.add_argument("--adapt", default="lora", choices=("lora", "e2e", "none"))
    p.add_argument("--shift", default="rotate:30",
                   help="sensor shift set through TX's control socket after the modulation switch "
                        "(zmq transport; 'none' to leave the images alone)")
    p.add_argument("--metrics-out", type=Path, help="write TX's per-batch JSON lines here too")
    p.add_argument("--bundle", type=Path, help="bundle dir (default: built and cached on first use)")
    p.add_argument("--workdir", type=Path, help="keep daemon logs and metrics here")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between batches")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument("--watch", action="store_true",
                   help="run it inside `semalign watch` (the dashboard; q quits it and ends the demo)")
    args = p.parse_args(argv)
    if args.batches < 1:
        p.error("--batches must be >= 1")
    if (args.transport == "pluto") != args.emulate:
        p.error("--emulate goes with --transport pluto (on one machine the Plutos are emulated)")

    from common.ml.pretrain import ensure_bundle  # torch: after the arguments, so --help is instant

    bundle_dir = args.bundle or default_bundle_dir(args.dataset)
    print(f"bundle: {bundle_dir} (built on first use)", flush=True)
    # Minutes on MNIST the first time: a bar on a TTY, a line every 10 s off one.
    epochs = Progress("pre-training epochs (first use)", get_spec(args.dataset).pretrain.epochs)
    bundle = ensure_bundle(args.dataset, out=bundle_dir, data_dir=args.data_dir,
                           on_epoch=lambda epoch, loss: epochs.update(epoch + 1, f"loss {loss:.4f}"))
    epochs.close()
    print(f"bundle ready: dims={bundle.dims} held-out accuracy={bundle.meta.heldout_accuracy:.4f} "
          f"hash={bundle.hash[:12]}", flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="semalign-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data_ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    ctl_ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    tx_metrics = args.metrics_out or workdir / "tx-metrics.jsonl"
    monitors = {role: f"tcp://127.0.0.1:{free_tcp_port()}" for role in ("tx", "rx")}
    rx_mon, tx_mon = (["--monitor", monitors[r]] if args.watch else [] for r in ("rx", "tx"))
    for path in (tx_metrics, workdir / "rx-metrics.jsonl"):
        Path(path).unlink(missing_ok=True)
    common = ["--dataset", args.dataset, "--bundle", str(bundle_dir)]
    if args.data_dir:
        common += ["--data-dir", str(args.data_dir)]
    sim = args.transport in ("sim", "pluto")
    procs: list[Any] = []
    rx_extra: list[str] = []
    tx_ep, tx_extra = data_ep, []
    if args.emulate:
        ports = [free_tcp_port(), free_tcp_port()]
        procs.append(spawn_cli(["pluto-emu", "--port", str(ports[0]), "--port", str(ports[1]),
                                "--snr-profile", args.snr_profile, "--fading", args.fading,
                                *(["--doppler", "1e-6"] if args.fading != "none" else [])],
                               workdir / "pluto-emu.log"))
        _wait_for_ports(ports, procs[-1])
        tx_extra = ["--transport", "pluto", "--pluto-uri", f"ip:127.0.0.1:{ports[0]}", "--link-policy", "amc"]
        rx_extra = ["--pluto-uri", f"ip:127.0.0.1:{ports[1]}"]
        print(f"emulated Plutos on ports {ports[0]} (TX) and {ports[1]} (RX): {args.snr_profile!r} per burst, "
              f"fading {args.fading}; TX picks the modulation by AMC", flush=True)
    rx = spawn_cli(["rx", *common, *rx_extra, *rx_mon, "--bind", data_ep, "--adapt", args.adapt,
                 "--metrics-out", str(workdir / "rx-metrics.jsonl")], workdir / "rx.log")
    procs.insert(0, rx)
    if args.transport == "sim":
        tx_ep = f"tcp://127.0.0.1:{free_tcp_port()}"
        procs.append(spawn_cli(["channel", "--listen", tx_ep, "--forward", data_ep, "--snr-profile", args.snr_profile,
                             "--fading", args.fading], workdir / "channel.log"))
        tx_extra = ["--transport", "sim", "--link-policy", "amc"]
        print(f"channel: {args.snr_profile!r}, fading {args.fading}; TX picks the modulation by AMC", flush=True)
    logs = {id(proc): workdir / f"{name}.log" for proc, name in zip(procs, ("rx", *(
        ["pluto-emu"] if args.emulate else []), *(["channel"] if args.transport == "sim" else [])), strict=True)}
    tx = spawn_cli(["tx", *common, *tx_extra, *tx_mon, "--endpoint", tx_ep, "--control", ctl_ep, "--modulation", "256qam",
                 "--batches", str(args.batches), "--max-inflight", "1", "--hello-timeout", "120",
                 # A short gap between batches leaves room for the live modulation switch.
                 "--interval", str(args.interval),
                 "--metrics-out", str(tx_metrics)], workdir / "tx.log")
    logs[id(tx)] = workdir / "tx.log"
    print(f"RX pid {rx.pid} on {data_ep}; TX pid {tx.pid}, control {ctl_ep}; logs in {workdir}\n", flush=True)
    print(format_header(sim), flush=True)

    from tx.control import ControlRequest
    from tx.ctl import request

    if args.watch:
        from common.tools.watch.demo import DemoWatch

        watch = DemoWatch(monitors["tx"], monitors["rx"], ctl_ep, workdir)

    switched = False
    shifted = args.shift == "none"
    shown = 0
    deadline = time.monotonic() + args.timeout
    records: list[dict[str, Any]] = []
    try:
        while True:
            if Path(tx_metrics).exists():
                records = read_metrics(tx_metrics)
            for record in records[shown:]:
                print(format_row(record, sim), flush=True)
            shown = len(records)
            if not sim and not switched and shown >= args.batches // 2:
                switched = True
                try:
                    reply = request(ctl_ep, ControlRequest("set-modulation", args.switch_to))
                except TransportError:
                    if tx.poll() is None:
                        raise  # TX is running and does not answer: that is an error
                    reply = {"ok": False, "error": "TX finished its batches first"}
                plan = reply.get("plan", {})
                print(f"-- ctl set-modulation {args.switch_to}: from batch {reply.get('effective_from_batch')}, "
                      f"B_max={plan.get('b_max')} alpha={plan.get('alpha')} N_max={plan.get('n_max')}"
                      if reply.get("ok") else f"-- ctl set-modulation refused: {reply.get('error')}", flush=True)
            elif not sim and switched and not shifted and shown >= args.batches // 2 + 1:
                # The story's second half: a sensor shift the receiver has to align to.
                shifted = True
                if tx.poll() is None:  # the stream may have ended meanwhile
                    try:
                        reply = request(ctl_ep, ControlRequest("set-shift", args.shift), tries=1)
                    except TransportError:
                        reply = {"ok": False, "error": "TX did not answer"}
                    print(f"-- ctl set-shift {args.shift}: from batch {reply.get('effective_from_batch')} "
                          f"(RX's gate and continual adapter take over)" if reply.get("ok")
                          else f"-- ctl set-shift refused: {reply.get('error')}", flush=True)
            if tx.poll() is not None or (args.watch and watch.poll() is not None):
                break
            if any(proc.poll() is not None for proc in procs):
                for proc in procs:
                    if proc.poll() is not None:
                        print(exit_note(logs[id(proc)], proc.returncode), file=sys.stderr)
                break
            if time.monotonic() > deadline:
                print(f"demo timed out after {args.timeout:g} s", file=sys.stderr)
                break
            time.sleep(0.1)
    finally:
        if args.watch:
            watch.finish()
        tx_code = stop_process(tx)
        for proc in procs:
            stop_process(proc)
    records = read_metrics(tx_metrics) if Path(tx_metrics).exists() else []  # none if a daemon failed at start
    for record in records[shown:]:
        print(format_row(record, sim), flush=True)
    ok = [r for r in records if r.get("status") == "ok"]
    if ok:
        scored = [r for r in ok if r["accuracy"] is not None]
        delivered = sum(r.get("n_test_delivered", r["n_test"]) for r in scored)
        correct = sum(r["accuracy"] * r.get("n_test_delivered", r["n_test"]) for r in scored)
        acc = f"{correct / delivered:.4f}" if delivered else "-"
        print(f"\n{len(ok)}/{args.batches} batches acknowledged; accuracy {acc} over "
              f"{delivered} delivered test images; TX exit code {tx_code}")
    if tx_code:
        print(exit_note(workdir / "tx.log", tx_code), file=sys.stderr)
    if tx_code != 0 or len(ok) != args.batches:
        print(f"demo incomplete: see {workdir / 'tx.log'} and {workdir / 'rx.log'}", file=sys.stderr)
        return 1
    return 0


def exit_note(log_path: Path, code: int | None) -> str:
    """One line for a daemon that exited: its name, code and the last line of its log (the error).

    The daemons log to files in the work directory; without this their real error (a missing
    extra, a port in use) would stay there and the user would see only "exited early".
    """
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = lines[-1] if lines else "(its log is empty)"
    return f"{log_path.stem} exited with code {code}: {last}\n  (full log: {log_path})"


def _wait_for_ports(ports: list[int], proc: Any, timeout_s: float = 20.0) -> None:
    """Until every emulated Pluto accepts connections (or its process died)."""
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    stop_process(proc)
                    raise SystemExit(f"semalign pluto-emu did not come up on port {port}") from None
                time.sleep(0.05)
