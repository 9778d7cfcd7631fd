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
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from common.data.spec import DATASET_NAMES, get_spec
from common.errors import TransportError
from common.log import Progress
from common.metrics import format_header, format_row, read_metrics
from common.ml.bundle import default_bundle_dir
from common.tools.demo_stack import Layout, Stack, exit_note, start_stack

if TYPE_CHECKING:
    from common.tools.watch.demo import DemoWatch

#: Seconds between two looks at TX's metrics file and the processes.
POLL_S = 0.1


class Ask(Protocol):
    """One request to TX's control socket and its reply; ``tries=None``: the control client's default."""

    def __call__(self, cmd: str, arg: str, *, tries: int | None = None) -> dict[str, Any]: ...


class Running(Protocol):
    """A process as ``subprocess.Popen`` polls it: its exit code, or None while it runs."""

    def poll(self) -> int | None: ...


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bundle_dir = prepare_bundle(args.dataset, args.bundle, args.data_dir)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="semalign-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = start_stack(args, bundle_dir, workdir)
    sim = args.transport in ("sim", "pluto")
    print(format_header(sim), flush=True)
    table = Table(stack.layout.tx_metrics, sim=sim)
    # Over a radio AMC picks the modulation and the shift stays out of the story.
    steering = None if sim else Steering(args.batches, args.switch_to, args.shift,
                                         ask_tx(stack.layout.control), stack.tx.proc)
    watch = start_watch(stack.layout) if args.watch else None
    try:
        follow(stack, table, steering, watch, args.timeout)
    finally:
        if watch is not None:
            watch.finish()
        tx_code = stack.stop()
    return summarise(table.close(), args.batches, tx_code, workdir)


# --- arguments and bundle ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
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
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The flags, with the combinations argparse cannot check alone refused (exit 2)."""
    p = parser()
    args = p.parse_args(argv)
    if args.batches < 1:
        p.error("--batches must be >= 1")
    if (args.transport == "pluto") != args.emulate:
        p.error("--emulate goes with --transport pluto (on one machine the Plutos are emulated)")
    return args


def prepare_bundle(dataset: str, bundle: Path | None, data_dir: Path | None) -> Path:
    """The bundle's directory, pre-trained there first if it holds none yet."""
    from common.ml.pretrain import ensure_bundle  # torch: after the arguments, so --help is instant

    bundle_dir = bundle or default_bundle_dir(dataset)
    print(f"bundle: {bundle_dir} (built on first use)", flush=True)
    # Minutes on MNIST the first time: a bar on a TTY, a line every 10 s off one.
    epochs = Progress("pre-training epochs (first use)", get_spec(dataset).pretrain.epochs)
    built = ensure_bundle(dataset, out=bundle_dir, data_dir=data_dir,
                          on_epoch=lambda epoch, loss: epochs.update(epoch + 1, f"loss {loss:.4f}"))
    epochs.close()
    print(f"bundle ready: dims={built.dims} held-out accuracy={built.meta.heldout_accuracy:.4f} "
          f"hash={built.hash[:12]}", flush=True)
    return bundle_dir


# --- the run ----------------------------------------------------------------------------------------


class Table:
    """TX's per-batch metrics as the demo's table: each row printed once, as TX writes it."""

    def __init__(self, metrics: Path, *, sim: bool) -> None:
        self.metrics = metrics
        self.sim = sim
        self.records: list[dict[str, Any]] = []
        self.shown = 0

    def refresh(self) -> int:
        """Rows TX wrote since the last look printed; how many rows are shown."""
        if self.metrics.exists():
            self.records = read_metrics(self.metrics)
        self._print_new()
        return self.shown

    def close(self) -> list[dict[str, Any]]:
        """The last rows printed; every record (none if a daemon failed at start)."""
        self.records = read_metrics(self.metrics) if self.metrics.exists() else []
        self._print_new()
        return self.records

    def _print_new(self) -> None:
        for record in self.records[self.shown:]:
            print(format_row(record, self.sim), flush=True)
        self.shown = len(self.records)


class Steering:
    """The story told through TX's control socket: set-modulation halfway, set-shift from the next row on.

    At most one request per look at the table, so the shift is asked for after the switch's reply.
    """

    def __init__(self, batches: int, switch_to: str, shift: str, ask: Ask, tx: Running) -> None:
        self.half = batches // 2
        self.switch_to = switch_to
        self.shift = shift
        self.ask = ask
        self.tx = tx
        self.switched = False
        self.shifted = shift == "none"

    def step(self, shown: int) -> None:
        if not self.switched and shown >= self.half:
            self.switched = True
            print(self._switch(), flush=True)
        elif self.switched and not self.shifted and shown >= self.half + 1:
            self.shifted = True
            if self.tx.poll() is None:  # the stream may have ended meanwhile
                print(self._shift(), flush=True)

    def _switch(self) -> str:
        try:
            reply = self.ask("set-modulation", self.switch_to)
        except TransportError:
            if self.tx.poll() is None:
                raise  # TX is running and does not answer: that is an error
            reply = {"ok": False, "error": "TX finished its batches first"}
        if not reply.get("ok"):
            return f"-- ctl set-modulation refused: {reply.get('error')}"
        plan = reply.get("plan", {})
        return (f"-- ctl set-modulation {self.switch_to}: from batch {reply.get('effective_from_batch')}, "
                f"B_max={plan.get('b_max')} alpha={plan.get('alpha')} N_max={plan.get('n_max')}")

    def _shift(self) -> str:
        # The story's second half: a sensor shift the receiver has to align to.
        try:
            reply = self.ask("set-shift", self.shift, tries=1)
        except TransportError:
            reply = {"ok": False, "error": "TX did not answer"}
        if not reply.get("ok"):
            return f"-- ctl set-shift refused: {reply.get('error')}"
        return (f"-- ctl set-shift {self.shift}: from batch {reply.get('effective_from_batch')} "
                f"(RX's gate and continual adapter take over)")


def ask_tx(control: str) -> Ask:
    from tx.control import ControlRequest
    from tx.ctl import REQUEST_TRIES, request

    def ask(cmd: str, arg: str, *, tries: int | None = None) -> dict[str, Any]:
        return request(control, ControlRequest(cmd, arg), tries=REQUEST_TRIES if tries is None else tries)

    return ask


def start_watch(layout: Layout) -> DemoWatch:
    from common.tools.watch.demo import DemoWatch

    return DemoWatch(layout.monitors["tx"], layout.monitors["rx"], layout.control, layout.workdir)


def follow(stack: Stack, table: Table, steering: Steering | None, watch: DemoWatch | None, timeout_s: float) -> None:
    """The table printed and TX steered until TX is done, the watcher quits, a process dies or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = table.refresh()
        if steering is not None:
            steering.step(shown)
        if stack.tx.proc.poll() is not None or (watch is not None and watch.poll() is not None):
            return
        if stack.exited():
            for child in stack.exited():
                print(exit_note(child.log, child.proc.returncode), file=sys.stderr)
            return
        if time.monotonic() > deadline:
            print(f"demo timed out after {timeout_s:g} s", file=sys.stderr)
            return
        time.sleep(POLL_S)


def summarise(records: list[dict[str, Any]], batches: int, tx_code: int, workdir: Path) -> int:
    """The closing line and why the demo failed, if it did; the exit code (1 unless every batch was acknowledged)."""
    ok = [r for r in records if r.get("status") == "ok"]
    if ok:
        acc, delivered = accuracy_over_delivered(ok)
        print(f"\n{len(ok)}/{batches} batches acknowledged; accuracy {acc} over "
              f"{delivered} delivered test images; TX exit code {tx_code}")
    if tx_code:
        print(exit_note(workdir / "tx.log", tx_code), file=sys.stderr)
    if tx_code != 0 or len(ok) != batches:
        print(f"demo incomplete: see {workdir / 'tx.log'} and {workdir / 'rx.log'}", file=sys.stderr)
        return 1
    return 0


def accuracy_over_delivered(ok: list[dict[str, Any]]) -> tuple[str, int]:
    """Accuracy over every test image that arrived (``-`` if none did) and their number."""
    scored = [r for r in ok if r["accuracy"] is not None]
    delivered = sum(r.get("n_test_delivered", r["n_test"]) for r in scored)
    correct = sum(r["accuracy"] * r.get("n_test_delivered", r["n_test"]) for r in scored)
    return (f"{correct / delivered:.4f}" if delivered else "-"), delivered
