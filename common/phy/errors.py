"""Errors specific to the physical layer, all subclasses of the one semalign tree.

They refine ``RadioError`` and ``ProtocolError`` so callers may keep catching the parents.
"""

from __future__ import annotations

from common.errors import ProtocolError, RadioError


class SampleOverflow(RadioError):
    """TX samples exceed the DAC full scale; they are rejected instead of wrapping in int16."""

    code = "sample_overflow"


class FrameError(ProtocolError):
    """A received frame header or body is malformed (bad magic, CRC or inconsistent fields)."""

    code = "frame"
