"""Where the clock readers look and how long each may take; a plain frozen dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.timesync.readers.gpsd import GPSD_PORT


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Where the readers look and how long they may take (each bounded near one second)."""

    chronyc: str = "chronyc"
    #: ``chronyc -h`` target: a unix socket path or a host; None keeps chronyc's default.
    chrony_socket: str | None = None
    use_chrony: bool = True
    use_kernel: bool = True
    #: None disables the gpsd reader.
    gpsd_host: str | None = "127.0.0.1"
    gpsd_port: int = GPSD_PORT
    command_timeout_s: float = 1.0
    socket_timeout_s: float = 1.0
    #: How long to listen to gpsd for TPV, TOFF and PPS; PPS comes once a second.
    gpsd_wait_s: float = 1.2

    def __post_init__(self) -> None:
        for name in ("command_timeout_s", "socket_timeout_s", "gpsd_wait_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 30):
                raise ValueError(f"{name} must be in (0, 30] seconds, got {value}")
        if not 0 < self.gpsd_port < 65536:
            raise ValueError(f"gpsd_port must be 1..65535, got {self.gpsd_port}")
