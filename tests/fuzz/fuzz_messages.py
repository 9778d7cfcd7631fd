"""atheris harness: ``python tests/fuzz/fuzz_messages.py [libFuzzer flags] WORKDIR tests/fuzz/corpus``.

``make fuzz`` runs it for ``FUZZ_SECONDS``; new inputs go to WORKDIR, crashes to its
``crash-*`` files. Copy a crasher into ``tests/fuzz/corpus`` once fixed: ``test_corpus.py``
replays every seed there on each test run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["common.wire", "rx.handler", "tx.control", "common.transport"]):
    from common.ml.pretrain import ensure_bundle
    from tests.fuzz.harness import make_handler, one_input

HANDLER = make_handler(ensure_bundle("digits"))


def test_one_input(data: bytes) -> None:
    one_input(data, HANDLER)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
