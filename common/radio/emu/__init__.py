"""An ADALM-Pluto emulator speaking libiio's iiod network protocol, and the real-time air between Plutos.

``semalign pluto-emu`` serves it; real libiio / pylibiio / pyadi-iio clients drive it as a Pluto.
"""

from __future__ import annotations

from common.radio.emu.air import Air, AirConfig
from common.radio.emu.server import IIOD_PORT, PlutoEmulator

__all__ = ["IIOD_PORT", "Air", "AirConfig", "PlutoEmulator"]
