"""Every seed of the fuzz corpus (the crashers found so far among them) replays without a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.ml.bundle import Bundle
from tests.fuzz.harness import make_handler, one_input, regression_seeds

CORPUS = Path(__file__).parent / "corpus"


@pytest.fixture(scope="module")
def handler(digits_bundle: Bundle) -> Any:
    return make_handler(digits_bundle)


def test_the_regression_seeds_are_in_the_corpus() -> None:
    for name, data in regression_seeds().items():
        assert (CORPUS / name).read_bytes() == data, f"{name}: regenerate with tests/fuzz/harness.py"


@pytest.mark.parametrize("seed", sorted(p.name for p in CORPUS.iterdir()))
def test_seed_replays(handler: Any, seed: str) -> None:
    one_input((CORPUS / seed).read_bytes(), handler)
    assert handler.counters["internal_error"] == 0


def test_the_crashers_get_their_typed_replies(handler: Any) -> None:
    from common.wire import messages
    from tests.fuzz.harness import BUNDLE_PLACEHOLDER

    seeds = regression_seeds()
    expected = {"crash-rx-header-only": "empty_payload", "crash-rx-sim-65535": "oversize",
                "valid-recall": messages.RECALL_UNKNOWN, "recall-long-run": "envelope"}
    for name, code in expected.items():
        rest = seeds[name][1:].replace(BUNDLE_PLACEHOLDER, handler.bundle.hash.encode())
        cut = int.from_bytes(rest[:2], "little")
        frames = [memoryview(rest[2:2 + cut])] + ([memoryview(rest[2 + cut:])] if rest[2 + cut:] else [])
        reply = messages.decode_reply(handler.handle(frames).reply)
        assert isinstance(reply, messages.ErrorReply) and reply.code == code, (name, reply)
