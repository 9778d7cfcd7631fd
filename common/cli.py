"""The ``semalign`` command line: pretrain, tx, rx, ctl, demo, clock and bench.

Subcommands import their heavy modules lazily so ``semalign ctl`` starts in a blink.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import SemalignError


def _pretrain(argv: list[str]) -> int:
    from common.data.datasets import DATASET_NAMES, load_dataset
    from common.ml.bundle import PRETRAIN_DEFAULTS, PretrainConfig, pretrain, save_bundle

    p = argparse.ArgumentParser(prog="semalign pretrain", description="Fit PCA and pre-train the MLP; write a bundle.")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path, help="directory with the IDX files (mnist, fashion-mnist)")
    p.add_argument("--download", action="store_true", help="fetch missing dataset files from public mirrors")
    p.add_argument("--dims", type=int, help="PCA components kept (the largest alpha)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    args = p.parse_args(argv)
    base = PRETRAIN_DEFAULTS[args.dataset]
    config = PretrainConfig(
        dims=args.dims or base.dims, hidden=base.hidden, epochs=args.epochs or base.epochs,
        lr=base.lr, batch_size=base.batch_size, seed=args.seed,
    )
    ds = load_dataset(args.dataset, args.data_dir, download=args.download)
    tty = sys.stderr.isatty()

    def on_epoch(epoch: int, loss: float) -> None:
        if tty:
            print(f"\rpretrain epoch {epoch + 1}/{config.epochs} loss {loss:.4f}", end="", file=sys.stderr, flush=True)

    codec, model, acc = pretrain(ds, config, on_epoch=on_epoch)
    if tty:
        print(file=sys.stderr)
    bundle = save_bundle(args.out, ds, config, codec, model, acc)
    print(f"bundle {args.out}: dataset={ds.name} dims={config.dims} held-out accuracy={acc:.4f} hash={bundle.hash}")
    return 0


def _resolve_bundle(path: str | None, dataset: str) -> Any:
    from common.ml.bundle import default_bundle_dir, load_bundle

    return load_bundle(Path(path) if path else default_bundle_dir(dataset))


def _daemon_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", type=Path, help="YAML config file; flags override it")
    p.add_argument("--dataset")
    p.add_argument("--data-dir")
    p.add_argument("--bundle", help="bundle directory (default: the cache dir of --dataset)")
    p.add_argument("--metrics-out", help="append one JSON object per batch to this file")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--gpsd", help="gpsd HOST[:PORT] for clock sync state, or off")
    p.add_argument("--pluto-uri", help="libiio URI of the local Pluto (batches over the air)")
    return p


def _overrides(args: argparse.Namespace) -> tuple[Path | None, dict[str, Any]]:
    """The config file and the flags that override it, shaped like the YAML keys."""
    values = vars(args)
    path = values.pop("config")
    uri = values.pop("pluto_uri")
    if uri:
        values["pluto"] = {"uri": uri}
    return path, values


def _tx(argv: list[str]) -> int:
    p = _daemon_parser("semalign tx", "Run the TX daemon.")
    p.add_argument("--endpoint", help="RX data endpoint to connect to")
    p.add_argument("--control", help="control endpoint to bind")
    p.add_argument("--modulation")
    p.add_argument("--alpha-policy", choices=("proportional", "fixed"))
    p.add_argument("--alpha", type=int)
    p.add_argument("--t", type=int, help="test vectors per batch")
    p.add_argument("--batches", type=int, help="batches to send (0: until stopped)")
    p.add_argument("--interval", type=float, dest="interval_s", help="seconds between batches")
    p.add_argument("--max-inflight", type=int)
    p.add_argument("--ack-timeout", type=float, dest="ack_timeout_s")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--hello-timeout", type=float, dest="hello_timeout_s")
    p.add_argument("--value-type", choices=("float32", "float16"))
    p.add_argument("--transport", choices=("zmq", "sim", "pluto"))
    p.add_argument("--link-policy", choices=("manual", "amc"))
    p.add_argument("--seed", type=int)
    path, args = _overrides(p.parse_args(argv))
    from common import log as logmod
    from common.config import TxConfig, load_config
    from common.data.datasets import load_dataset
    from common.runtime import StopFlag
    from tx.daemon import TxDaemon

    config = load_config(TxConfig, path, args)
    logmod.configure(config.log_level)
    stop = StopFlag().install()
    bundle = _resolve_bundle(config.bundle, config.dataset)
    dataset = load_dataset(config.dataset, config.data_dir)
    daemon = TxDaemon(config, bundle, dataset)
    try:
        return daemon.run(stop)
    finally:
        daemon.close()


def _rx(argv: list[str]) -> int:
    p = _daemon_parser("semalign rx", "Run the RX daemon.")
    p.add_argument("--bind", help="data endpoint to bind")
    p.add_argument("--adapt", choices=("lora", "e2e", "none"), help="adaptation mode")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--max-message-bytes", type=int)
    path, args = _overrides(p.parse_args(argv))
    from common import log as logmod
    from common.config import RxConfig, load_config
    from common.runtime import StopFlag
    from rx.daemon import RxDaemon

    adapt = args.pop("adapt")
    if adapt:
        args["adapt"] = {"mode": adapt}
    config = load_config(RxConfig, path, args)
    logmod.configure(config.log_level)
    stop = StopFlag().install()
    bundle = _resolve_bundle(config.bundle, config.dataset)
    daemon = RxDaemon(config, bundle)
    try:
        daemon.run(stop)
    finally:
        daemon.close()
    return 0


def _ctl(argv: list[str]) -> int:
    from tx.ctl import main

    return main(argv)


def _demo(argv: list[str]) -> int:
    from common.tools.demo import main

    return main(argv)


def _channel(argv: list[str]) -> int:
    from common.tools.channel import main

    return main(argv)


def _clock(argv: list[str]) -> int:
    from common.timesync import clock_main

    return clock_main(argv)


BENCH_SUITES = ("paper", "system", "modem")


def _bench(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCH_SUITES:
        print(f"usage: semalign bench {{{','.join(BENCH_SUITES)}}} [--help] [ARGS]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    suite, rest = argv[0], argv[1:]
    if suite == "modem":
        from common.bench.modem import bench_modem_main

        return bench_modem_main(rest)
    if suite == "paper":
        from common.bench.paper import paper_main

        return paper_main(rest)
    from common.bench.system import system_main

    return system_main(rest)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "pretrain": (_pretrain, "fit PCA and pre-train the MLP into a bundle"),
    "tx": (_tx, "run the TX daemon"),
    "rx": (_rx, "run the RX daemon"),
    "ctl": (_ctl, "control a running TX daemon"),
    "demo": (_demo, "run RX and TX on this machine and stream batches"),
    "channel": (_channel, "run the simulated radio channel between TX and RX"),
    "clock": (_clock, "print this host's clock sync state"),
    "bench": (_bench, "benchmarks: paper, system, modem"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: semalign COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    handler, _ = COMMANDS[argv[0]]
    try:
        return handler(argv[1:])
    except SemalignError as exc:
        print(f"semalign {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
