"""``semalign tx``: load the TX config (YAML file, then flags) and run the daemon.

Every key of :class:`tx.config.TxConfig` is a flag; the heavy modules load after parsing.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.config import config_parser, parse_config
from tx.config import TxConfig

#: Flag spellings kept from before every key had its own flag.
ALIASES = {
    "interval_s": ("--interval",),
    "ack_timeout_s": ("--ack-timeout",),
    "hello_timeout_s": ("--hello-timeout",),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = config_parser(TxConfig, "semalign tx", "Run the TX daemon.", aliases=ALIASES)
    config = parse_config(TxConfig, parser, argv)
    from common import log as logmod
    from common.data.spec import load_dataset
    from common.ml.bundle import resolve_bundle
    from common.runtime import StopFlag
    from tx.daemon import TxDaemon

    logmod.configure(config.log_level)
    stop = StopFlag().install()
    bundle = resolve_bundle(config.bundle, config.dataset)
    dataset = load_dataset(config.dataset, config.data_dir)
    daemon = TxDaemon(config, bundle, dataset)
    try:
        return daemon.run(stop)
    finally:
        daemon.close()
