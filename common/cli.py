"""The ``semalign`` command line: a table of subcommands, each resolved from a string on use.

``semalign --help`` imports nothing but this module; a command imports its own modules only
when it runs, so ``semalign ctl`` starts in a blink and no command's help costs torch.
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable
from typing import NamedTuple, cast

from common.errors import SemalignError


class Command(NamedTuple):
    #: ``module:function``; the function takes the arguments after the command, returns the exit code.
    target: str
    help: str


#: Bench suites, each ``semalign bench SUITE [ARGS]``.
BENCH_SUITES: dict[str, str] = {
    "paper": "common.bench.flags:paper_main",
    "system": "common.bench.system:system_main",
    "many": "common.bench.many:many_main",
    "modem": "common.bench.modem:bench_modem_main",
    "soak": "common.bench.soak:soak_main",
    "monitor": "common.bench.monitor:monitor_main",
    "align": "common.bench.flags:align_main",
    "air": "common.radio.emu.bench:bench_air_main",
}

COMMANDS: dict[str, Command] = {
    "pretrain": Command("common.ml.pretrain_cli:main", "fit PCA and pre-train the MLP into a bundle"),
    "tx": Command("tx.cli:main", "run the TX daemon"),
    "rx": Command("rx.cli:main", "run the RX daemon"),
    "ctl": Command("tx.ctl:main", "control a running TX daemon"),
    "demo": Command("common.tools.demo:main", "run RX and TX on this machine and stream batches"),
    "channel": Command("common.tools.channel:main", "run the simulated radio channel between TX and RX"),
    "pluto-emu": Command("common.radio.emu.cli:pluto_emu_main", "emulated ADALM-Plutos (iiod protocol) on one real-time air"),
    "clock": Command("common.timesync.cli:clock_main", "print this host's clock sync state"),
    "watch": Command("common.tools.watch.cli:watch_main", "live dashboard of the daemons' monitor streams; steers TX"),
    "keygen": Command("common.transport.security:keygen_main", "write a CURVE key pair (docs/security.md)"),
    "bench": Command("common.cli:bench_main", "benchmarks: " + ", ".join(BENCH_SUITES)),
}

Main = Callable[[list[str]], int]


def resolve(target: str) -> Main:
    """Import ``module:function`` and return the function."""
    module, _, name = target.partition(":")
    return cast(Main, getattr(importlib.import_module(module), name))


def bench_main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCH_SUITES:
        print(f"usage: semalign bench {{{','.join(BENCH_SUITES)}}} [--help] [ARGS]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return resolve(BENCH_SUITES[argv[0]])(argv[1:])


def version() -> str:
    """The installed distribution's version (pyproject.toml's), or "unknown" from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("semalign")
    except PackageNotFoundError:
        return "unknown"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    return ("usage: semalign [--version] COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines)
            + "\n\n`semalign COMMAND --help` describes one command.")


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv=None`` means this process is the command (the console script)."""
    if argv is None:
        try:
            return run(sys.argv[1:])
        finally:
            # The interpreter's last garbage collections walk every object torch, numpy and
            # scikit-learn made: 2-18 s after RX logged rx_stopped (the unit allows 20 s).
            # Nothing left needs collecting; frozen objects are skipped, files still close.
            gc.freeze()
    return run(argv)


def run(argv: list[str]) -> int:
    if argv and argv[0] in ("-V", "--version"):
        print(f"semalign {version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stderr)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        # One line, not the whole usage: the typo is the news.
        print(f"semalign: unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)}; "
              "semalign --help describes them)", file=sys.stderr)
        return 2
    try:
        return resolve(COMMANDS[argv[0]].target)(argv[1:])
    except SemalignError as exc:
        print(f"semalign {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
