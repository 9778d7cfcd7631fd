"""``semalign rx``: load the RX config (YAML file, then flags) and run the daemon.

Every key of :class:`rx.config.RxConfig` is a flag; the heavy modules load after parsing.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.config import config_parser, parse_config
from rx.config import RxConfig

#: Flag spellings kept from before every key had its own flag.
ALIASES = {"adapt.mode": ("--adapt",)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = config_parser(RxConfig, "semalign rx", "Run the RX daemon.", aliases=ALIASES)
    config = parse_config(RxConfig, parser, argv)
    from common import log as logmod
    from common.ml.bundle import resolve_bundle
    from common.runtime import StopFlag
    from rx.daemon import RxDaemon

    logmod.configure(config.log_level)
    stop = StopFlag().install()
    bundle = resolve_bundle(config.bundle, config.dataset)
    daemon = RxDaemon(config, bundle)
    try:
        daemon.run(stop)
    finally:
        daemon.close()
    return 0
