"""``semalign bench paper|system``: the paper's experiment and the system benchmarks.

The suites live in ``common.bench_paper`` and ``common.bench_system``; they import torch and
zmq, so they are loaded only when their command runs.
"""

from __future__ import annotations


def paper_main(argv: list[str]) -> int:
    from common.bench_paper import paper_main as main

    return main(argv)


def system_main(argv: list[str]) -> int:
    from common.bench_system import system_main as main

    return main(argv)
