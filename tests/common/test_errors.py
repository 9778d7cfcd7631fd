"""The one exception tree: the drawing in ``common.errors``'s docstring is the class hierarchy."""

from __future__ import annotations

import inspect
import re

import pytest

from common import errors


def _drawn_tree() -> dict[str, str]:
    """``{class name: parent name}`` as the docstring draws it (indent = depth)."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^(?P<lead>[\s│├└─]*)(?P<name>[A-Z]\w+)\b", line)
        if not match or not (match["lead"].strip() or match["name"] == "SemalignError"):
            continue
        depth = len(match["lead"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[match["name"]] = stack[-1][1]
        stack.append((depth, match["name"]))
    return parents


def _classes() -> dict[str, type[errors.SemalignError]]:
    return {
        name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.SemalignError) and cls.__module__ == errors.__name__
    }


def test_docstring_tree_matches_the_classes() -> None:
    drawn = _drawn_tree()
    classes = _classes()
    assert set(drawn) == set(classes) - {"SemalignError"}
    for name, parent in drawn.items():
        assert classes[name].__bases__ == (classes[parent],), name


def test_codes_are_unique_and_stable() -> None:
    codes = [cls.code for cls in _classes().values()]
    assert len(codes) == len(set(codes))
    # These go on the wire and into counters; renaming one breaks peers and dashboards.
    assert errors.FrameError.code == "frame"
    assert errors.SampleOverflow.code == "sample_overflow"
    assert errors.BadSyncMessage.code == "bad_sync"
    assert errors.TimeSyncError.code == "timesync"
    assert errors.BenchError.code == "bench"
    assert errors.Unreachable.code == "unreachable"
    assert errors.HandshakeRefused.code == "handshake_refused"
    assert errors.SampleError.code == "samples"


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (errors.FrameError, errors.ProtocolError),
        (errors.SampleError, errors.ProtocolError),
        (errors.BadSyncMessage, errors.EnvelopeError),
        (errors.SampleOverflow, errors.RadioError),
        (errors.Unreachable, errors.TransportError),
        # TX treats a refusal as an unreachable peer (retries, rebuilds) and says why.
        (errors.HandshakeRefused, errors.Unreachable),
        (errors.TimeSyncError, errors.SemalignError),
        (errors.BenchError, errors.SemalignError),
    ],
)
def test_moved_classes_keep_their_parents(cls: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(cls, parent)
