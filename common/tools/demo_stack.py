"""The processes of ``semalign demo``: RX, TX and what carries the samples between them, on loopback.

Each process is started once what it connects to is up, logs to ``NAME.log`` in the work
directory, and is stopped TX first so its exit code is the run's.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from common.runtime import free_tcp_port, spawn_cli, stop_process


def loopback() -> str:
    return f"tcp://127.0.0.1:{free_tcp_port()}"


@dataclass(frozen=True)
class Child:
    """One process of the demo and the log file it writes (named after it in the work directory)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def spawn(cls, name: str, args: list[str], workdir: Path) -> Child:
        log = workdir / f"{name}.log"
        return cls(name, spawn_cli(args, log), log)


@dataclass(frozen=True)
class Medium:
    """What carries the samples between TX and RX (a channel or two emulated Plutos) and how the daemons reach it."""

    child: Child
    tx_flags: tuple[str, ...]
    rx_flags: tuple[str, ...] = ()
    tx_endpoint: str | None = None  # where TX sends when not straight to RX's data socket


def start_emulated_plutos(snr_profile: str, fading: str, workdir: Path) -> Medium:
    """``semalign pluto-emu`` with one Pluto for each daemon; started before RX, which opens its Pluto at start."""
    ports = [free_tcp_port(), free_tcp_port()]
    child = Child.spawn("pluto-emu", ["pluto-emu", "--port", str(ports[0]), "--port", str(ports[1]),
                                      "--snr-profile", snr_profile, "--fading", fading,
                                      *(["--doppler", "1e-6"] if fading != "none" else [])], workdir)
    _wait_for_ports(ports, child.proc)
    print(f"emulated Plutos on ports {ports[0]} (TX) and {ports[1]} (RX): {snr_profile!r} per burst, "
          f"fading {fading}; TX picks the modulation by AMC", flush=True)
    return Medium(child, tx_flags=("--transport", "pluto", "--pluto-uri", f"ip:127.0.0.1:{ports[0]}",
                                   "--link-policy", "amc"),
                  rx_flags=("--pluto-uri", f"ip:127.0.0.1:{ports[1]}"))


def start_channel(rx_endpoint: str, snr_profile: str, fading: str, workdir: Path) -> Medium:
    """``semalign channel`` listening for TX and forwarding the impaired samples to RX."""
    listen = loopback()
    child = Child.spawn("channel", ["channel", "--listen", listen, "--forward", rx_endpoint,
                                    "--snr-profile", snr_profile, "--fading", fading], workdir)
    print(f"channel: {snr_profile!r}, fading {fading}; TX picks the modulation by AMC", flush=True)
    return Medium(child, tx_flags=("--transport", "sim", "--link-policy", "amc"), tx_endpoint=listen)


@dataclass(frozen=True)
class Layout:
    """Where one run's pieces meet: the endpoints, the metrics files and the flags both daemons share."""

    args: argparse.Namespace
    workdir: Path
    common: list[str]  # dataset and bundle, the same for RX and TX
    data: str  # RX's data socket
    control: str  # TX's control socket
    monitors: dict[str, str]  # role -> monitor endpoint (bound only with --watch)
    tx_metrics: Path

    @classmethod
    def make(cls, args: argparse.Namespace, bundle_dir: Path, workdir: Path) -> Layout:
        common = ["--dataset", args.dataset, "--bundle", str(bundle_dir)]
        if args.data_dir:
            common += ["--data-dir", str(args.data_dir)]
        return cls(args, workdir, common, data=loopback(), control=loopback(),
                   monitors={role: loopback() for role in ("tx", "rx")},
                   tx_metrics=args.metrics_out or workdir / "tx-metrics.jsonl")

    @property
    def rx_metrics(self) -> Path:
        return self.workdir / "rx-metrics.jsonl"

    def monitor_flags(self, role: str) -> list[str]:
        return ["--monitor", self.monitors[role]] if self.args.watch else []

    def start_rx(self, medium: Medium | None) -> Child:
        return Child.spawn("rx", ["rx", *self.common, *(medium.rx_flags if medium else ()), *self.monitor_flags("rx"),
                                  "--bind", self.data, "--adapt", self.args.adapt,
                                  "--metrics-out", str(self.rx_metrics)], self.workdir)

    def start_tx(self, medium: Medium | None) -> Child:
        endpoint = medium.tx_endpoint if medium and medium.tx_endpoint else self.data
        return Child.spawn("tx", ["tx", *self.common, *(medium.tx_flags if medium else ()), *self.monitor_flags("tx"),
                                  "--endpoint", endpoint, "--control", self.control, "--modulation", "256qam",
                                  "--batches", str(self.args.batches), "--max-inflight", "1", "--hello-timeout", "120",
                                  # A short gap between batches leaves room for the live modulation switch.
                                  "--interval", str(self.args.interval),
                                  "--metrics-out", str(self.tx_metrics)], self.workdir)


@dataclass(frozen=True)
class Stack:
    """The demo's running processes: RX, what sits between (if anything) and TX."""

    layout: Layout
    rx: Child
    tx: Child
    medium: Medium | None

    @property
    def others(self) -> list[Child]:
        """Every process but TX, RX first."""
        return [self.rx, *([self.medium.child] if self.medium else [])]

    def exited(self) -> list[Child]:
        return [child for child in self.others if child.proc.poll() is not None]

    def stop(self) -> int:
        """Every process stopped, TX first; TX's exit code."""
        tx_code = stop_process(self.tx.proc)
        for child in self.others:
            stop_process(child.proc)
        return tx_code


def start_stack(args: argparse.Namespace, bundle_dir: Path, workdir: Path) -> Stack:
    """RX, the medium of ``args.transport`` and TX, each started once what it connects to is up."""
    layout = Layout.make(args, bundle_dir, workdir)
    for path in (layout.tx_metrics, layout.rx_metrics):
        path.unlink(missing_ok=True)  # the table shows this run's batches only
    # RX opens its emulated Pluto at start; the channel connects to RX's data socket.
    emulator = start_emulated_plutos(args.snr_profile, args.fading, workdir) if args.emulate else None
    rx = layout.start_rx(emulator)
    channel = start_channel(layout.data, args.snr_profile, args.fading, workdir) if args.transport == "sim" else None
    medium = emulator or channel
    tx = layout.start_tx(medium)
    print(f"RX pid {rx.proc.pid} on {layout.data}; TX pid {tx.proc.pid}, control {layout.control}; "
          f"logs in {workdir}\n", flush=True)
    return Stack(layout, rx, tx, medium)


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


def _wait_for_ports(ports: list[int], proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
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
