"""atheris harness: ``python tests/fuzz/fuzz_messages.py [libFuzzer flags] WORKDIR tests/fuzz/corpus``.

``make fuzz`` runs it for ``FUZZ_SECONDS``; new inputs go to WORKDIR, crashes to its
``crash-*`` files. Copy a crasher into ``tests/fuzz/corpus`` once fixed: ``test_corpus.py``
replays every seed there on each test run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["common.wire", "rx.handler", "tx.control", "common.transport"]):
    from common.log import configure
    from common.ml.pretrain import ensure_bundle
    from tests.fuzz.harness import make_handler, one_input

HANDLER = make_handler(ensure_bundle("digits"))
# Rejecting garbage is the expected outcome and logs a line per input; the harness itself
# fails on what matters (an exception, an undecodable reply, an internal_error).
configure("error", stream=open(os.devnull, "w"))  # noqa: SIM115 (open for the process's life)


def test_one_input(data: bytes) -> None:
    one_input(data, HANDLER)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
