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
    from threadpoolctl import threadpool_limits

    from common import log as logmod
    from common.data.spec import load_dataset
    from common.ml.bundle import resolve_bundle
    from common.runtime import StopFlag
    from tx.daemon import TxDaemon

    logmod.configure(config.log_level)
    # One BLAS thread, as RX runs: TX's per-batch PCA encode (a [t + n, D] x [D, alpha] matmul)
    # is too small to gain from a second thread, and on a host where RX computes at the same
    # time that thread waits for a core (7 ms instead of 2 ms a batch at MNIST alpha 150).
    threadpool_limits(1)
    stop = StopFlag().install()
    bundle = resolve_bundle(config.bundle, config.dataset)
    dataset = load_dataset(config.dataset, config.data_dir)
    daemon = TxDaemon(config, bundle, dataset)
    try:
        return daemon.run(stop)
    finally:
        daemon.close()
